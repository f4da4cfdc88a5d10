"""Femur versus pelvis across the joint space, and the schema's hip labels.

Around a fitted head, the bone is split by a marker-controlled watershed
(scikit-image) on the CT turned upside down, so the two floods meet in the
darkest layer between them, which is the joint space. Femur markers lie well
inside the head, pelvis markers in the socket wall beyond its inner surface.
Where head and socket touch (a joint space of 0 to 1 mm, common in
osteoarthritis) the CT has no dark layer to follow, so the elevation also
carries a ridge on the fitted mid-joint surface (the anatomy prior).
The femur is then what the head flood reached; bone that neither flood
reached is assigned by that surface. Last, mask voxels centred in the joint's
soft tissue (the joint space, the fossa's fat pad, the cartilage over the
head's free face), which coarse voxels blur into the mask, are given back to
the background, judged on the head's and the socket's surfaces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .. import labels as schema
from ..device import to_host
from .angles import rim_plane
from .boundary import RadialBoundary, row_nanmedian

__all__ = ["SurfaceField", "HipRegion", "HipLabels", "hip_region", "split_hip"]

#: Height (HU) of the prior ridge on the mid-joint surface in the watershed elevation.
PRIOR_RIDGE_HU = 400.0
#: Width (mm, standard deviation) of that ridge.
PRIOR_RIDGE_MM = 1.0
#: Femur markers lie this far (mm) inside the head surface, pelvis markers this far beyond the socket's.
MARKER_DEPTH_MM = 2.5
#: On the neck's lines, femur markers also lie from MARKER_DEPTH_MM to this far (mm) beyond the head
#: surface: where the lines saw bone beyond the sphere (:func:`thagpu.afs.boundary._mask_beyond`).
NECK_MARKER_MM = 8.0
#: The fossa's fat pad reads below this (HU, after a 0.5 mm blur; fat about -100). Not higher: the
#: cancellous bone of an osteoporotic socket reads down to 50 HU and, where its subchondral plate is
#: thin, joins the joint space through voxels below 100 HU (at 100 HU, half the socket of anatomic
#: seed 9014 at 0.8 x 0.8 x 3 mm went with the fat: acetabulum Dice 0.86 -> 0.61).
JOINT_SOFT_TISSUE_HU = -20.0
#: The socket's surface lies beyond its edge by this share of the head's cortex offset
#: (``SurfaceField.edge_offset``): the socket's subchondral plate blurs like the head's cortex, its
#: steepest fall moving into the joint, while across a joint space about as narrow as the blur the two
#: edges pull apart, which undoes part of it. Voxels centred between the edge and the surface are
#: mostly cartilage. Chosen on anatomic dev seeds 9100-9107 (acetabulum Dice at 3 mm: shift 0 / 0.5 /
#: 0.75 / 1: 0.913 / 0.922 / 0.924 / 0.920; 0.8 x 0.8 x 3 mm 0.917 / 0.924 / 0.926 / 0.927; 1 mm
#: (9100-9105) 0.958 / - / 0.960 / 0.956; osteoporotic 9620-9625 at 0.8 x 0.8 x 3 mm 0.906 -> 0.914 at
#: 0.75; hard 5100-5102 0.941 -> 0.939).
SOCKET_EDGE_SHIFT = 0.75
#: The fat beside a wall voxel of the fossa is taken at no lower than this (HU; fat reads about -100,
#: and noise reaches lower).
FAT_FLOOR_HU = -150.0
#: Lines this far (in the cosine of the angle to the rim plane's normal) beyond the rim plane, on its
#: neck's side, are clear of the rim and its osteophytes (about 17 deg at the plane's equator).
NECK_MARGIN = 0.3


class SurfaceField:
    """The head and socket surfaces as functions of direction around the head centre.

    Parameters
    ----------
    boundary : RadialBoundary
        Lines cast from (about) the fitted centre.
    neighbours : int
        Lines without a measurement take the median of this many nearest lines
        (the fitted sphere where none of them has one).
    """

    def __init__(self, boundary: RadialBoundary, neighbours: int = 8):
        sphere = boundary.sphere
        self.center = sphere.center
        self.radius = sphere.radius
        points = boundary.origin + np.nan_to_num(boundary.head_t)[:, None] * boundary.directions
        dirs = points - self.center
        norms = np.linalg.norm(dirs, axis=1)
        has_head = np.isfinite(boundary.head_t) & (norms > 0)
        # Directions about the fitted centre (lines without a head point keep their own direction).
        self.directions = np.where(has_head[:, None], dirs / np.maximum(norms, 1e-9)[:, None], boundary.directions)
        self.tree = cKDTree(self.directions)
        _, near = self.tree.query(self.directions, k=neighbours + 1)
        head = np.where(has_head, norms, np.nan)
        fill = row_nanmedian(head[near[:, 1:]])  # NaN where no neighbour was measured
        head = np.where(has_head, head, fill)
        self.head = np.where(np.isfinite(head), head, self.radius)
        socket = boundary.origin + np.nan_to_num(boundary.socket_t)[:, None] * boundary.directions
        has_socket = np.isfinite(boundary.socket_t)
        socket_r = np.where(has_socket, np.linalg.norm(socket - self.center, axis=1), np.nan)
        # Coverage: the lines with a head edge and bone beyond it, or, where the head's surface was not
        # seen apart from the socket's, every line with bone beyond the sphere. Then only the socket's
        # side of the rim plane (the neck lies beyond it), and a majority over the neighbourhood
        # (fills single missed lines, drops single strays).
        raw = boundary.covered if boundary.separable else boundary.bone_beyond
        # Lines whose head edge was lost (where a thin joint space blurs into the socket: at 3 mm
        # voxels most of the covered cap) judged nothing: the rim plane is fitted to the judged
        # lines alone, and they are covered where bone lies beyond the sphere on its socket side.
        known = boundary.assessed if boundary.separable else np.ones(len(raw), dtype=bool)
        judged = ~boundary.outside & known
        self.rim_axis, self.rim_error_fraction = None, 1.0
        #: Lines well on the neck's side of the rim plane with bone beyond the sphere: the neck.
        self.neck = np.zeros(len(raw), dtype=bool)
        if raw[judged].sum() >= 10 and (~raw[judged]).sum() >= 10:
            self.rim_axis, threshold, _ = rim_plane(self.directions[judged], raw[judged])
            socket_side = self.directions @ self.rim_axis <= threshold + 0.05
            # The angles' gate counts every line in view, the unjudged ones as seen (uncovered): a rim
            # plane resting on a cap whose head edge was mostly lost gave anteversion errors up to
            # 10 deg on 3 mm phantoms, and those stay unmeasured.
            seen = ~boundary.outside
            self.rim_error_fraction = float(np.mean((self.directions[seen] @ self.rim_axis <= threshold)
                                                    != raw[seen]))
            raw = np.where(known, raw, boundary.bone_beyond) & socket_side
            beyond_rim = boundary.bone_beyond & (self.directions @ self.rim_axis > threshold + NECK_MARGIN)
            # The neck is one bundle of lines; a rim plane tilted by lines that lost the head's edge
            # (an osteoporotic socket at 3 mm) can put a patch of the socket's wall beyond it too,
            # apart from the neck (dev seed 9622 left: 17 such lines, the neck's 58).
            self.neck = _largest_group(beyond_rim, near[:, 1:])
        self.covered = raw[near].mean(axis=1) >= 0.5
        gaps = (socket_r - self.head)[has_socket]
        #: Mean joint space where the socket's surface was seen (0 when it never was).
        self.mean_gap = float(np.mean(gaps)) if gaps.size else 0.0
        socket_fill = row_nanmedian(socket_r[near])
        socket_fill = np.where(np.isfinite(socket_fill), socket_fill, self.head + self.mean_gap)
        self.socket = np.where(self.covered, np.where(has_socket, socket_r, socket_fill), np.nan)
        self.measured_socket = has_socket & self.covered
        #: Lines whose own head edge was kept (the others took their neighbours') and beyond whose
        #: sphere the mask holds no bone: the head's free face, onto soft tissue (not its neck).
        self.free_face = has_head & ~boundary.bone_beyond
        #: The lines' edges lie where the profiles fall fastest; a thin cortex blurred by coarse voxels
        #: moves that point beyond the head's surface, by as much as the blurred-cortex model moved the
        #: sphere's radius (negative). Where the head faces soft tissue the surface is the edge moved
        #: by it. (Where a socket covers the head, a narrow joint space pulls the two blurred edges
        #: apart, against that bias, and the edges themselves serve.)
        self.edge_offset = float(boundary.radius_offset_mm)

    def nearest(self, unit):
        """Index of the line nearest each of the unit vectors (N, 3)."""
        _, index = self.tree.query(unit, workers=-1)
        return index


def _largest_group(selected, neighbours):
    """The largest group of ``selected`` lines joined through their ``neighbours`` (D, k) table."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lines = np.flatnonzero(selected)
    if lines.size == 0:
        return np.zeros(len(selected), dtype=bool)
    rows = np.repeat(lines, neighbours.shape[1])
    cols = neighbours[lines].ravel()
    keep = selected[cols]
    graph = coo_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(len(selected),) * 2)
    _, group = connected_components(graph, directed=False)
    largest = np.bincount(group[lines]).argmax()
    return selected & (group == largest)


