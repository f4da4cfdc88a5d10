"""Coarse-to-fine BE: the bone found on a coarser grid, its surface placed again at full resolution.

At sub-millimetre pixels the full-resolution BE does several times the work of a 1 mm one for the
same anatomy, and does it worse: the blur of a bright cortex is two or three voxels wide there,
and its rim rules, which count voxels, keep part of it (``docs/bone_extraction.md``, "Limits
seen"). What needs the fine grid is where the surface lies, not which voxels are bone, joint space
or vessel: on dev phantoms at 0.65 x 0.65 x 0.8 mm, BE on the 2 x 2 in-plane block means had the
right topology (its errors were all within a fine voxel of its surface), and the surface placed
again at full resolution scored above the full-resolution BE. So :func:`thagpu.bone.extract_bone`
runs the whole BE on block means of the axes finer than ``BoneConfig.coarse_below_mm``, repeats
its mask back onto the grid and re-decides, at full resolution, only the voxels within one fine
voxel of its surface along the reduced axes (:func:`surface_band`):

1. the half-maximum rule (:func:`thagpu.bone.halfmax.half_max_tilt`): a voxel brighter than half
   way between the darkest and brightest values within ``radius_mm`` is bone, a darker one is not,
   a flat neighbourhood (no surface) keeps the coarse answer;
2. the resolved-rim trim (:func:`thagpu.bone.cleanup.trim_resolved_rim`) over the refined mask.

Where the block means took away much of the noise (:data:`SHARP_NOISE_RATIO`: a sharp kernel),
they took the detail such a kernel keeps with it, and the volume is solved at full resolution.

A graph cut of the band (the intensity costs, the tilt and the boundary weights, its outside fixed
to the coarse answer) was tried and did no better than the tilt's sign (0.9748 against 0.9758 on
dev seed 7001 before the trim): the coarse topology is right, and the placement is the rule's.

Every function takes NumPy or CuPy arrays and returns arrays of the same kind.
"""

from __future__ import annotations

import numba
import numpy as np

from ..device import get_array_module
from ..morphology import box_dilation, ndimage_for
from .halfmax import half_max_tilt

__all__ = ["coarse_factors", "upsample_mask", "surface_band", "refine_surface", "band_half_max_tilt",
           "SHARP_NOISE_RATIO"]

#: Block size along an axis finer than ``BoneConfig.coarse_below_mm``: 0.65 mm pixels solve at 1.3 mm.
COARSE_BLOCK = 2
#: Block means lower a white noise's SD by up to the block's square root, a correlated one's hardly:
#: where the fine grid's noise (:func:`~thagpu.bone.intensity.local_noise`) is at least this many
#: times the coarse grid's, the series was reconstructed with a sharp (bone) kernel, whose detail
#: the block means take away with its noise, and the volume is solved at full resolution. On the
#: dev phantoms at 0.8 x 0.8 x 3 mm the ratio was 0.94 for the standard kernel and 1.30-1.31 for
#: the sharp one; on the real abdomen series in ``../shared/data`` (0.98 mm pixels), 1.10. The
#: case that set it: an osteoporotic skeleton through a sharp kernel (dev seed 9724 of
#: ``anatomic_sharp_kernel``), whose faint pelvis the block means lost (bone Dice 0.69 against
#: 0.86 at full resolution at 0.8 x 0.8 x 3 mm).
SHARP_NOISE_RATIO = 1.2
#: The half-maximum tilt's smoothing (voxels) and box half-width (mm), as in the full-resolution energy.
REFINE_SMOOTH_VOX = 0.5
REFINE_RADIUS_MM = 2.0


def coarse_factors(spacing, below_mm: float) -> tuple:
    """The block size per axis of the coarse BE: ``COARSE_BLOCK`` along axes finer than ``below_mm``.

    ``below_mm`` 0 (or any axis of none finer) gives ``(1, 1, 1)``: no coarse-to-fine BE.
    """
    return tuple(COARSE_BLOCK if below_mm > 0 and float(s) < below_mm else 1 for s in spacing)


def upsample_mask(mask, factors, shape):
    """A coarse mask repeated back onto the fine grid of ``shape`` (the padded edge blocks cut off)."""
    xp = get_array_module(mask)
    fine = mask
    for axis, f in enumerate(factors):
        if f > 1:
            fine = xp.repeat(fine, f, axis=axis)
    return xp.ascontiguousarray(fine[: shape[0], : shape[1], : shape[2]])


def surface_band(mask, factors):
    """The voxels within one voxel of ``mask``'s surface along the reduced axes (both sides)."""
    radius = [1 if f > 1 else 0 for f in factors]
    return box_dilation(mask, radius) & box_dilation(~mask, radius)


