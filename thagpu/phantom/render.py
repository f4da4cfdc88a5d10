"""Render a sampled anatomy into a CT acquisition: grid, partial volume, PSF, noise, metal streaks.

The scanner is modelled in RAS millimetres. The patient (an :class:`Anatomy`)
is placed by a rigid pose; the table is part of the scanner and is not posed.
Tissues are painted on a grid up to three times finer than the voxels along
coarse axes and averaged down (partial volume); the result is blurred by a
Gaussian point-spread function, given correlated noise, and quantised to
int16 like a scanner's output. The truth maps are taken at voxel centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..geometry import LPS_TO_RAS, Geometry
from .anatomy import PARTS, Anatomy
from .shapes import Capsule, Intersect, SmoothUnion, Subtract, Union, smooth_min, union_bounds, union_sdf

__all__ = ["Grid", "Acquisition", "MATERIALS", "render"]

#: Material codes painted on the fine grid.
MATERIALS = {name: code for code, name in enumerate([
    "air", "fat", "muscle", "cartilage", "fluid", "gas", "table", "foam", "cortical",
    "cancellous", "marrow", "metal", "liner", "calcification", "blood",
    # anatomic model only (appended: the codes above never change)
    "fibrocartilage", "ligament", "contrast", "vein"])}


_BODY_MATERIALS = ("fat", "muscle", "fluid", "gas", "blood", "vein", "contrast", "calcification")


@dataclass(frozen=True)
class Grid:
    """Voxel grid of the stored image: index (i, j, k) -> RAS mm is ``origin + axes @ index``."""

    shape: tuple
    spacing: tuple
    direction: np.ndarray  # (3, 3) columns: stored index axes in RAS
    origin: np.ndarray  # RAS mm of voxel (0, 0, 0)

    @classmethod
    def centered(cls, shape, spacing, direction, center):
        direction = np.asarray(direction, dtype=float)
        half = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
        origin = np.asarray(center, float) - direction @ half
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), direction, origin)

    @property
    def axes(self) -> np.ndarray:
        return self.direction * np.asarray(self.spacing)[None, :]

    def geometry(self) -> Geometry:
        """The ITK header (LPS) of this grid."""
        direction = LPS_TO_RAS @ self.direction
        return Geometry(size=self.shape, spacing=self.spacing,
                        origin=tuple(float(v) for v in LPS_TO_RAS @ self.origin),
                        direction=tuple(float(v) for v in direction.ravel()))

    def world_axis_of(self) -> tuple:
        """For each stored axis, the RAS axis it runs closest to."""
        return tuple(int(np.argmax(np.abs(self.direction[:, a]))) for a in range(3))


@dataclass(frozen=True)
class Acquisition:
    """Scanner settings and per-case tissue values (HU)."""

    hu: dict  # material name -> HU
    noise_hu: float
    psf_sigma_mm: tuple  # RAS x, y, z
    trabecular_texture_hu: float
    streak_hu: float
    table_top_y: float
    table_pad_mm: float
    max_points: int = 4_000_000
    supersample: tuple | None = None  # fine points per voxel along each stored axis; None: 3 above 1.2 mm
    noise_corr_mm: float | None = None  # noise correlation length (Gaussian sigma, mm); None: 0.6 voxel
    # A sharp (bone) reconstruction kernel: in the axial plane the image gains ``edge_gain`` times
    # its difference to a Gaussian of ``edge_sigma_mm`` (an overshoot on the bright side of an edge,
    # an undershoot on the dark side). 0: a standard kernel.
    edge_gain: float = 0.0
    edge_sigma_mm: float = 1.0


def _pose_maps(grid: Grid, rotation, translation):
    """Affine maps from (fine) stored indices to world RAS and to the anatomical frame."""
    world_m, world_b = grid.axes, grid.origin
    anat_m = rotation.T @ world_m
    anat_b = rotation.T @ (world_b - translation)
    return (world_m, world_b), (anat_m, anat_b)


def _coords(m, b, idx):
    i, j, k = idx
    x = b[0] + m[0, 0] * i[:, None, None] + m[0, 1] * j[None, :, None] + m[0, 2] * k[None, None, :]
    y = b[1] + m[1, 0] * i[:, None, None] + m[1, 1] * j[None, :, None] + m[1, 2] * k[None, None, :]
    z = b[2] + m[2, 0] * i[:, None, None] + m[2, 1] * j[None, :, None] + m[2, 2] * k[None, None, :]
    return x, y, z


def _index_box(m, b, low, high, idx):
    """Slices of the index vectors ``idx`` whose points can lie in the box [low, high]."""
    corners = np.array([[lo if bit == 0 else hi for bit, lo, hi in zip(bits, low, high)]
                        for bits in np.ndindex(2, 2, 2)])
    inverse = np.linalg.inv(m)
    index = (corners - b) @ inverse.T
    lo, hi = index.min(axis=0) - 1.0, index.max(axis=0) + 1.0
    out = []
    for axis in range(3):
        values = idx[axis]
        start = int(np.searchsorted(values, lo[axis], side="left"))
        stop = int(np.searchsorted(values, hi[axis], side="right"))
        if start >= stop:
            return None
        out.append(slice(start, stop))
    return tuple(out)


def _union_in_boxes(shapes, m, b, idx, box, x, y, z):
    """Union SDF over a block, each shape evaluated only inside its own bounding box."""
    sdf = np.full(x.shape, np.inf, dtype=x.dtype)
    sub_idx = tuple(values[s] for values, s in zip(idx, box))
    for shape in shapes:
        sub = _index_box(m, b, *shape.bounds(), sub_idx)
        if sub is None:
            continue
        view = sdf[sub]
        np.minimum(view, _grid_sdf(shape, m, b, tuple(v[s] for v, s in zip(sub_idx, sub)),
                                   x[sub], y[sub], z[sub]), out=view)
    return sdf


#: Beyond this depth (mm) a subtracted or intersected member's distance no longer matters (cortex, cysts).
_DEPTH_MM = 12.0


def _grid_sdf(shape, m, b, idx, x, y, z):
    """Signed distance of ``shape`` on a block of grid points; union members only inside their own boxes.

    ``x, y, z`` are the points of the index vectors ``idx`` under the affine
    map ``(m, b)``; boxes become index slices, so no point outside a member's
    box is touched. Subtracted and intersected bounded members are evaluated
    within ``_DEPTH_MM`` of their boxes (deeper, they cannot change the
    surface nor the cortex).
    """
    if isinstance(shape, (SmoothUnion, Union)):
        pad = float(getattr(shape, "k_mm", 0.0))
        out = np.full(x.shape, 1e3, dtype=x.dtype)
        for member in shape.shapes:
            lo, hi = member.bounds()
            sub = _index_box(m, b, np.asarray(lo) - pad, np.asarray(hi) + pad, idx)
            if sub is None:
                continue
            d = _grid_sdf(member, m, b, tuple(v[s] for v, s in zip(idx, sub)), x[sub], y[sub], z[sub])
            out[sub] = smooth_min(out[sub], d, pad) if pad > 0 else np.minimum(out[sub], d)
        return out
    if isinstance(shape, (Intersect, Subtract)):
        a = _grid_sdf(shape.a, m, b, idx, x, y, z)
        other = shape.b
        if not hasattr(other, "bounds"):
            d = other.sdf(x, y, z)
        else:
            d = np.full(x.shape, 1e3, dtype=x.dtype)  # far from a bounded member: outside it
            lo, hi = other.bounds()
            sub = _index_box(m, b, np.asarray(lo) - _DEPTH_MM, np.asarray(hi) + _DEPTH_MM, idx)
            if sub is not None:
                d[sub] = _grid_sdf(other, m, b, tuple(v[s] for v, s in zip(idx, sub)), x[sub], y[sub], z[sub])
        return np.maximum(a, d) if isinstance(shape, Intersect) else np.maximum(a, -d)
    return shape.sdf(x, y, z)


#: Organs of these materials are painted at voxel centres with the background; the others on the fine grid.
COARSE_ORGANS = ("fat", "muscle", "fluid")
_BODY = tuple(MATERIALS[name] for name in _BODY_MATERIALS)  # what an organ may replace (not air, table)


def _paint_background(material, anat, world, idx, anatomy: Anatomy, table_top_y, pad_mm):
    """Paint air, the table, fat, muscle and the large soft-tissue organs (smooth, large: no partial volume)."""
    xw, yw, _ = _coords(*world, idx)
    # Scanner table (not posed): curved carbon skins around a foam core, a foam pad on top.
    top = table_top_y + 0.0008 * xw * xw
    under = np.abs(xw) < 230.0
    material[under & (yw <= top + pad_mm) & (yw > top - 35.0)] = MATERIALS["foam"]
    skins = ((yw <= top) & (yw > top - 2.5)) | ((yw <= top - 32.5) & (yw > top - 35.0))
    material[under & skins] = MATERIALS["table"]
    xa, ya, za = _coords(*anat, idx)
    # Body: an elliptic cylinder for the pelvis that splits into two thighs below.
    rx, ry = anatomy.body_radii
    body = (np.sqrt((xa / rx) ** 2 + ((ya + 5.0) / ry) ** 2) - 1.0) * min(rx, ry)
    body = np.maximum(body, -(za + 70.0))
    if anatomy.thighs is None:
        for side in anatomy.sides.values():
            cx = side.head_center[0] + side.sign * 15.0
            body = np.minimum(body, np.sqrt((xa - cx) ** 2 + (ya - 5.0) ** 2) - 95.0)
    else:  # thighs along the posed femoral shafts
        for name, (hip, shaft) in anatomy.thighs.items():
            top = np.asarray(hip) + np.array([anatomy.sides[name].sign * 15.0, 5.0, 0.0]) - 60.0 * np.asarray(shaft)
            body = np.minimum(body, Capsule(tuple(top), tuple(top + 500.0 * np.asarray(shaft)), 95.0).sdf(xa, ya, za))
    material[body < 0] = MATERIALS["fat"]
    material[body < -anatomy.fat_mm] = MATERIALS["muscle"]
    # Large soft-tissue organs (their HU differ little: no partial volume needed).
    for name, shape in anatomy.organs:
        if name not in COARSE_ORGANS:
            continue
        lo, hi = shape.bounds()
        near = ((xa >= lo[0]) & (xa <= hi[0]) & (ya >= lo[1]) & (ya <= hi[1]) & (za >= lo[2]) & (za <= hi[2])
                & np.isin(material, _BODY))
        if near.any():
            inside = shape.sdf(xa[near], ya[near], za[near]) < 0
            hit = np.zeros_like(near)
            hit[near] = inside
            material[hit] = MATERIALS[name]


def _bone_hu(bone, band, sdf, cortex, tissue, x, y, z, material, override, hu_lut, pv_mm):
    """HU of a bone's points, with partial volume across its surface and its cortex.

    Each point stands for a voxel-sized interval of depth ``[d - h/2, d + h/2]``
    (``d = -sdf``, ``h = pv_mm``, a box filter along the surface normal, exact
    for a flat surface): the part above the surface keeps what was there
    before, the part in ``[0, cortex]`` is cortical bone, the rest is the
    inner tissue (cancellous bone with its texture, marrow, a cyst). A thin
    subchondral plate thus never vanishes between two sample points nor shows
    full cortical HU, as in a scanner.
    """
    depth = -sdf[band]
    thick = np.asarray(cortex[band], dtype=np.float32)
    xb, yb, zb = x[band], y[band], z[band]
    if not pv_mm:
        f_out = np.zeros_like(depth)
        f_cort = (depth < thick).astype(np.float32)
    else:
        lo, hi = depth - pv_mm / 2, depth + pv_mm / 2
        f_out = np.clip(-lo, 0.0, pv_mm) / pv_mm
        f_cort = np.clip(np.minimum(hi, thick) - np.maximum(lo, 0.0), 0.0, pv_mm) / pv_mm
    f_in = np.clip(1.0 - f_out - f_cort, 0.0, 1.0)
    inner_code = tissue[band]
    values = np.zeros(depth.shape, dtype=np.float32)
    need = f_in > 0
    if need.any():
        inner = hu_lut[np.where(inner_code[need] == MATERIALS["cortical"], MATERIALS["cancellous"], inner_code[need])]
        spongy = np.isin(inner_code[need], (MATERIALS["cancellous"], MATERIALS["cortical"]))
        if bone.cancellous_fn is not None and spongy.any():
            sel = np.flatnonzero(need)[spongy]
            inner = inner.astype(np.float32)
            inner[spongy] = bone.cancellous_fn(xb[sel], yb[sel], zb[sel])
        values[need] += f_in[need] * inner
    need = f_cort > 0
    if need.any():
        cort = (bone.cortical_fn(xb[need], yb[need], zb[need]) if bone.cortical_fn is not None
                else hu_lut[MATERIALS["cortical"]])
        values[need] += f_cort[need] * cort
    need = f_out > 0
    if need.any():
        before = override[band][need]
        missing = np.isnan(before)
        before[missing] = hu_lut[material[band][need][missing]]
        values[need] += f_out[need] * before
    return values


def _paint_objects(material, part, anat, idx, anatomy: Anatomy, override=None, hu_lut=None, pv_mm=0.0):
    """Paint organs, cartilage, bones and metal on one block of (fine) points.

    Coordinates are computed only inside each object's bounding box. A posed
    object (a femur flexed about its head centre) is evaluated in its own
    frame: its index-to-mm map is the anatomical one composed with the inverse
    pose. ``override`` (float HU or NaN per fine point) receives the HU fields
    of bones that carry them.
    """
    m_a, b_a = anat
    if override is not None:  # anatomic model: float32 coordinates (half the memory traffic)
        m_a, b_a = np.asarray(m_a, np.float32), np.asarray(b_a, np.float32)
        idx = tuple(np.asarray(v, np.float32) for v in idx)

    def posed(pose):
        if pose is None:
            return m_a, b_a
        rotation, pivot = np.asarray(pose[0], m_a.dtype), np.asarray(pose[1], m_a.dtype)
        return rotation.T @ m_a, rotation.T @ (b_a - pivot) + pivot

    def region(bounds, pose=None):
        m, b = posed(pose)
        box = _index_box(m, b, *bounds, idx)
        if box is None:
            return None, None
        return box, _coords(m, b, tuple(v[s] for v, s in zip(idx, box)))

    for name, shape in anatomy.soft_tissue:
        box, xyz = region(shape.bounds())
        if box is None:
            continue
        hit = (shape.sdf(*xyz) < 0) & (material[box] == MATERIALS["muscle"])
        material[box][hit] = MATERIALS[name]
    for name, shape in anatomy.organs:
        if name in COARSE_ORGANS:
            continue  # painted with the background
        box, xyz = region(shape.bounds())
        if box is None:
            continue
        hit = (shape.sdf(*xyz) < 0) & np.isin(material[box], _BODY)
        material[box][hit] = MATERIALS[name]
    for name, shape, pose in anatomy.joint_tissue:
        box, xyz = region(shape.bounds(), pose)
        if box is None:
            continue
        hit = (shape.sdf(*xyz) < 0) & (material[box] != MATERIALS["air"])
        material[box][hit] = MATERIALS[name]
        if override is not None:
            override[box][hit] = np.nan
    for cavity, head, coverage in anatomy.sockets:
        box, xyz = region(cavity.bounds())
        if box is None:
            continue
        hit = (cavity.sdf(*xyz) < 0) & (head.sdf(*xyz) >= 0) & (coverage.sdf(*xyz) < 0)
        material[box][hit] = MATERIALS["cartilage"]
    for bone in anatomy.bones:
        m_b, b_b = posed(bone.pose)
        box, xyz = region(union_bounds(bone.shapes), bone.pose)
        if box is None:
            continue
        x, y, z = xyz
        sdf = _union_in_boxes(bone.shapes, m_b, b_b, idx, box, x, y, z)
        if bone.exclude is not None:
            sub = _index_box(m_b, b_b, *bone.exclude.bounds(), tuple(v[s] for v, s in zip(idx, box)))
            if sub is not None:
                view = sdf[sub]
                np.maximum(view, -_grid_sdf(bone.exclude, m_b, b_b, tuple(v[s][t] for v, s, t in zip(idx, box, sub)),
                                            x[sub], y[sub], z[sub]), out=view)
        hit = sdf < 0
        if not hit.any():
            continue
        # Anatomic model: HU fields with partial volume across the surface and the cortex (see _bone_hu).
        band = (sdf < pv_mm / 2) if (override is not None and pv_mm) else hit
        if bone.cortex_fn is not None:
            cortex = np.zeros(sdf.shape, dtype=np.float32)
            cortex[band] = bone.cortex_fn(x[band], y[band], z[band])
        else:
            cortex = np.full(sdf.shape, bone.cortex_mm)
        if bone.cortex_ramp is not None:
            a, b_, extra = bone.cortex_ramp
            a, ab = np.asarray(a), np.asarray(b_) - np.asarray(a)
            t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab)
            cortex = cortex + extra * np.clip(t, 0.0, 1.0)
        tissue = np.where(-sdf < cortex, MATERIALS["cortical"], MATERIALS["cancellous"])
        if bone.marrow is not None:
            tissue = np.where((tissue == MATERIALS["cancellous"]) & (bone.marrow.sdf(x, y, z) < 0),
                              MATERIALS["marrow"], tissue)
        for name, shape in bone.inclusions:
            sub = _index_box(m_b, b_b, *shape.bounds(), tuple(v[s] for v, s in zip(idx, box)))
            if sub is not None:
                view = tissue[sub]
                view[(shape.sdf(x[sub], y[sub], z[sub]) < 0) & (view != MATERIALS["cortical"])] = MATERIALS[name]
        if override is not None:
            values = _bone_hu(bone, band, sdf, cortex, tissue, x, y, z, material[box], override[box], hu_lut, pv_mm)
        material[box][hit] = tissue[hit]
        part[box][hit] = bone.part
        if override is not None:
            override[box][band] = values
    for implant in ([anatomy.implant] if anatomy.implant is not None else []) + list(anatomy.extra_implants):
        pieces = [(None, implant.metal + [implant.liner])]
        if implant.femoral_metal:
            pieces.append((implant.pose, implant.femoral_metal))
        for pose, shapes in pieces:
            box, xyz = region(union_bounds(shapes), pose)
            if box is None:
                continue
            if implant.liner in shapes:
                liner = implant.liner.sdf(*xyz) < 0
                material[box][liner] = MATERIALS["liner"]
                part[box][liner] = PARTS["none"]
                if override is not None:
                    override[box][liner] = np.nan
            metal_shapes = [shape for shape in shapes if shape is not implant.liner]
            if not metal_shapes:
                continue
            metal = union_sdf(metal_shapes, *xyz) < 0
            material[box][metal] = MATERIALS["metal"]
            part[box][metal] = PARTS["metal"]
            if override is not None:
                override[box][metal] = np.nan


def _supersampling(spacing) -> tuple:
    """Odd sub-sampling factors per axis: 3 along axes coarser than 1.2 mm, else 1."""
    return tuple(3 if s > 1.2 else 1 for s in spacing)


def _streaks(hu, grid: Grid, metal, world, acquisition: Acquisition, rng):
    """Add metal streak artefacts in the scanner's axial planes, slab by slab."""
    if not metal.any():
        return
    m_w, b_w = world
    pts = np.argwhere(metal) @ m_w.T + b_w
    slice_mm = max(grid.spacing[a] for a in range(3) if grid.world_axis_of()[a] == 2)
    bins = np.round(pts[:, 2] / slice_mm).astype(np.int64)
    lo = int(bins.min())
    n_bins = int(bins.max()) - lo + 1
    counts = np.bincount(bins - lo, minlength=n_bins).astype(float)
    safe = np.maximum(counts, 1.0)
    cx_bin = np.bincount(bins - lo, weights=pts[:, 0], minlength=n_bins) / safe
    cy_bin = np.bincount(bins - lo, weights=pts[:, 1], minlength=n_bins) / safe
    strength_bin = np.minimum(1.0, np.sqrt(counts) / 15.0)
    harmonics = rng.integers(6, 18, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.uniform(0.5, 1.0, size=3)
    idx = [np.arange(n, dtype=float) for n in grid.shape]
    step = max(1, acquisition.max_points // (grid.shape[0] * grid.shape[1]))
    for k0 in range(0, grid.shape[2], step):
        k1 = min(grid.shape[2], k0 + step)
        x, y, z = _coords(m_w, b_w, (idx[0], idx[1], idx[2][k0:k1]))
        zbin = np.round(z / slice_mm).astype(np.int64) - lo
        valid = (zbin >= 0) & (zbin < n_bins)
        zbin = np.clip(zbin, 0, n_bins - 1)
        strength = np.where(valid, strength_bin[zbin], 0.0)
        dx, dy = x - cx_bin[zbin], y - cy_bin[zbin]
        rho = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        pattern = sum(w * np.cos(n * theta + p) for n, p, w in zip(harmonics, phases, weights))
        pattern = pattern / weights.sum()
        # Bright and dark streaks decay away from the metal; a dark halo hugs it.
        streak = acquisition.streak_hu * strength * (np.exp(-rho / 80.0) * pattern - 0.5 * np.exp(-rho / 25.0))
        hu[:, :, k0:k1] += np.where(metal[:, :, k0:k1], 0.0, streak).astype(np.float32)


def render(anatomy: Anatomy, grid: Grid, rotation, translation, acquisition: Acquisition, rng, *,
           bone_fraction: bool = False):
    """Render the CT (int16 HU) and the truth parts map, both in stored (i, j, k) order.

    Parameters
    ----------
    bone_fraction : bool
        Also return the share of each voxel's volume that is bone, from the same fine samples the
        CT averages (a float32 array as large as the CT, so only on request).

    Returns
    -------
    ct : (I, J, K) ndarray of int16
    parts : (I, J, K) ndarray of uint8
        :data:`PARTS` codes at voxel centres.
    material : (I, J, K) ndarray of uint8
        :data:`MATERIALS` codes at voxel centres.
    fraction : (I, J, K) ndarray of float32 or None
        Bone (any part but metal) per voxel, in [0, 1]; None unless ``bone_fraction``.
    """
    factors = acquisition.supersample or _supersampling(grid.spacing)
    fine = tuple(n * f for n, f in zip(grid.shape, factors))
    # Fine sample positions in stored-index units: voxel v spans v - 0.5 .. v + 0.5.
    fine_idx = [(np.arange(nf) + 0.5) / f - 0.5 for nf, f in zip(fine, factors)]
    world, anat = _pose_maps(grid, rotation, translation)
    hu_lut = np.zeros(len(MATERIALS), dtype=np.float64)
    for name, code in MATERIALS.items():
        hu_lut[code] = acquisition.hu.get(name, 0.0)
    shape = grid.shape
    hu = np.empty(shape, dtype=np.float32)
    cancellous = np.empty(shape, dtype=np.float32)
    parts = np.empty(shape, dtype=np.uint8)
    materials = np.empty(shape, dtype=np.uint8)
    fraction = np.empty(shape, dtype=np.float32) if bone_fraction else None
    per_slice = shape[0] * shape[1] * factors[0] * factors[1] * factors[2]
    step = max(1, acquisition.max_points // per_slice)
    for k0 in range(0, shape[2], step):
        k1 = min(shape[2], k0 + step)
        idx = (fine_idx[0], fine_idx[1], fine_idx[2][k0 * factors[2]:k1 * factors[2]])
        block = (len(idx[0]), len(idx[1]), len(idx[2]))
        fi, fj, fk = factors
        background = np.zeros((shape[0], shape[1], k1 - k0), dtype=np.uint8)
        centre_idx = (np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float),
                      np.arange(k0, k1, dtype=float))
        _paint_background(background, anat, world, centre_idx, anatomy, acquisition.table_top_y,
                          acquisition.table_pad_mm)
        material = np.repeat(np.repeat(np.repeat(background, fi, 0), fj, 1), fk, 2)
        part = np.zeros(block, dtype=np.uint8)
        override = np.full(block, np.nan, dtype=np.float32) if anatomy.continuous else None
        _paint_objects(material, part, anat, idx, anatomy, override, hu_lut,
                       float(np.prod(np.asarray(grid.spacing) / np.asarray(factors)) ** (1 / 3)))
        coarse = (shape[0], fi, shape[1], fj, k1 - k0, fk)
        fine_hu = hu_lut[material]
        if override is not None:
            painted = ~np.isnan(override)
            fine_hu[painted] = override[painted]
        hu[:, :, k0:k1] = fine_hu.reshape(coarse).mean(axis=(1, 3, 5))
        cancellous[:, :, k0:k1] = (material == MATERIALS["cancellous"]).reshape(coarse).mean(axis=(1, 3, 5))
        centre = (slice(fi // 2, None, fi), slice(fj // 2, None, fj), slice(fk // 2, None, fk))
        parts[:, :, k0:k1] = part[centre]
        materials[:, :, k0:k1] = material[centre]
        if fraction is not None:
            bone = (part > 0) & (part != PARTS["metal"])
            fraction[:, :, k0:k1] = bone.reshape(coarse).mean(axis=(1, 3, 5))
    if acquisition.trabecular_texture_hu > 0:
        texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8)
        texture *= acquisition.trabecular_texture_hu / max(float(texture.std()), 1e-6)
        hu += cancellous * texture
    axis_of = grid.world_axis_of()
    sigma = [acquisition.psf_sigma_mm[axis_of[a]] / grid.spacing[a] for a in range(3)]
    hu = ndimage.gaussian_filter(hu, sigma, mode="nearest")
    if acquisition.edge_gain > 0:
        in_plane = [acquisition.edge_sigma_mm / grid.spacing[a] if axis_of[a] < 2 else 0.0 for a in range(3)]
        hu += np.float32(acquisition.edge_gain) * (hu - ndimage.gaussian_filter(hu, in_plane, mode="nearest"))
    if anatomy.implant is not None and acquisition.streak_hu > 0:
        _streaks(hu, grid, parts == PARTS["metal"], world, acquisition, rng)
    noise_sigma = 0.6 if acquisition.noise_corr_mm is None else [
        max(0.6, acquisition.noise_corr_mm / s) for s in grid.spacing]
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), noise_sigma)
    noise *= acquisition.noise_hu / max(float(noise.std()), 1e-6)
    hu += noise
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return ct, parts, materials, fraction
