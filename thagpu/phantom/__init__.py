"""Realistic hip CT phantoms with exact ground truth.

Labelled real hip CTs are not available to every user, so the phantom is what
the accuracy checks stand on. A phantom is drawn from a seed: anatomy
(:mod:`.anatomy`), pose, header orientation and acquisition, then rendered
(:mod:`.render`). Its truth follows label schema v1 exactly, from the true
centres and radii.

Examples
--------
>>> from thagpu import phantom
>>> case = phantom.make_phantom(seed=1, size="tiny", preset="easy")
>>> case.ct.dtype.name, sorted(case.truth["sides"])
('int16', ['left', 'right'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import labels as schema
from .._atomic import atomic_write_text
from .._version import __version__
from ..geometry import Geometry
from ..afs.angles import radiographic_angles
from ..afs.boundary import fibonacci_directions
from .anatomic import AnatomicOptions, sample_anatomic
from .anatomy import PARTS, Anatomy, cup_axis, sample_anatomy
from .render import MATERIALS, Acquisition, Grid, render

__all__ = ["PRESETS", "DEFAULT_PRESET", "SIZES", "HEADERS", "Preset", "PhantomCase", "make_phantom",
           "write_phantom", "write_phantoms", "labels_from_parts", "PARTS", "MATERIALS"]


@dataclass(frozen=True)
class Preset:
    """How hard a phantom is; see :data:`PRESETS`."""

    pose_deg: float = 0.0
    translation_mm: float = 0.0
    headers: tuple = ("LPS",)
    joint_space_mm: tuple = (3.0, 5.0)
    noise_hu: tuple = (10.0, 15.0)
    aspherical: bool = False
    osteoporotic: bool = False
    implant: bool = False
    truncate: bool = False
    calcifications: bool = False
    jitter_spacing: bool = False
    sharp_kernel: bool = False  # reconstructed with a sharp (bone) kernel: edge overshoot, fine noise
    anatomic: AnatomicOptions | None = None  # the anatomic model (thagpu.phantom.anatomic) with these options


_HARD = dict(pose_deg=15.0, translation_mm=15.0,
             headers=("LPS", "RAS", "LAS", "permuted", "permuted_flipped", "oblique"),
             joint_space_mm=(1.0, 4.0), noise_hu=(15.0, 40.0), aspherical=True,
             calcifications=True, jitter_spacing=True)

PRESETS = {
    "easy": Preset(),
    "hard": Preset(**_HARD),
    "implant": Preset(**_HARD, implant=True),
    "truncated": Preset(**_HARD, truncate=True),
    "osteoporotic": Preset(**_HARD, osteoporotic=True),
    # The anatomic model: hip bones with a solid acetabular mass, real femur, OA, bone quality, flexed hips.
    "anatomic": Preset(**_HARD, anatomic=AnatomicOptions()),
    "anatomic_oa": Preset(**_HARD, anatomic=AnatomicOptions(oa_weights=(0.0, 0.15, 0.4, 0.45))),
    "anatomic_osteoporotic": Preset(**_HARD, osteoporotic=True, anatomic=AnatomicOptions(osteoporotic_probability=1.0)),
    "anatomic_implant": Preset(**_HARD, implant=True, anatomic=AnatomicOptions(implant="some")),
    "anatomic_truncated": Preset(**_HARD, truncate=True, anatomic=AnatomicOptions()),
    # The same patients reconstructed with a sharp (bone) kernel, as orthopaedic series often are.
    "anatomic_sharp_kernel": Preset(**{**_HARD, "noise_hu": (50.0, 110.0)}, sharp_kernel=True,
                                    anatomic=AnatomicOptions()),
}

#: The preset used when none is named.
DEFAULT_PRESET = "anatomic"

#: size -> (field of view in mm along RAS x, y, z or None, base spacing, fixed shape or None).
SIZES = {
    "tiny": ((380.0, 320.0, 230.0), (4.5, 4.5, 4.5), None),
    "small": ((380.0, 320.0, 230.0), (2.0, 2.0, 2.0), None),
    "full": (None, (0.7, 0.7, 0.8), (512, 512, 300)),
}

#: Field of view (mm, RAS x, y, z) of the anatomic presets at tiny and small sizes: the pelvis from
#: L5 to below the lesser trochanters.
ANATOMIC_FOV = (380.0, 300.0, 270.0)


def _rotation(axis, degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    m = np.eye(3)
    a, b = [(1, 2), (0, 2), (0, 1)][axis]
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


#: Header orientations: columns are the stored index axes in RAS.
HEADERS = {
    "LPS": np.diag([-1.0, -1.0, 1.0]),  # DICOM axial
    "RAS": np.eye(3),  # NIfTI canonical
    "LAS": np.diag([-1.0, 1.0, 1.0]),  # one flipped axis
    "permuted": np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]),  # i = S, j = R, k = A
    "permuted_flipped": np.array([[0.0, 0, -1], [-1, 0, 0], [0, 1, 0]]),  # i = P, j = S, k = L
    "oblique": _rotation(0, 12.0) @ _rotation(1, -8.0) @ np.diag([-1.0, -1.0, 1.0]),
}


@dataclass
class PhantomCase:
    """One rendered phantom, arrays in stored (i, j, k) order.

    Attributes
    ----------
    case_id : str
    ct : (I, J, K) ndarray of int16
        HU as a scanner stores them.
    labels : (I, J, K) ndarray of uint8
        Truth by label schema v1.
    parts : (I, J, K) ndarray of uint8
        Which bone each voxel belongs to (:data:`PARTS`), before the schema.
    geometry : Geometry
        ITK header (LPS) of the image.
    truth : dict
        The content of ``gt.json``.
    materials : (I, J, K) ndarray of uint8
        Tissue at each voxel centre (:data:`MATERIALS`), e.g. to find the table.
    bone_fraction : (I, J, K) ndarray of float32 or None
        Share of each voxel's volume that is bone (``make_phantom(..., bone_fraction=True)``), from the
        samples the CT averages: what a perfect reader of partial volume could know, where the labels
        say only what lies at each voxel's centre.
    """

    case_id: str
    ct: np.ndarray
    labels: np.ndarray
    parts: np.ndarray
    geometry: Geometry
    truth: dict
    materials: np.ndarray | None = None
    bone_fraction: np.ndarray | None = None

    def to_volume(self):
        """The CT as a canonical :class:`~thagpu.volume.Volume`, as ``load_ct`` would return it."""
        from ..volume import Volume
        return Volume.from_stored(self.ct.astype(np.float32), self.geometry,
                                  source=f"phantom:{self.case_id}")

    def canonical(self, array):
        """A stored-order array of this case (labels, parts, materials) in canonical (R, A, S) order."""
        from ..geometry import Orientation
        return np.ascontiguousarray(Orientation.from_geometry(self.geometry).to_canonical(array))

    def canonical_labels(self):
        """The truth labels in the canonical (R, A, S) orientation of :meth:`to_volume`."""
        return self.canonical(self.labels)


def _draw_pose(rng, spec: Preset, header):
    """The patient's pose in the scanner and the header orientation (drawn unless ``header`` is given).

    Returns (angles in degrees about x, y, z; rotation; translation in mm; header name).
    """
    angles = rng.uniform(-spec.pose_deg, spec.pose_deg, size=3)
    rotation = _rotation(2, angles[2]) @ _rotation(1, angles[1]) @ _rotation(0, angles[0])
    translation = np.array([0.0, 15.0, 5.0]) + rng.uniform(-spec.translation_mm, spec.translation_mm, size=3)
    header = header or spec.headers[int(rng.integers(len(spec.headers)))]
    if header not in HEADERS:
        raise ValueError(f"unknown header orientation {header!r}; choose from {', '.join(HEADERS)}")
    return angles, rotation, translation, header


def _acquisition_spacing(rng, size, preset: Preset, spacing):
    fov, base, fixed = SIZES[size]
    if spacing is not None:
        phys = np.asarray(spacing, dtype=float)
    elif preset.jitter_spacing:
        in_plane = base[0] * rng.uniform(0.85, 1.15) if size != "full" else rng.uniform(0.6, 0.9)
        slices = base[2] * rng.uniform(1.0, 1.5) if size != "full" else rng.uniform(0.6, 1.0)
        phys = np.array([in_plane, in_plane, slices])
    else:
        phys = np.asarray(base, dtype=float)
    if fixed is not None:
        shape = np.asarray(fixed)
        fov = shape * phys
    else:
        fov = np.asarray(fov, dtype=float)
        shape = np.ceil(fov / phys).astype(int)
    return phys, shape, np.asarray(fov, dtype=float)


def _tissue_hu(rng, preset: Preset) -> dict:
    hu = {
        "air": -1000.0, "fat": rng.uniform(-110, -85), "muscle": rng.uniform(35, 55),
        "cartilage": rng.uniform(60, 95), "fluid": rng.uniform(0, 15), "gas": -1000.0,
        "table": rng.uniform(250, 500), "foam": -950.0, "cortical": rng.uniform(1000, 1600),
        "cancellous": rng.uniform(200, 400), "marrow": rng.uniform(-50, 20), "metal": 3071.0,
        "liner": -90.0, "calcification": rng.uniform(400, 900), "blood": rng.uniform(35, 50),
    }
    if preset.osteoporotic:
        hu["cortical"] = rng.uniform(650, 950)
        hu["cancellous"] = rng.uniform(50, 200)
    return hu


def _lowest_body_y(anatomy: Anatomy, rotation, translation) -> float:
    """World y of the patient's back (the table lies just below it)."""
    rx, ry = anatomy.body_radii
    t = np.linspace(0, 2 * np.pi, 180)
    pts = [np.stack([rx * np.cos(t), ry * np.sin(t) - 5.0, np.full_like(t, z)], axis=1)
           for z in np.linspace(-70, 140, 8)]
    for side in anatomy.sides.values():
        cx = side.head_center[0] + side.sign * 15.0
        pts += [np.stack([cx + 95 * np.cos(t), 5.0 + 95 * np.sin(t), np.full_like(t, z)], axis=1)
                for z in np.linspace(-250, -70, 8)]
    world = np.concatenate(pts) @ rotation.T + translation
    return float(world[:, 1].min())


