"""Where a blurred bone surface lies: the half-maximum rule, as a unary tilt.

A CT blurs every surface by its point-spread function and the voxel size, so
the voxels across a bone surface take every value between the bone's and the
soft tissue's. For a surface blurred by a symmetric PSF, the voxels whose
value is above half-way between the two sides are those whose centre lies in
the bone (the full-width-at-half-maximum rule). The intensity model cannot
use it: which two levels meet differs from surface to surface (a 1500 HU
femoral cortex, a 400 HU lamina seen through 2 mm slices, 250 HU cancellous
bone under a missing cortex), so it leaves the whole range between soft
tissue and clear bone neutral. Locally the two sides are known: the brightest
and darkest values within a couple of millimetres. :func:`half_max_tilt`
scores each voxel by its position between them, and the energy turns that
score into a small unary preference (``BoneConfig.half_max_weight``): thin
bones whose surfaces are all partial volume (laminae, processes, ribs, a
thin osteoporotic cortex) keep their extent, and the partial-volume rim just
outside a bright cortex stays soft tissue.

Every function takes NumPy or CuPy arrays and returns arrays of the same kind.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from ..device import get_array_module
from ..morphology import distance_to, fill_holes_2d, maximum_filter1d, minimum_filter1d, ndimage_for

__all__ = ["central_difference_at", "half_max_tilt", "soft_side_rim", "thin_cortex_level", "uphill_from_outside"]

#: The soft-side rim is followed inwards from outside the bone only along axes finer than this (mm).
#: Along a coarser axis the blur's rim is a voxel at most (``cleanup.trim_resolved_rim`` judges it),
#: and one step reaches so deep that it enters the marrow of a thin osteoporotic bone: on the
#: osteoporotic phantoms at 0.8 x 0.8 x 3 mm, steps along the slices lost bone; in-plane steps did not.
RIM_FOLLOW_MAX_SPACING_MM = 1.5


def thin_cortex_level(spacing, *, cortex_mm: float, psf_sigma_mm: float, smooth_vox: float,
                      inner_fraction: float = 0.2) -> float:
    """Where the true surface of a thin cortex lies on its blurred edge, as a fraction of its peak.

    A cortex of thickness ``t`` over cancellous bone (``inner_fraction`` of the cortex's height
    above soft tissue), seen through a Gaussian blur of ``sigma^2 = psf^2 + h^2 / 12 +
    (smooth_vox h)^2`` (PSF, voxel box, the light smoothing) reads, at its true surface,
    ``P(0) / max P`` of its blurred peak: 0.5 for a cortex much thicker than the blur, 0.6 for
    2 mm at 1 mm voxels, 0.8 at 3 mm voxels (``h``: the mean voxel size, since surfaces face
    every way).

    Parameters
    ----------
    spacing : tuple of 3 float
        Voxel size (mm).
    cortex_mm : float
        Cortical thickness assumed (mm).
    psf_sigma_mm : float
        The scanner's point-spread function, as a Gaussian SD (mm).
    smooth_vox : float
        SD (voxels) of the smoothing applied before the tilt.
    inner_fraction : float
        Cancellous bone's height above soft tissue as a fraction of the cortex's.

    Returns
    -------
    float
        The level, in [0.5, 1).
    """
    h = float(np.mean(spacing))
    sigma = float(np.sqrt(psf_sigma_mm ** 2 + h * h / 12.0 + (smooth_vox * h) ** 2))
    x = np.linspace(-6.0 * sigma, cortex_mm + 6.0 * sigma, 4001)
    profile = ndtr(x / sigma) - (1.0 - inner_fraction) * ndtr((x - cortex_mm) / sigma)
    at_surface = 0.5 - (1.0 - inner_fraction) * float(ndtr(-cortex_mm / sigma))
    return float(np.clip(at_surface / profile.max(), 0.5, 0.95))


def half_max_tilt(light, spacing, *, radius_mm: float = 2.0, min_span_hu: float = 150.0, level: float = 0.5,
                  with_half: bool = False):
    """Each voxel's position between the darkest and brightest CT values around it, in [-1, 1].

    Parameters
    ----------
    light : (X, Y, Z) float32 array
        CT in HU, NumPy or CuPy, smoothed by about half a voxel, so that the extremes are not
        those of the noise.
    spacing : tuple of 3 float
        Voxel size (mm) along the array axes.
    radius_mm : float
        Half-width (mm) of the box in which the two sides are looked for (at least one voxel).
    min_span_hu : float
        Where the brightest and darkest values around differ by less than this, there is no
        surface to place: the tilt is 0.
    level : float
        Where between the darkest (0) and brightest (1) value the surface lies. 0.5 for a step
        between two thick layers; a cortex thinner than the blur reads lower than it is at its
        peak, and its true surface lies higher up the blurred edge (see ``BoneConfig.half_max_level``).
    with_half : bool
        Also return the tilt at the half maximum (``level`` 0.5) from the same extremes.

    Returns
    -------
    tilt : (X, Y, Z) float32 array
        ``(I - (min + level (max - min))) / (0.25 (max - min))`` clipped to [-1, 1]: positive on
        the bone side of a surface, negative on the soft side.
    half_tilt : (X, Y, Z) float32 array
        Only with ``with_half``: the same at ``level`` 0.5.
    """
    xp = get_array_module(light)
    size = [2 * max(1, int(round(radius_mm / s))) + 1 for s in spacing]
    # Separable box extremes: linear in the volume whatever the radius.
    high, low = light, light
    for axis, n in enumerate(size):
        high = maximum_filter1d(high, n, axis=axis, mode="nearest")
        low = minimum_filter1d(low, n, axis=axis, mode="nearest")
    span = high - low
    position = (light - low) / xp.maximum(span, np.float32(1.0))
    surface = span >= np.float32(min_span_hu)

    def tilt_at(at):
        tilt = xp.clip((position - np.float32(at)) / np.float32(0.25), -1.0, 1.0)
        return xp.where(surface, tilt, np.float32(0.0)).astype(xp.float32)

    return (tilt_at(level), tilt_at(0.5)) if with_half else tilt_at(level)


def central_difference_at(array, at, axis: int):
    """``scipy.ndimage.correlate1d(array, [-0.5, 0, 0.5], axis, mode="nearest")`` at the voxels ``at``
    (a tuple of index arrays) only: the same float32 values (SciPy sums in float64), without a
    pass over the whole array."""
    xp = get_array_module(array)
    n = array.shape[axis]
    ahead, behind = list(at), list(at)
    ahead[axis] = xp.minimum(at[axis] + 1, n - 1)
    behind[axis] = xp.maximum(at[axis] - 1, 0)
    return ((array[tuple(ahead)].astype(xp.float64) - array[tuple(behind)].astype(xp.float64))
            * 0.5).astype(xp.float32)


def soft_side_rim(region, light, tilt, spacing, *, rim_mm: float, min_rise_hu_per_mm: float,
                  noise_hu: float = 0.0, max_hole_mm2: float | None = None, follow_mm: float = 1.8):
    """The voxels of a smoothed bone region that lie outside the bone's surface.

    A region found on a smoothed image (:func:`thagpu.bone.seeds.cancellous_region`) reaches
    beyond a bright cortex by up to about twice the smoothing width. Those voxels are the
    partial-volume rim on the soft side of the surface: below the half maximum (``tilt < 0``),
    and on a steep rise of the CT towards the region's inside (the edge of a cortex, hundreds
    of HU per mm). A dark pocket of cancellous bone just inside a cortex is below the half
    maximum too, but the CT rises outwards from it, towards the cortex; the marrow in the middle
    of a thin bone (a spinous process) has cortex on both sides, and no steep rise inwards.

    The blur's tail is wider than its steep part: the scanner's PSF (about 0.5 mm SD) lifts soft
    tissue 1-2 mm outside a 1300 HU cortex to 70-200 HU, where it rises by tens of HU per mm only. At
    1 mm voxels that is one voxel, at 0.65 mm two or three, and the smoothed region holds them all
    (on a phantom at 0.65 x 0.65 x 0.8 mm, 500,000 voxels of halo, 12 % of the bone). So the rim
    also holds the voxels below the half maximum that are reached from outside the region by a path
    of such voxels along which the CT never falls inwards by more than ``noise_hu``
    (:func:`uphill_from_outside`): a blurred surface rises monotonically towards its cortex, and the
    path to a dark pocket inside a bone must come down from the cortex first. Holes of the region
    in an axial slice (marrow darker than the smoothing's threshold) are not its outside. The
    paths are short (``follow_mm``) and run along fine axes only (``RIM_FOLLOW_MAX_SPACING_MM``).

    Parameters
    ----------
    region : (X, Y, Z) bool array
        NumPy or CuPy.
    light : (X, Y, Z) float32 array
        The CT lightly smoothed (that of :func:`half_max_tilt`).
    tilt : (X, Y, Z) float32 array
        :func:`half_max_tilt` of ``light``.
    spacing : tuple of 3 float
        Voxel size (mm) along the array axes.
    rim_mm : float
        Depth (mm) from the region's surface within which voxels are looked at (at least the
        outermost layer of voxels).
    min_rise_hu_per_mm : float
        How steeply (HU per mm) the CT must rise towards the region's inside.
    noise_hu : float
        How far (HU) the CT of ``light`` may fall along a path followed inwards (its noise).
    max_hole_mm2 : float, optional
        Largest hole of the region in an axial slice (mm^2) that is not its outside; None: no path
        is followed (the steep rim only). 0 fills no slice hole, so the paths also start in the
        marrow of thin bones (``BoneConfig.max_slice_hole_mm2`` = 0 has that effect).
    follow_mm : float
        Length of the paths followed: ``ceil(follow_mm / h)`` steps, ``h`` the finest axis followed
        (so up to a voxel longer, and longer along coarser followed axes). About 3 PSF SDs, as far as
        the blur lifts soft tissue. Longer paths enter the cancellous bone behind gaps in a cortex:
        on the real abdominal series (0.98 mm pixels) paths of 3 steps took 137 voxels above
        200 HU out of its vertebrae, of 2 steps 63.

    Returns
    -------
    (X, Y, Z) bool array
        The rim voxels on the soft side of a surface.
    """
    xp = get_array_module(light)
    ndi = ndimage_for(light)
    if not bool(region.any()):
        return xp.zeros(region.shape, dtype=bool)
    rim = region & (distance_to(~region, spacing) <= np.float32(max(rim_mm, min(spacing))))
    # Inwards: up the region's indicator smoothed by a voxel. The rise of the CT along that
    # direction (HU per mm) is the gradient of the CT projected on it.
    # Only the rim's voxels below the half maximum are asked, so the gradients are taken there alone.
    inside = ndi.gaussian_filter(region.astype(xp.float32), 1.0, mode="nearest")
    soft = rim & (tilt < 0)
    at = xp.nonzero(soft)
    rise = xp.zeros(at[0].shape, dtype=xp.float32)
    norm = xp.zeros(at[0].shape, dtype=xp.float32)
    for axis, step in enumerate(spacing):
        slope = central_difference_at(inside, at, axis) / np.float32(step)
        rise += central_difference_at(light, at, axis) / np.float32(step) * slope
        norm += slope * slope
    rise /= xp.sqrt(norm) + np.float32(1e-6)
    steep = xp.zeros(soft.shape, dtype=bool)
    steep[at] = rise >= np.float32(min_rise_hu_per_mm)
    axes = [a for a, s in enumerate(spacing) if s < RIM_FOLLOW_MAX_SPACING_MM]
    if max_hole_mm2 is None or not axes:
        return steep
    # The canonical slice axis is the last (S); its in-plane pixel area converts the hole size.
    outside = ~fill_holes_2d(region, 2, max_hole_mm2 / (spacing[0] * spacing[1]))
    steps = int(np.ceil(max(follow_mm, min(spacing)) / min(spacing[a] for a in axes)))
    return steep | uphill_from_outside(outside, soft & ~outside, light, tolerance_hu=noise_hu, steps=steps, axes=axes)


def uphill_from_outside(outside, candidates, light, *, tolerance_hu: float, steps: int, axes=(0, 1, 2)):
    """The voxels of ``candidates`` reached from ``outside`` by paths whose CT rises inwards.

    A step from a voxel (of ``outside``, or one reached) to a neighbour of ``candidates`` along one of
    ``axes`` is taken when the neighbour's CT is not lower than the voxel's by more than
    ``tolerance_hu``; at most ``steps`` steps. The steps visit the candidates only (gathered by flat
    index once); finding them and the result are whole-volume passes.

    Parameters
    ----------
    outside : (X, Y, Z) bool array
        Where the paths start. NumPy or CuPy; both masks must be bool.
    candidates : (X, Y, Z) bool array
        The voxels a path may enter (disjoint from ``outside``).
    light : (X, Y, Z) float32 array
        The CT (HU), lightly smoothed.
    tolerance_hu : float
        How far (HU) the CT may fall along one step inwards.
    steps : int
        Longest path (voxels).
    axes : sequence of int
        Array axes along which steps are taken.

    Returns
    -------
    (X, Y, Z) bool array
        The candidates reached.
    """
    xp = get_array_module(light)
    shape = light.shape
    reached = xp.zeros(shape, dtype=bool)
    coords = xp.nonzero(candidates)
    if coords[0].size == 0:
        return reached
    flat = xp.ravel_multi_index(coords, shape)
    light_flat = xp.ascontiguousarray(light).ravel()
    value = light_flat[flat]
    start = xp.ascontiguousarray(outside).ravel()
    strides = [int(np.prod(shape[a + 1:])) for a in range(3)]
    moves = []  # (step allowed, neighbour's flat index) per direction
    for axis in axes:
        for step in (-1, 1):
            inside_array = (coords[axis] + step >= 0) & (coords[axis] + step < shape[axis])
            other = xp.where(inside_array, flat + step * strides[axis], flat)
            moves.append((inside_array & (value >= light_flat[other] - np.float32(tolerance_hu)), other))
    now = xp.zeros(flat.shape, dtype=bool)
    for _ in range(steps):
        count = int(now.sum())
        for allowed, other in moves:
            now |= allowed & (start[other] | reached.ravel()[other])
        reached[coords] = now
        if int(now.sum()) == count:
            break
    return reached