@dataclass(frozen=True)
class HipRegion:
    """The box around one head, copied to the host: where its femur and pelvis are split.

    Attributes
    ----------
    box : tuple of 3 slices
        The box in the volume's array.
    image : (X, Y, Z) float32 ndarray
        CT (HU) in the box.
    bone : (X, Y, Z) bool ndarray
        Bone mask in the box.
    """

    box: tuple
    image: np.ndarray
    bone: np.ndarray


@dataclass(frozen=True)
class HipLabels:
    """One side's labels 1-4, as voxel indices into the volume's array.

    ``soft_tissue`` holds the bone mask's voxels whose centres lie in the joint's soft tissue (the
    joint space, the fossa's fat pad, the cartilage over the head's free face): they are written as
    background.
    """

    head: tuple
    acetabulum: tuple
    soft_tissue: tuple
    head_label: int
    acetabulum_label: int

    def write(self, labels: np.ndarray) -> None:
        """Write the labels into a host label map (already holding ``OTHER_BONE`` on the bone); the
        joint's soft tissue, which the bone mask holds at coarse voxels, becomes background."""
        labels[self.soft_tissue] = schema.BACKGROUND
        labels[self.head] = self.head_label
        labels[self.acetabulum] = self.acetabulum_label


def _reach(field: SurfaceField) -> float:
    """Radius (mm) of the ball around the head that the split covers: the acetabulum's reach and 2 mm."""
    return schema.ACETABULUM_RADIUS_FACTOR * field.radius + 2.0