def labels_from_parts(parts, grid: Grid, centers_ras: dict, radii: dict, implant_side=None):
    """Apply label schema v1 to a parts map at voxel centres.

    Parameters
    ----------
    parts : (I, J, K) ndarray of uint8
        :data:`PARTS` codes.
    grid : Grid
        Where the voxel centres are (RAS mm).
    centers_ras, radii : dict
        side name -> true head centre (RAS mm) and radius (mm).
    implant_side : str, sequence of str or None
        That side (those sides) get no labels 1-4.
    """
    skipped = {implant_side} if isinstance(implant_side, str) else set(implant_side or ())
    labels = np.zeros(parts.shape, dtype=np.uint8)
    bone = (parts > 0) & (parts != PARTS["metal"])
    labels[bone] = schema.OTHER_BONE
    inverse = np.linalg.inv(grid.axes)
    for side, (head_label, cup_label) in schema.SIDE_LABELS.items():
        if side in skipped:
            continue
        center, radius = np.asarray(centers_ras[side]), float(radii[side])
        for part, label, reach in ((PARTS[f"femur_{side}"], head_label, radius + schema.HEAD_MARGIN_MM),
                                   (PARTS[f"hip_{side}"], cup_label, schema.ACETABULUM_RADIUS_FACTOR * radius)):
            centre_idx = inverse @ (center - grid.origin)
            half = np.abs(inverse) @ np.full(3, reach)
            lo = np.maximum(np.floor(centre_idx - half - 1).astype(int), 0)
            hi = np.minimum(np.ceil(centre_idx + half + 2).astype(int), grid.shape)
            if np.any(hi <= lo):
                continue
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            ii, jj, kk = np.meshgrid(*[np.arange(a, b, dtype=float) for a, b in zip(lo, hi)], indexing="ij")
            pts = grid.origin[:, None] + grid.axes @ np.stack([ii.ravel(), jj.ravel(), kk.ravel()])
            dist = np.linalg.norm(pts - center[:, None], axis=0).reshape(ii.shape)
            labels[box][(parts[box] == part) & (dist <= reach)] = label
    return labels


