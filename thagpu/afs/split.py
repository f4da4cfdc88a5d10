"""Femur versus pelvis across the joint space, and the schema's hip labels.

Around a fitted head, the bone is split by a marker-controlled watershed
(scikit-image) on the CT turned upside down, so the two floods meet in the
darkest layer between them, which is the joint space. Femur markers lie well
inside the head, pelvis markers in the socket wall beyond its inner surface.
Where head and socket touch (a joint space of 0 to 1 mm, common in
osteoarthritis) the CT has no dark layer to follow, so the elevation also
carries a ridge on the fitted mid-joint surface (the anatomy prior).
The femur is then what the head flood reached; bone that neither flood
reached is assigned by that surface.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .. import labels as schema
from ..device import to_host
from .angles import rim_plane
from .boundary import RadialBoundary

__all__ = ["SurfaceField", "split_and_label"]

#: Height (HU) of the prior ridge on the mid-joint surface in the watershed elevation.
PRIOR_RIDGE_HU = 400.0
#: Width (mm, standard deviation) of that ridge.
PRIOR_RIDGE_MM = 1.0
#: Femur markers lie this far (mm) inside the head surface, pelvis markers this far beyond the socket's.
MARKER_DEPTH_MM = 2.5


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # lines with no measured neighbour
            fill = np.nanmedian(head[near[:, 1:]], axis=1)
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
        seen = ~boundary.outside
        self.rim_axis, self.rim_error_fraction = None, 1.0
        if raw[seen].sum() >= 10 and (~raw[seen]).sum() >= 10:
            self.rim_axis, threshold, self.rim_error_fraction = rim_plane(self.directions[seen], raw[seen])
            raw = raw & (self.directions @ self.rim_axis <= threshold + 0.05)
        self.covered = raw[near].mean(axis=1) >= 0.5
        gaps = (socket_r - self.head)[has_socket]
        #: Mean joint space where the socket's surface was seen (0 when it never was).
        self.mean_gap = float(np.mean(gaps)) if gaps.size else 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # lines with no measured neighbour
            socket_fill = np.nanmedian(socket_r[near], axis=1)
        socket_fill = np.where(np.isfinite(socket_fill), socket_fill, self.head + self.mean_gap)
        self.socket = np.where(self.covered, np.where(has_socket, socket_r, socket_fill), np.nan)
        self.measured_socket = has_socket & self.covered

    def lookup(self, unit):
        """Head radius, socket radius (NaN where uncovered) and coverage for unit vectors (N, 3)."""
        _, index = self.tree.query(unit, workers=-1)
        return self.head[index], self.socket[index], self.covered[index]


def split_and_label(image, bone, spacing, boundary: RadialBoundary, side: str, labels):
    """Split femur from pelvis around one head and write labels 1-4 of ``side`` into ``labels``.

    Parameters
    ----------
    image, bone : (R, A, S) arrays
        CT (HU) and bone mask; NumPy or CuPy (the region of interest is
        copied to the host).
    spacing : tuple of 3 float
    boundary : RadialBoundary
        Cast from the fitted centre, in the array's millimetre frame.
    side : {"left", "right"}
    labels : (R, A, S) uint8 ndarray
        Host label map, already holding ``OTHER_BONE`` on the bone; modified in place.

    """
    from skimage.segmentation import watershed

    spacing = np.asarray(spacing, dtype=np.float64)
    field = SurfaceField(boundary)
    center, radius = field.center, field.radius
    reach = schema.ACETABULUM_RADIUS_FACTOR * radius + 2.0
    centre_index = center / spacing
    lo = np.maximum(np.floor(centre_index - reach / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(centre_index + reach / spacing).astype(int) + 1, labels.shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    bone_roi = np.asarray(to_host(bone[box]), dtype=bool)
    image_roi = np.asarray(to_host(image[box]), dtype=np.float32)
    grids = np.meshgrid(*[(np.arange(a, b) * s - c) for a, b, s, c in zip(lo, hi, spacing, center)],
                        indexing="ij", sparse=True)
    rho = np.sqrt(grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2)
    inside = bone_roi & (rho <= reach)
    where = np.nonzero(inside)
    offsets = np.stack([np.broadcast_to(g, rho.shape)[where] for g in grids], axis=1)
    r = rho[where]
    unit = offsets / np.maximum(r, 1e-9)[:, None]
    head_r, socket_r, covered = field.lookup(unit)
    mid = np.where(covered, 0.5 * (head_r + socket_r), head_r + 0.5 * field.mean_gap)

    smooth = ndi.gaussian_filter(image_roi, 0.5 / spacing)
    elevation = np.full(rho.shape, np.float32(smooth.max() + PRIOR_RIDGE_HU), dtype=np.float32)
    elevation[where] = -smooth[where] + PRIOR_RIDGE_HU * np.exp(-0.5 * ((r - mid) / PRIOR_RIDGE_MM) ** 2)
    markers = np.zeros(rho.shape, dtype=np.int32)
    femur_seed = r < head_r - MARKER_DEPTH_MM
    pelvis_seed = covered & (r > socket_r + MARKER_DEPTH_MM)
    markers[tuple(w[femur_seed] for w in where)] = 1
    markers[tuple(w[pelvis_seed] for w in where)] = 2
    regions = watershed(elevation, markers, mask=inside)
    region = regions[where]
    unreached = region == 0
    region[unreached] = np.where(covered[unreached] & (r[unreached] > mid[unreached]), 2, 1)

    head_label, cup_label = schema.SIDE_LABELS[side]
    femur = region == 1
    pelvis = region == 2
    is_head = femur & (r <= radius + schema.HEAD_MARGIN_MM)
    is_cup = pelvis & (r <= schema.ACETABULUM_RADIUS_FACTOR * radius)
    roi_labels = labels[box]
    roi_labels[tuple(w[is_head] for w in where)] = head_label
    roi_labels[tuple(w[is_cup] for w in where)] = cup_label