def hip_region(image, bone, spacing, field: SurfaceField) -> HipRegion | None:
    """Copy the box around a fitted head to the host (None when it lies outside the volume).

    Parameters
    ----------
    image, bone : (R, A, S) arrays
        CT (HU) and bone mask; NumPy or CuPy.
    spacing : tuple of 3 float
    field : SurfaceField
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    reach = _reach(field)
    centre_index = field.center / spacing
    lo = np.maximum(np.floor(centre_index - reach / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(centre_index + reach / spacing).astype(int) + 1, bone.shape)
    if np.any(hi <= lo):
        return None
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return HipRegion(box=box, image=np.asarray(to_host(image[box]), dtype=np.float32),
                     bone=np.asarray(to_host(bone[box]), dtype=bool))


def _radii_and_lines(grids, rho, where, field: SurfaceField) -> tuple:
    """Distance (mm) from the head centre and nearest line of the box's voxels ``where`` (index arrays)."""
    offsets = np.stack([np.broadcast_to(g, rho.shape)[where] for g in grids], axis=1)
    r = rho[where]
    return r, field.nearest(offsets / np.maximum(r, 1e-9)[:, None])


def _joint_soft_tissue(smooth, grids, rho, field: SurfaceField):
    """The box's voxels of fat in the joint: below :data:`JOINT_SOFT_TISSUE_HU` beyond the head's
    surface where a socket covers it, joined face to face through such voxels to fat in the joint
    band (between the head's and the socket's surfaces, the lines' edges moved by the cortex offset).

    This is how the fossa's fat pad is told from the socket's bone: the fossa opens onto the joint
    and is floored by the thin medial wall, so its fat reaches the band through voxels that stay
    dark. BE fills it (head and socket enclose it, a cavity at coarse voxels); CT alone could not
    tell it from fatty marrow, which the subchondral plate walls off from the joint. Cartilage reads
    as soft tissue, above the level: the joint space itself is judged on the edges (:func:`split_hip`).

    Returns
    -------
    (X, Y, Z) bool ndarray
    """
    dark = (smooth < JOINT_SOFT_TISSUE_HU) & (rho <= schema.ACETABULUM_RADIUS_FACTOR * field.radius)
    # Only a shell around the head can be beyond its surface (the lookup is the costly part).
    dark &= rho > 0.7 * field.radius
    where = np.nonzero(dark)
    r, line = _radii_and_lines(grids, rho, where, field)
    beyond = field.covered[line] & (r > field.head[line] + field.edge_offset)
    domain = np.zeros(rho.shape, dtype=bool)
    domain[tuple(w[beyond] for w in where)] = True
    parts, count = ndi.label(domain)  # faces only: a diagonal step is not a passage
    # Seeds in the band to the socket's edge moved by the whole offset, wider than the joint band of
    # :func:`split_hip` (SOCKET_EDGE_SHIFT): a seed only says "fat joined to the joint", and the dark
    # level judges every voxel.
    seeds = beyond & (r < field.socket[line] - field.edge_offset)
    joined = np.zeros(count + 1, dtype=bool)
    joined[parts[tuple(w[seeds] for w in where)]] = True
    joined[0] = False
    return joined[parts]