def make_phantom(seed: int = 0, *, size: str = "small", preset: str = DEFAULT_PRESET, spacing=None,
                 joint_space_mm=None, implant_side=None, truncate_side=None, header=None,
                 case_id=None, truncate_mode=None, fov_mm=None, fov_center_mm=None,
                 bone_fraction: bool = False) -> PhantomCase:
    """Draw and render one hip CT phantom with its ground truth.

    Parameters
    ----------
    seed : int
        Everything random comes from ``numpy.random.default_rng(seed)``.
    size : {"tiny", "small", "full"}
        tiny: 4.5 mm voxels (about 85 x 72 x 52; simple model well under a
        second, anatomic about 2 s); small: about 2 mm voxels (anatomic about
        6 s); full: 512 x 512 at 0.6-0.9 mm pixels (simple model 300 slices,
        anatomic 0.625-5 mm slices over 270 mm).
    preset : str
        One of :data:`PRESETS`: the simple model's ``easy``, ``hard``, ``implant``,
        ``truncated``, ``osteoporotic``, or the anatomic model's ``anatomic``
        (default: a realistic mix of healthy to severe OA, normal and
        osteoporotic bone, flexed hips), ``anatomic_oa``,
        ``anatomic_osteoporotic``, ``anatomic_implant`` (one or both sides,
        acetabular screws), ``anatomic_truncated`` (one hip only in view, or a
        head cut on any side).
    spacing : (float, float, float), optional
        Acquisition spacing along RAS x, y, z in mm (overrides the size's).
    joint_space_mm : float or (float, float), optional
        Joint-space width, or the range it is drawn from per side.
    implant_side, truncate_side : {"left", "right"}, optional
        Force the implant / field-of-view truncation onto that side (the
        ``implant`` / ``truncated`` presets draw one when not given); the
        anatomic presets also take ``implant_side="both"``.
    header : str, optional
        One of :data:`HEADERS`; by default drawn from the preset's list.
    case_id : str, optional
        Defaults to ``<preset>-<size>-<seed>``.
    truncate_mode : {"one_hip", "cut"}, optional
        Anatomic presets: a field of view holding one hip only, or one cutting
        through a head on a random side (drawn when not given).
    fov_mm, fov_center_mm : (float, float, float), optional
        Anatomic presets: extent (RAS x, y, z) and centre (scanner RAS mm) of
        the field of view instead of the size's and the preset's.
    bone_fraction : bool
        Also keep each voxel's bone share (:attr:`PhantomCase.bone_fraction`).
    """
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; choose from {', '.join(SIZES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r}; choose from {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    rng = np.random.default_rng(seed)
    if spec.anatomic is not None:
        return _make_anatomic(seed, rng, size, preset, spec, spacing, joint_space_mm, implant_side, truncate_side,
                              header, case_id, truncate_mode, fov_mm, fov_center_mm, bone_fraction)
    if joint_space_mm is None:
        joint_space_mm = spec.joint_space_mm
    elif np.isscalar(joint_space_mm):
        joint_space_mm = (float(joint_space_mm), float(joint_space_mm))
    if implant_side is None and spec.implant:
        implant_side = ("left", "right")[int(rng.integers(2))]
    if truncate_side is None and spec.truncate:
        truncate_side = ("left", "right")[int(rng.integers(2))]
    anatomy = sample_anatomy(rng, joint_space_mm=tuple(joint_space_mm), aspherical=spec.aspherical,
                             implant_side=implant_side, vessels_calcified=spec.calcifications)
    angles, rotation, translation, header = _draw_pose(rng, spec, header)
    phys, shape_ras, fov = _acquisition_spacing(rng, size, spec, spacing)
    center = np.zeros(3)
    centers = {name: rotation @ side.head_center + translation for name, side in anatomy.sides.items()}
    if truncate_side is not None:
        side = anatomy.sides[truncate_side]
        cut = centers[truncate_side][0] + side.sign * rng.uniform(0.0, 0.5) * side.head_radius
        far = -side.sign * fov[0] / 2
        lo, hi = sorted([far, cut])
        center[0] = (lo + hi) / 2
        shape_ras[0] = int(np.floor((hi - lo) / phys[0])) + 1
    direction = HEADERS[header]
    world_axis = [int(np.argmax(np.abs(direction[:, a]))) for a in range(3)]
    grid = Grid.centered([shape_ras[w] for w in world_axis], [phys[w] for w in world_axis], direction, center)
    hu = _tissue_hu(rng, spec)
    table_pad = rng.uniform(2.0, 6.0)
    acquisition = Acquisition(
        hu=hu, noise_hu=float(rng.uniform(*spec.noise_hu)),
        psf_sigma_mm=(rng.uniform(0.35, 0.55),) * 2 + (0.35 * phys[2],),
        trabecular_texture_hu=float(rng.uniform(30, 60)),
        streak_hu=float(rng.uniform(250, 500)) if implant_side else 0.0,
        table_top_y=_lowest_body_y(anatomy, rotation, translation) - table_pad, table_pad_mm=table_pad)
    ct, parts, materials, fraction = render(anatomy, grid, rotation, translation, acquisition, rng,
                                            bone_fraction=bone_fraction)
    radii = {name: side.head_radius for name, side in anatomy.sides.items()}
    labels = labels_from_parts(parts, grid, centers, radii, implant_side)
    case_id = case_id or f"{preset}-{size}-{seed:05d}"
    truth = _truth(case_id, seed, size, preset, header, grid, anatomy, rotation, translation, angles,
                   centers, implant_side, truncate_side, labels, acquisition)
    return PhantomCase(case_id=case_id, ct=ct, labels=labels, parts=parts, geometry=grid.geometry(),
                       truth=truth, materials=materials, bone_fraction=fraction)


def _anatomic_spacing(rng, size, preset: Preset, spacing, fov_mm=None):
    """Voxel spacing (RAS x, y, z), shape and field of view of an anatomic phantom."""
    _, base, fixed = SIZES[size]
    fov = np.asarray(ANATOMIC_FOV if fov_mm is None else fov_mm, dtype=float)
    if spacing is not None:
        phys = np.asarray(spacing, dtype=float)
    elif size == "full":
        in_plane = rng.uniform(0.6, 0.9)
        phys = np.array([in_plane, in_plane, rng.choice([0.625, 0.8, 1.0, 1.25, 2.0, 3.0, 5.0])])
        if fov_mm is None:
            fov = np.array([fixed[0] * in_plane, fixed[1] * in_plane, fov[2]])
    elif preset.jitter_spacing:
        in_plane = base[0] * rng.uniform(0.85, 1.15)
        phys = np.array([in_plane, in_plane, base[2] * rng.uniform(1.0, 1.5)])
    else:
        phys = np.asarray(base, dtype=float)
    shape = np.ceil(fov / phys).astype(int)
    return phys, shape, fov


def _anatomic_supersampling(spacing) -> tuple:
    """Fine points per voxel along each axis: 1 up to 1.2 mm, 2 up to 2.4 mm, else 3."""
    return tuple(1 if s <= 1.2 else 2 if s <= 2.4 else 3 for s in spacing)


def _anatomic_field_of_view(rng, spec, centers, radii, phys, shape_ras, truncate_side, truncate_mode=None):
    """Centre and shape (RAS axes) of the field of view; a truncated case holds one hip or cuts a head."""
    center = np.array([0.0, 0.0, 10.0])
    shape_ras = np.array(shape_ras)
    if not spec.truncate and truncate_mode is None:
        return center, shape_ras, None
    side = truncate_side or ("left", "right")[int(rng.integers(2))]
    other = "right" if side == "left" else "left"
    head = np.asarray(centers[side])
    sign = 1.0 if head[0] > centers[other][0] else -1.0
    draw = rng.uniform()
    if truncate_mode not in (None, "one_hip", "cut"):
        raise ValueError(f"unknown truncate_mode {truncate_mode!r}; choose one_hip or cut")
    if truncate_mode == "one_hip" or (truncate_mode is None and draw < 0.5):  # the other head wholly outside
        offset = sign * rng.uniform(0.0, 20.0)
        half = min(rng.uniform(95.0, 120.0), abs(head[0] - centers[other][0]) - radii[other] - 6.0 - abs(offset))
        center = np.array([head[0] + offset, head[1] + rng.uniform(-15, 15), head[2] + rng.uniform(0, 30)])
        shape_ras[0] = int(np.floor(2 * half / phys[0])) + 1
        return center, shape_ras, {"mode": "one_hip", "side": side}
    axis = int(rng.integers(3))
    direction = 1.0 if rng.uniform() < 0.5 else -1.0
    cut = head[axis] + direction * rng.uniform(-0.3, 0.6) * radii[side]
    far = cut - direction * shape_ras[axis] * phys[axis] * rng.uniform(0.5, 0.8)
    lo, hi = sorted([far, cut])
    center[axis] = (lo + hi) / 2
    shape_ras[axis] = int(np.floor((hi - lo) / phys[axis])) + 1
    return center, shape_ras, {"mode": "cut", "side": side, "axis": "xyz"[axis], "direction": direction}


def _make_anatomic(seed, rng, size, preset, spec: Preset, spacing, joint_space_mm, implant_side, truncate_side,
                   header, case_id, truncate_mode=None, fov_mm=None, fov_center_mm=None,
                   bone_fraction=False) -> PhantomCase:
    if joint_space_mm is not None and np.isscalar(joint_space_mm):
        joint_space_mm = (float(joint_space_mm), float(joint_space_mm))
    anatomy, info = sample_anatomic(rng, spec.anatomic, joint_space_mm=joint_space_mm, implant_side=implant_side)
    angles, rotation, translation, header = _draw_pose(rng, spec, header)
    phys, shape_ras, _ = _anatomic_spacing(rng, size, spec, spacing, fov_mm)
    centers = {name: rotation @ side.head_center + translation for name, side in anatomy.sides.items()}
    radii = {name: side.head_radius for name, side in anatomy.sides.items()}
    center, shape_ras, truncation = _anatomic_field_of_view(rng, spec, centers, radii, phys, shape_ras, truncate_side,
                                                            truncate_mode)
    if fov_center_mm is not None:
        center = np.asarray(fov_center_mm, dtype=float)
    direction = HEADERS[header]
    world_axis = [int(np.argmax(np.abs(direction[:, a]))) for a in range(3)]
    grid = Grid.centered([shape_ras[w] for w in world_axis], [phys[w] for w in world_axis], direction, center)
    hu = _tissue_hu(rng, spec)
    arterial = info["contrast"]["arteries"]
    hu.update({"cortical": info["hu"]["cortical"], "cancellous": info["cancellous_target_hu"],
               "marrow": rng.uniform(-50.0, 20.0), "fluid": rng.uniform(0.0, 20.0),
               "blood": rng.uniform(150.0, 400.0) if arterial else rng.uniform(35.0, 50.0),
               "vein": rng.uniform(40.0, 80.0) if arterial else rng.uniform(35.0, 55.0),
               "contrast": rng.uniform(300.0, 1500.0), "fibrocartilage": rng.uniform(70.0, 100.0),
               "ligament": rng.uniform(50.0, 80.0)})
    table_pad = rng.uniform(2.0, 6.0)
    implant_sides = info["implant_sides"]
    # A sharp kernel resolves more in the axial plane and overshoots at edges; its noise is finer.
    psf_in_plane = (0.3, 0.45) if spec.sharp_kernel else (0.45, 0.75)
    acquisition = Acquisition(
        hu=hu, noise_hu=float(rng.uniform(*spec.noise_hu)),
        psf_sigma_mm=(rng.uniform(*psf_in_plane),) * 2 + (0.42 * phys[2],), trabecular_texture_hu=0.0,
        streak_hu=float(rng.uniform(250, 500)) if implant_sides else 0.0,
        table_top_y=_lowest_body_y(anatomy, rotation, translation) - table_pad, table_pad_mm=table_pad,
        supersample=_anatomic_supersampling(grid.spacing), noise_corr_mm=0.4 if spec.sharp_kernel else 0.8,
        edge_gain=float(rng.uniform(0.5, 1.2)) if spec.sharp_kernel else 0.0,
        edge_sigma_mm=float(rng.uniform(0.7, 1.2)) if spec.sharp_kernel else 1.0)
    ct, parts, materials, fraction = render(anatomy, grid, rotation, translation, acquisition, rng,
                                            bone_fraction=bone_fraction)
    labels = labels_from_parts(parts, grid, centers, radii, implant_sides)
    case_id = case_id or f"{preset}-{size}-{seed:05d}"
    truth = _truth(case_id, seed, size, preset, header, grid, anatomy, rotation, translation, angles,
                   centers, None, truncation["side"] if truncation else None, labels, acquisition)
    truth["implant_side"] = ("both" if len(implant_sides) == 2 else implant_sides[0]) if implant_sides else None
    truth["implant_sides"] = list(implant_sides)
    truth["truncation"] = truncation
    truth["model"] = "anatomic"
    truth["bone_quality"] = "osteoporotic" if info["osteoporotic"] else "normal"
    truth["cancellous_bone_volume_fraction"] = round(info["bone_volume_fraction"], 4)
    truth["contrast"] = info["contrast"]
    truth["sacroiliac_gap_mm"] = round(info["sacroiliac_gap_mm"], 3)
    truth["symphysis_gap_mm"] = round(info["symphysis_gap_mm"], 3)
    truth["cortex_hip_mm"] = round(info["hu"]["hip_cortex_mm"], 3)
    for name, side_truth in truth["sides"].items():
        extra = info["sides"][name]
        if name in implant_sides:
            side_truth["status"] = "implant"
        side_truth["acetabulum_center_mm"] = [round(float(v), 4) for v in rotation @ extra["acetabulum_center_mm"] + translation]
        side_truth["joint_space_mm"] = round(extra["joint_space_mean_mm"], 4)
        side_truth["joint_space_min_mm"] = round(extra["joint_space_min_mm"], 4)
        side_truth["joint_space_mean_mm"] = round(extra["joint_space_mean_mm"], 4)
        side_truth["head_asphericity_mm"] = round(abs(anatomy.sides[name].head_shape.a2) + abs(anatomy.sides[name].head_shape.a3)
                                                  + extra["head_flattening_mm"], 4)
        for key in ("center_edge_angle_deg", "oa_grade", "dysplastic", "flexion_deg", "abduction_deg", "rotation_deg",
                    "femoral_anteversion_deg", "head_flattening_mm", "osteophyte_mm", "acetabular_osteophyte_mm",
                    "cysts", "sclerosis_hu", "fovea_depth_mm", "medial_wall_mm", "fossa_depth_mm", "cortex_head_mm",
                    "cortex_shaft_mm"):
            value = extra[key]
            side_truth[key] = round(float(value), 4) if isinstance(value, float) else value
        side_truth["bone_quality"] = truth["bone_quality"]
    truth["notes"] += (" Anatomic model: head centre and radius are the least-squares sphere of the true head "
                       "surface (fovea excluded); joint_space_mm is the mean bone-to-bone gap over the lunate "
                       "surface (min in joint_space_min_mm); center_edge_angle_deg is measured on the bone in the "
                       "pelvis's coronal plane.")
    return PhantomCase(case_id=case_id, ct=ct, labels=labels, parts=parts, geometry=grid.geometry(),
                       truth=truth, materials=materials, bone_fraction=fraction)


def _visible_fraction(grid: Grid, center, radius) -> float:
    """Fraction of the head sphere's surface inside the field of view."""
    pts = center + radius * fibonacci_directions(400)
    idx = (pts - grid.origin) @ np.linalg.inv(grid.axes).T
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(grid.shape) - 0.5), axis=1)
    return float(inside.mean())


