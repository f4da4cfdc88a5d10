"""Joint spaces: thin dark sheets between two bright bone plates.

A 1 mm joint space on a 1 mm grid is resolved as a valley (about 250 HU
between cortices of about 1000 HU on the hard phantoms), but its voxels lie
in the intensity model's neutral zone and inside the closed bone shells, so
the interior prior makes them bone. :func:`dark_sheets` finds them by shape:
a voxel darker than the bone shells with cortical bone on both sides within
a couple of millimetres along some direction, where the local intensity is a
sheet (Hessian: one large positive curvature across it, small ones along it;
a dark pocket or canal curves up in two or three directions).

Every function takes NumPy or CuPy arrays and returns arrays of the same kind.
"""

from __future__ import annotations

import numpy as np

from ..device import get_array_module
from ..morphology import maximum_filter1d, ndimage_for

__all__ = ["dark_sheets", "joint_valleys"]

# One direction of each opposite pair of the 26-neighbourhood.
_DIRECTIONS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1),
               (0, 1, -1), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1)]


def _sampler(image, coords, reach: int):
    """A function ``offset -> image at coords + offset`` (positions clipped to the array), for offsets
    of at most ``reach`` voxels per axis.

    The image is padded once by edge replication (the same values as clipping each position) and
    read through flat indices: one addition and one gather per offset.
    """
    xp = get_array_module(image)
    padded = xp.pad(image, reach, mode="edge")
    stride_i, stride_j = padded.shape[1] * padded.shape[2], padded.shape[2]
    flat = padded.ravel()
    base = (coords[0] + reach) * stride_i + (coords[1] + reach) * stride_j + (coords[2] + reach)

    def at(offset):
        return flat[base + (offset[0] * stride_i + offset[1] * stride_j + offset[2])]

    return at


def _plates_around(image, spacing, *, dark_hu: float, bright_hu: float, reach_mm: float):
    """Voxels below ``dark_hu`` with bright bone (at or above ``bright_hu``) within ``reach_mm``, and
    for each of the 13 directions whose step is within reach, the dimmer of the two brightest
    values found on either side along it.

    Returns
    -------
    coords : tuple of 3 index arrays
        The candidate voxels (empty when there are none).
    value : array
        Their values.
    dimmer : list of arrays
        Per tested direction, ``min(max on the + side, max on the - side)`` for each candidate.
    """
    xp = get_array_module(image)
    spacing = [float(s) for s in spacing]
    # Only voxels with bright bone within reach (a separable box dilation) are candidates.
    near = (image >= np.float32(bright_hu)).view(xp.uint8)
    for axis, s in enumerate(spacing):
        r = int(np.floor(reach_mm / s + 1e-9))
        if r >= 1:
            near = maximum_filter1d(near, 2 * r + 1, axis=axis, mode="constant", cval=0)
    coords = xp.nonzero((image < np.float32(dark_hu)) & near.astype(bool))
    steps = {d: int(np.floor(reach_mm / float(np.linalg.norm(np.multiply(d, spacing))) + 1e-9)) for d in _DIRECTIONS}
    if int(coords[0].size) == 0 or max(steps.values()) < 1:
        return coords, image[coords], []
    at = _sampler(image, coords, max(steps.values()))
    dimmer = []
    for d in _DIRECTIONS:
        if steps[d] < 1:
            continue
        sides = []
        for sign in (1, -1):
            side = at(tuple(sign * x for x in d))
            for k in range(2, steps[d] + 1):
                side = xp.maximum(side, at(tuple(sign * k * x for x in d)))
            sides.append(side)
        dimmer.append(xp.minimum(sides[0], sides[1]))
    return coords, at((0, 0, 0)), dimmer