def _fossa_walls(image, fossa, bone):
    """The mask's voxels on the fossa's walls that hold less bone than fat.

    A voxel face to face with the fossa's fat (:func:`_joint_soft_tissue`) holds fat and the bone
    beside it; it reads as their mix, so it holds less bone than fat where its CT (unsmoothed) lies
    below half way from the fat beside it (its lowest fossa neighbour, at least
    :data:`FAT_FLOOR_HU`) to the bone beside it (the brightest voxel of ``bone`` among it and its
    neighbours), neighbours within one voxel. The fossa's level (-20 HU) takes the fat; these
    partial-volume voxels read 100-450 HU on the walls of cancellous bone and cortex. The fossa's
    fat may reach beyond the mask, so any mask surface it touches (the head's too) is judged alike.

    Parameters
    ----------
    image : (X, Y, Z) float32 ndarray
        CT (HU).
    fossa, bone : (X, Y, Z) bool ndarray
        The fossa's fat; the bone around it (the mask less the joint's soft tissue).

    Returns
    -------
    (X, Y, Z) bool ndarray
    """
    walls = ndi.binary_dilation(fossa) & bone
    if not walls.any():
        return walls
    fat = np.maximum(ndi.minimum_filter(np.where(fossa, image, np.float32(np.inf)), size=3), FAT_FLOOR_HU)
    solid = ndi.maximum_filter(np.where(bone, image, np.float32(-np.inf)), size=3)
    walls[walls] = image[walls] < 0.5 * (fat[walls] + solid[walls])  # both finite on the walls
    return walls