def _truth(case_id, seed, size, preset, header, grid, anatomy, rotation, translation, angles, centers,
           implant_side, truncate_side, labels, acquisition) -> dict:
    sides = {}
    for name, side in anatomy.sides.items():
        axis_ras = rotation @ side.cup_axis
        inc, ant = radiographic_angles(axis_ras)
        visible = _visible_fraction(grid, centers[name], side.head_radius)
        status = "ok"
        if name == implant_side:
            status = "implant"
        elif visible < 0.999:
            status = "truncated"
        sides[name] = {
            "status": status,
            "head_center_mm": [round(float(v), 4) for v in centers[name]],
            "head_radius_mm": round(float(side.head_radius), 4),
            "head_asphericity_mm": round(abs(side.head_shape.a2) + abs(side.head_shape.a3), 4),
            "acetabulum_center_mm": [round(float(v), 4) for v in centers[name]],
            "acetabulum_radius_mm": round(float(side.socket_radius), 4),
            "joint_space_mm": round(float(side.joint_space_mm), 4),
            "inclination_deg": round(float(inc), 3),
            "anteversion_deg": round(float(ant), 3),
            "pelvic_inclination_deg": round(float(side.inclination_deg), 3),
            "pelvic_anteversion_deg": round(float(side.anteversion_deg), 3),
            "neck_shaft_angle_deg": round(float(side.neck_shaft_deg), 3),
            "head_visible_fraction": round(visible, 4),
        }
    counts = np.bincount(labels.ravel(), minlength=len(schema.LABEL_NAMES))
    return {
        "thagpu_version": __version__,
        "label_schema": schema.SCHEMA_VERSION,
        "case_id": case_id, "seed": int(seed), "size": size, "preset": preset,
        "header_orientation": header,
        "shape": list(grid.shape), "spacing_mm": [round(s, 6) for s in grid.spacing],
        "pose": {"rotation_deg_xyz": [round(float(a), 4) for a in angles],
                 "translation_mm": [round(float(t), 4) for t in translation]},
        "implant_side": implant_side, "truncated_side": truncate_side,
        "noise_hu": round(acquisition.noise_hu, 3),
        "reconstruction": {"kernel": "sharp" if acquisition.edge_gain > 0 else "standard",
                           "edge_gain": round(acquisition.edge_gain, 3),
                           "edge_sigma_mm": round(acquisition.edge_sigma_mm, 3)},
        "tissue_hu": {k: round(float(v), 2) for k, v in acquisition.hu.items()},
        "sides": sides,
        "label_voxels": {schema.LABEL_NAMES[v]: int(counts[v]) for v in schema.LABEL_NAMES},
        "notes": "Centres in patient RAS mm. inclination/anteversion are radiographic angles of the "
                 "socket opening axis in the image's RAS frame; pelvic_* are the same in the pelvis's "
                 "own frame (before the random pose).",
    }


def write_phantom(case: PhantomCase, out_dir) -> dict:
    """Write ``ct.nii.gz``, ``gt.nii.gz`` and ``gt.json`` under ``out_dir/<case_id>/`` atomically."""
    from ..io import write_image
    folder = Path(out_dir) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ct": folder / "ct.nii.gz", "gt": folder / "gt.nii.gz", "truth": folder / "gt.json"}
    write_image(case.ct, case.geometry, paths["ct"])
    write_image(case.labels, case.geometry, paths["gt"])
    atomic_write_text(paths["truth"], json.dumps(case.truth, indent=2) + "\n")
    return paths


def write_phantoms(out_dir, n: int = 1, seed: int = 0, *, size: str = "small", preset: str = DEFAULT_PRESET,
                   progress=None) -> list:
    """Write ``n`` phantoms with seeds ``seed, seed + 1, ...``; return their folders."""
    folders = []
    for i in range(n):
        case = make_phantom(seed + i, size=size, preset=preset)
        folders.append(write_phantom(case, out_dir)["ct"].parent)
        if progress is not None:
            progress(i + 1, n)
    return folders
