"""Femoral head candidates by 3-D sphere voting on bone edges.

On a grid of about ``vote_spacing_mm``, every strong edge near the bone mask
votes along its gradient (towards the brighter, bony side) for the centres of
spheres of each candidate radius (:func:`thagpu.kernels.sphere_voting.sphere_votes`).
A femoral head, a near sphere seen by most of its surface, collects a sharp
peak; cylinders (shafts) and plates (iliac wings) spread their votes along
lines and planes. Centres must lie deep inside bone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..morphology import block_reduce_mean, bounding_box, distance_to, ndimage_for
from ..device import get_array_module
from ..kernels.sphere_voting import sphere_votes

__all__ = ["HeadCandidate", "head_candidates"]

#: Edges weaker than this gradient (HU per mm, after smoothing) do not vote.
EDGE_MIN_HU_PER_MM = 25.0
#: Candidate centres lie at least this deep inside the bone mask (mm).
MIN_DEPTH_MM = 8.0
#: Two candidates are at least this far apart (mm).
SEPARATION_MM = 20.0
#: Votes scatter by a few mm (edge position and normal errors): the accumulator is smoothed by this (voxels).
VOTE_SMOOTH = 1.5
#: The smoothing's Gaussian is cut at this many standard deviations (SciPy's default).
SMOOTH_TRUNCATE = 4.0


@dataclass(frozen=True)
class HeadCandidate:
    """A sphere-voting peak.

    Attributes
    ----------
    center_index : (3,) ndarray
        Centre in full-resolution canonical voxel indices (fractional).
    radius_mm : float
    score : float
        Votes per expected vote of a complete sphere of that radius.
    """

    center_index: np.ndarray
    radius_mm: float
    score: float


def head_candidates(image, bone, spacing, *, radii_mm, vote_spacing_mm: float = 2.0, exclude=None,
                    max_candidates: int = 20) -> list:
    """The strongest sphere-voting peaks inside the bone, best first.

    Parameters
    ----------
    image : (R, A, S) array
        CT in HU, NumPy or CuPy (the voting runs where the image is).
    bone : (R, A, S) bool array
        Bone mask of the same shape and device.
    spacing : tuple of 3 float
    radii_mm : sequence of float
        Candidate radii.
    vote_spacing_mm : float
        Working grid spacing.
    exclude : (R, A, S) bool array, optional
        No edges vote from here and no centre lies here (metal and its surroundings).
    max_candidates : int

    Returns
    -------
    list of HeadCandidate
    """
    xp = get_array_module(image)
    ndi = ndimage_for(image)
    factors = [max(1, int(round(vote_spacing_mm / s))) for s in spacing]
    coarse_spacing = np.asarray(spacing, dtype=np.float64) * factors
    small = block_reduce_mean(image, factors)
    small_bone = block_reduce_mean(bone, factors) >= 0.5
    small_excl = block_reduce_mean(exclude, factors) > 0 if exclude is not None else None
    smooth = ndi.gaussian_filter(small, 0.7)
    grads = [g / s for g, s in zip(xp.gradient(smooth), coarse_spacing)]
    magnitude = xp.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2)
    near_bone = ndi.binary_dilation(small_bone, iterations=1)
    voters = near_bone & (magnitude >= EDGE_MIN_HU_PER_MM)
    if small_excl is not None:
        voters &= ~small_excl
    points = xp.argwhere(voters).astype(xp.float64)
    radii = np.asarray(radii_mm, dtype=np.float64)
    if points.shape[0] == 0:
        return []
    idx = tuple(points.astype(xp.int64).T)
    normals = xp.stack([g[idx] for g in grads], axis=1) / magnitude[idx][:, None]
    # Thin the edges to their crest along the gradient (as Canny does): a blurred edge is several
    # voxels thick, and every voxel of it would vote a little off the centre.
    step = normals / xp.asarray(coarse_spacing)
    step /= xp.abs(step).max(axis=1, keepdims=True)  # one voxel along the dominant axis
    ahead = ndi.map_coordinates(magnitude, (points + step).T, order=1, mode="nearest")
    behind = ndi.map_coordinates(magnitude, (points - step).T, order=1, mode="nearest")
    crest = (magnitude[idx] >= ahead) & (magnitude[idx] >= behind)
    points, normals = points[crest], normals[crest]
    # Centres must lie deep in bone, so only that region's box (grown by the vote smoothing's reach,
    # so the smoothing there is the same as over the whole grid) collects and smooths votes.
    # The depth, too, only in the bone's box grown by one voxel: that background layer holds the
    # nearest background of every bone voxel and joins all background outside the bone, so hole
    # filling and distances there are those of the whole grid.
    bone_box = bounding_box(small_bone, 1)
    if bone_box is None:
        return []
    depth = distance_to(~ndi.binary_fill_holes(small_bone[bone_box]), coarse_spacing)  # float32: 1 um margin
    allowed = xp.zeros(small_bone.shape, dtype=bool)
    allowed[bone_box] = depth >= np.float32(MIN_DEPTH_MM - 1e-3)
    if small_excl is not None:
        allowed &= ~small_excl
    reach = int(SMOOTH_TRUNCATE * VOTE_SMOOTH + 0.5)  # the Gaussian's radius in voxels (SciPy's rule)
    box = bounding_box(allowed, reach)
    if box is None:
        return []
    origin = np.array([b.start for b in box])
    votes = sphere_votes(points - xp.asarray(origin, dtype=points.dtype), normals, radii, coarse_spacing,
                         tuple(b.stop - b.start for b in box))
    # A sphere of radius r offers about 4 pi r^2 / a of surface voxels (a: mean voxel face area).
    face = float(np.mean([coarse_spacing[0] * coarse_spacing[1], coarse_spacing[1] * coarse_spacing[2],
                          coarse_spacing[0] * coarse_spacing[2]]))
    expected = xp.asarray(4.0 * np.pi * radii ** 2 / face, dtype=xp.float32)
    votes = ndi.gaussian_filter(votes, (1.0, VOTE_SMOOTH, VOTE_SMOOTH, VOTE_SMOOTH),
                                truncate=SMOOTH_TRUNCATE) / expected[:, None, None, None]
    votes *= allowed[box][None]
    best_over_radii = votes.max(axis=0)
    best_radius = votes.argmax(axis=0)
    found = []
    suppress_vox = np.ceil(SEPARATION_MM / coarse_spacing).astype(int)
    offsets = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(suppress_vox, coarse_spacing)], indexing="ij")
    suppress_ball = xp.asarray(sum(o ** 2 for o in offsets) <= SEPARATION_MM ** 2)
    for _ in range(max_candidates):
        flat = int(xp.argmax(best_over_radii))
        score = float(best_over_radii.reshape(-1)[flat])
        if score <= 0:
            break
        i, j, k = np.unravel_index(flat, best_over_radii.shape)
        r = float(radii[int(best_radius[i, j, k])])
        center = (np.array([i, j, k], dtype=np.float64) + origin + 0.5) * factors - 0.5
        found.append(HeadCandidate(center_index=center, radius_mm=r, score=score))
        centre = np.array([i, j, k])
        lo, hi = centre - suppress_vox, centre + suppress_vox + 1
        clip_lo, clip_hi = np.maximum(lo, 0), np.minimum(hi, best_over_radii.shape)
        ball = suppress_ball[tuple(slice(a - b, c - b) for a, b, c in zip(clip_lo, lo, clip_hi))]
        region = tuple(slice(a, b) for a, b in zip(clip_lo, clip_hi))
        best_over_radii[region] = xp.where(ball, 0, best_over_radii[region])
    return found