def split_hip(region: HipRegion, field: SurfaceField, spacing, side: str) -> HipLabels:
    """Split femur from pelvis around one head; the labels 1-4 of ``side``.

    Host work only (no device arrays), so the two sides may run in threads:
    scikit-image's watershed releases the GIL.

    Parameters
    ----------
    region : HipRegion
        From :func:`hip_region`.
    field : SurfaceField
        The head and socket surfaces, from lines cast from (about) the fitted centre.
    spacing : tuple of 3 float
    side : {"left", "right"}
    """
    from skimage.segmentation import watershed

    spacing = np.asarray(spacing, dtype=np.float64)
    center, radius = field.center, field.radius
    reach = _reach(field)
    grids = np.meshgrid(*[(np.arange(b.start, b.stop) * s - c) for b, s, c in zip(region.box, spacing, center)],
                        indexing="ij", sparse=True)
    rho = np.sqrt(grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2)
    inside = region.bone & (rho <= reach)
    where = np.nonzero(inside)
    r, line = _radii_and_lines(grids, rho, where, field)
    head_r, socket_r, covered = field.head[line], field.socket[line], field.covered[line]
    mid = np.where(covered, 0.5 * (head_r + socket_r), head_r + 0.5 * field.mean_gap)

    smooth = ndi.gaussian_filter(region.image, 0.5 / spacing)
    elevation = np.full(rho.shape, np.float32(smooth.max() + PRIOR_RIDGE_HU), dtype=np.float32)
    elevation[where] = -smooth[where] + PRIOR_RIDGE_HU * np.exp(-0.5 * ((r - mid) / PRIOR_RIDGE_MM) ** 2)
    markers = np.zeros(rho.shape, dtype=np.int32)
    # Where no socket covers the head (its neck, its uncovered face) the head is femur out to its
    # surface: its bright cortex then floods the neck's before the pelvis's flood can reach them
    # over a partial-volume bridge (on a severely arthritic anatomic phantom at 1 mm and at
    # 0.8 x 0.8 x 3 mm, the pelvis took the neck and part of the head: acetabulum Dice 0.79 / 0.64).
    femur_seed = (r < head_r - MARKER_DEPTH_MM) | (~covered & (r < head_r))
    # And on the neck's lines beyond the prior's ridge, where the pelvis's flood could otherwise reach
    # the neck first over a partial-volume bridge from the rim or the ischium.
    femur_seed |= field.neck[line] & (r > head_r + MARKER_DEPTH_MM) & (r < head_r + NECK_MARKER_MM)
    pelvis_seed = covered & (r > socket_r + MARKER_DEPTH_MM)
    # The joint's soft tissue. The joint space: voxel centres between the head's edge and the
    # socket's surface (its edge moved by SOCKET_EDGE_SHIFT), where a socket covers the head. At
    # voxels about as coarse as the joint space the mask holds them (a voxel half cartilage, half
    # subchondral plate reads as bone), but what lies at their centres is cartilage. (Judged on the
    # edges moved by the cortex offset, the band cut into head and socket cortex across narrow joint
    # spaces: hard regression seed 5000 right, head Dice 0.987 -> 0.965.) The fossa's fat pad, which
    # opens onto it. Neither bone's flood crosses
    # it: taken out of the watershed's mask, not only out of the labels after it (dev seeds 9100-9107
    # at 3 mm: acetabulum Dice +0.002 on average, 9103 right 0.808 -> 0.830; 0.8 x 0.8 x 3 mm
    # +0.001; 1 mm unchanged). And the fossa's walls where they hold less bone than fat (dev seeds
    # 9100-9107, acetabulum Dice: 3 mm 0.924 -> 0.933, 0.8 x 0.8 x 3 mm 0.926 -> 0.930, 1 mm
    # (9100-9105) 0.960 -> 0.961; osteoporotic 9620-9625 +0.002; hard 5100-5102 unchanged).
    soft = covered & (r > head_r) & (r < socket_r - SOCKET_EDGE_SHIFT * field.edge_offset)
    fossa = _joint_soft_tissue(smooth, grids, rho, field)
    soft |= fossa[where]
    wall_bone = np.zeros(rho.shape, dtype=bool)
    wall_bone[tuple(w[~soft] for w in where)] = True
    soft |= covered & _fossa_walls(region.image, fossa, wall_bone)[where]
    flooded = inside.copy()
    flooded[tuple(w[soft] for w in where)] = False
    markers[tuple(w[femur_seed & ~soft] for w in where)] = 1
    markers[tuple(w[pelvis_seed & ~soft] for w in where)] = 2
    regions = watershed(elevation, markers, mask=flooded)
    region_of = regions[where]
    unreached = region_of == 0
    region_of[unreached] = np.where(covered[unreached] & (r[unreached] > mid[unreached]), 2, 1)

    head_surface = head_r + field.edge_offset
    # On the head's free face (its edge onto soft tissue seen on the line, no bone beyond the sphere) a
    # voxel of the femur's flood centred beyond the surface (within the label's margin) is the
    # cartilage and capsule that coarse voxels blur into the mask. Lines with bone beyond the sphere
    # (the neck, the head-neck junction, osteophytes) keep theirs: a line along the neck may cross
    # its cortex near the sphere and still run in bone beyond.
    soft |= ((region_of == 1) & ~covered & field.free_face[line] & (r > head_surface)
                 & (r <= radius + schema.HEAD_MARGIN_MM))
    is_head = (region_of == 1) & (r <= radius + schema.HEAD_MARGIN_MM) & ~soft
    is_cup = (region_of == 2) & (r <= schema.ACETABULUM_RADIUS_FACTOR * radius) & ~soft
    head_label, cup_label = schema.SIDE_LABELS[side]

    def in_volume(selected):  # box indices of the selected mask voxels -> the volume's
        return tuple(w[selected] + b.start for w, b in zip(where, region.box))

    return HipLabels(head=in_volume(is_head), acetabulum=in_volume(is_cup), soft_tissue=in_volume(soft),
                     head_label=head_label, acetabulum_label=cup_label)