def dark_sheets(image, spacing, *, dark_hu: float, bright_hu: float, reach_mm: float = 2.0,
                max_ratio: float = 0.5):
    """Voxels at the centre of a thin dark sheet between two bright plates (a narrow joint space).

    Parameters
    ----------
    image : (X, Y, Z) float32 array
    spacing : tuple of 3 float
    dark_hu : float
        The sheet's voxels are below this (the bone-shell level).
    bright_hu : float
        Both plates reach at least this (the cortical seed level) within
        ``reach_mm`` of the voxel, on opposite sides along one of the 13
        directions of the 26-neighbourhood. Directions whose step is longer
        than ``reach_mm`` are not tested (3 mm slices: in-plane only).
    max_ratio : float
        Sheet-ness: the second largest eigenvalue of the Hessian (of the
        image smoothed by a [1, 2, 1] kernel) is below this fraction of the
        largest, which is positive (dark across the sheet).

    Returns
    -------
    bool array
    """
    xp = get_array_module(image)
    ndi = ndimage_for(image)
    spacing = [float(s) for s in spacing]
    out = xp.zeros(image.shape, dtype=bool)
    coords, _, dimmer = _plates_around(image, spacing, dark_hu=dark_hu, bright_hu=bright_hu, reach_mm=reach_mm)
    if not dimmer:
        return out
    between = xp.zeros(coords[0].shape, dtype=bool)
    for plate in dimmer:
        between |= plate >= np.float32(bright_hu)
    coords = tuple(c[between] for c in coords)
    if int(coords[0].size) == 0:
        return out
    smooth = image
    for axis in range(3):
        smooth = ndi.correlate1d(smooth, xp.asarray([0.25, 0.5, 0.25], dtype=xp.float32), axis=axis, mode="nearest")
    hessian = xp.zeros((coords[0].size, 3, 3), dtype=xp.float32)
    at = _sampler(smooth, coords, 1)
    centre = at((0, 0, 0))
    for i in range(3):
        e = [0, 0, 0]
        e[i] = 1
        plus, minus = tuple(e), tuple(-x for x in e)
        hessian[:, i, i] = (at(plus) - 2 * centre + at(minus)) / spacing[i] ** 2
        for j in range(i + 1, 3):
            def at_ij(a, b):
                offset = [0, 0, 0]
                offset[i], offset[j] = a, b
                return at(tuple(offset))
            cross = (at_ij(1, 1) - at_ij(1, -1) - at_ij(-1, 1) + at_ij(-1, -1)) / (4 * spacing[i] * spacing[j])
            hessian[:, i, j] = cross
            hessian[:, j, i] = cross
    eigen = xp.linalg.eigvalsh(hessian)  # ascending
    sheet = (eigen[:, 2] > 0) & (eigen[:, 1] < np.float32(max_ratio) * eigen[:, 2])
    out[tuple(c[sheet] for c in coords)] = True
    return out


def joint_valleys(light, spacing, *, bright_hu: float, soft_hu: float, reach_mm: float = 3.0, depth: float = 0.25):
    """Voxels in a valley between two bright plates whose bottom is nearer soft tissue than the plates.

    A resolved joint space between a femoral head and its socket (cartilage, 60-100 HU, 2-5 mm
    between two subchondral plates) is, along the line across it, darker than ``depth`` of the
    way from soft tissue to the dimmer of the two plates, which reach ``bright_hu`` within
    ``reach_mm`` on either side. Smoothing, which averages trabeculae into cancellous bone's density, would lift
    it into cancellous levels; these voxels are kept out of the cancellous shells. A darker pocket
    inside cancellous bone lies between trabeculae that stay below ``bright_hu``, or is not that
    deep, and is not a valley; nor is the marrow of a thin bone between two cortices.

    Parameters
    ----------
    light : (X, Y, Z) float32 array
        CT in HU (NumPy or CuPy) smoothed by a Gaussian of half a voxel (the noise of single
        voxels must not make a valley).
    spacing : tuple of 3 float
    bright_hu : float
        Level both plates reach (the bone-shell level).
    soft_hu : float
        The soft-tissue level of the volume.
    reach_mm : float
        How far on either side the plates are looked for, along the 13 directions of the
        26-neighbourhood (directions whose step is longer are not tested).
    depth : float
        The valley's bottom lies below ``soft_hu + depth * (plate - soft_hu)``: a quarter of the
        way keeps the marrow of a thin bone between two cortices (300 HU between 900 HU plates)
        out, and cartilage (near soft tissue) in.

    Returns
    -------
    bool array
    """
    xp = get_array_module(light)
    out = xp.zeros(light.shape, dtype=bool)
    coords, value, dimmer = _plates_around(light, spacing, dark_hu=bright_hu, bright_hu=bright_hu, reach_mm=reach_mm)
    if not dimmer:
        return out
    soft = np.float32(soft_hu)
    valley = xp.zeros(value.shape, dtype=bool)
    for plate in dimmer:
        valley |= (plate >= np.float32(bright_hu)) & (value < soft + np.float32(depth) * (plate - soft))
    out[tuple(c[valley] for c in coords)] = True
    return out