def refine_surface(mask, image, spacing, factors, *, min_span_hu: float, radius_mm: float = REFINE_RADIUS_MM):
    """Re-decide the surface band of a repeated coarse mask by the half-maximum rule at full resolution.

    Parameters
    ----------
    mask : (X, Y, Z) bool array
        The coarse BE's mask on the fine grid (:func:`upsample_mask`).
    image : (X, Y, Z) float32 array
        The CT in HU at full resolution.
    spacing : tuple of 3 float
        Its voxel size (mm).
    factors : tuple of 3 int
        The coarse block size per axis: the band reaches one voxel along the axes reduced.
    min_span_hu : float
        Where the brightest and darkest values around a voxel differ by less, there is no surface
        and the coarse answer stays (the caller's: 6 noise SDs of the coarse grid, at least
        ``BoneConfig.half_max_min_span_hu``).
    radius_mm : float
        Half-width of the box the two sides are looked for in.

    Returns
    -------
    refined : (X, Y, Z) bool array
    band : (X, Y, Z) bool array
        The voxels re-decided.
    """
    xp = get_array_module(mask)
    ndi = ndimage_for(image)
    band = surface_band(mask, factors)
    if not bool(band.any()):
        return mask.copy(), band
    # Only the box around the band is smoothed (the band, widened by the tilt's own reach).
    reach = [max(1, int(round(radius_mm / s))) + 3 for s in spacing]  # the tilt's box and the smoothing's 2 voxels
    nonzero = [xp.flatnonzero(band.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    box = tuple(slice(max(0, int(n[0]) - r), min(size, int(n[-1]) + 1 + r))
                for n, r, size in zip(nonzero, reach, image.shape))
    light = ndi.gaussian_filter(image[box], REFINE_SMOOTH_VOX, mode="nearest")
    refined = mask.copy()
    refined_box = refined[box]
    if xp is np:
        # The band is a few percent of the box: its extremes voxel by voxel, compiled, instead of
        # six whole-box 1-D filters (about 0.5 s against 5.5 s at 107 M voxels, the same values).
        points = np.nonzero(band[box])
        tilt = band_half_max_tilt(light, points, spacing, radius_mm=radius_mm, min_span_hu=min_span_hu)
        decided = tilt != 0
        refined_box[tuple(p[decided] for p in points)] = tilt[decided] > 0
    else:
        tilt = half_max_tilt(light, spacing, radius_mm=radius_mm, min_span_hu=min_span_hu, level=0.5)
        decided = band[box] & (tilt != 0)
        refined_box[decided] = tilt[decided] > 0
    return refined, band


def band_half_max_tilt(light, points, spacing, *, radius_mm: float, min_span_hu: float, level: float = 0.5):
    """:func:`thagpu.bone.halfmax.half_max_tilt` at the voxels ``points`` only (NumPy).

    Parameters
    ----------
    light : (X, Y, Z) float32 ndarray
        The lightly smoothed CT.
    points : tuple of 3 int ndarrays
        The voxels' indices (as from ``numpy.nonzero``).
    spacing, radius_mm, min_span_hu, level
        As for :func:`~thagpu.bone.halfmax.half_max_tilt`.

    Returns
    -------
    (N,) float32 ndarray
        The tilt at each voxel: the same values as ``half_max_tilt(light, ...)[points]``.
    """
    radius = np.array([max(1, int(round(radius_mm / s))) for s in spacing], dtype=np.int64)
    light = np.ascontiguousarray(light, dtype=np.float32)
    coords = [np.ascontiguousarray(p, dtype=np.int64) for p in points]
    high, low = _box_extremes_at(light, coords[0], coords[1], coords[2], radius)
    span = high - low
    position = (light[tuple(coords)] - low) / np.maximum(span, np.float32(1.0))
    tilt = np.clip((position - np.float32(level)) / np.float32(0.25), -1.0, 1.0).astype(np.float32)
    return np.where(span >= np.float32(min_span_hu), tilt, np.float32(0.0))


@numba.njit(parallel=True, nogil=True, cache=True)
def _box_extremes_at(light, xs, ys, zs, radius):
    """Maximum and minimum of ``light`` in the box of half-width ``radius`` around each point, the box
    clipped at the array's sides (the extremes of ``mode="nearest"``)."""
    n = xs.size
    high = np.empty(n, np.float32)
    low = np.empty(n, np.float32)
    nx, ny, nz = light.shape
    for i in numba.prange(n):
        x0, x1 = max(xs[i] - radius[0], 0), min(xs[i] + radius[0] + 1, nx)
        y0, y1 = max(ys[i] - radius[1], 0), min(ys[i] + radius[1] + 1, ny)
        z0, z1 = max(zs[i] - radius[2], 0), min(zs[i] + radius[2] + 1, nz)
        top = light[xs[i], ys[i], zs[i]]
        bottom = top
        for x in range(x0, x1):
            for y in range(y0, y1):
                for z in range(z0, z1):
                    value = light[x, y, z]
                    if value > top:
                        top = value
                    elif value < bottom:
                        bottom = value
        high[i] = top
        low[i] = bottom
    return high, low
