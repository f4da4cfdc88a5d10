"""Where the head's surface lies under the blur: a blurred thin-cortex model fitted along its lines.

The boundary step (:mod:`thagpu.afs.boundary`) puts the head's edge where the profile falls fastest.
That is the surface of a thick wall, but a femoral head's cortex (its subchondral plate) is 0.5-1.5 mm
thick, about the width of the blur of the scanner and the voxel grid: along a line, bright cortex
sits between darker cancellous bone and soft tissue, and the blurred peak falls fastest outside its
outer surface, by up to the blur's width (docs/phantom.md "Edges"). Fitted spheres came out
0.2-1.2 mm too large, more at coarse voxels.

Here each clean line (head edge onto soft tissue, no bone just beyond) is modelled as cancellous
level ``c``, a cortex of thickness ``t`` at level ``K`` ending at the surface, and soft tissue at
``s``, blurred by a Gaussian whose width along the line follows from the scanner's point-spread
function and the voxel grid; the offset of the surface from the fitted sphere and ``t`` are shared
by all lines, the three levels are each line's own (linear least squares given the offset and
``t``). This is the idea of cortical-thickness mapping (Treece et al., Med Image Anal 2010), which
fits the same blurred model, with the blur known, along lines normal to a bone's surface. The
cortex's level is capped at :data:`CORTICAL_MAX_HU`: with a thin layer under a wide blur, a very
thin, very dense layer fits about as well, and cortical bone does not exceed about 2000 HU.
On 3 mm isotropic grids every line is blurred wider than the cortex and that trade-off is flat: the
thickness is then held at an adult head's (:data:`HEAD_CORTEX_PRIOR_MM`) and the offset alone fitted.

Clean lines are the head's free face: mostly its medial and inferior side, whose own shape differs
from the sphere fitted to every line (a head is aspherical by up to a millimetre; the fovea is a pit).
Where every line is blurred alike (isotropic grids), the edges lie the same distance from the
surface on every line, so the clean lines' mean edge residual from the sphere is that shape, and it
is taken out of the offset (``CortexEdge.edge_shape_mm``). Under anisotropic blur the residuals also
hold the edges' own differences between sharp and blurred lines, and nothing is taken out.

The blur along a line with unit direction ``d`` (canonical axes) has variance
``sum_i d_i^2 (psf_i^2 + spacing_i^2 / 4)``: the point-spread function (in-plane ``psf_sigma_mm``;
along the slices ``slice_profile_fraction`` times the slice spacing, a slice sensitivity profile
about as wide as the slice, for grids whose one spacing is clearly the largest) plus the partial
volume of a voxel (a box, ``spacing^2 / 12``) and the trilinear interpolation of the samples (a
triangle, ``spacing^2 / 6``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ..device import to_host
from ..kernels.radial_profiles import radial_profiles

__all__ = ["CortexEdge", "line_blur_sigma", "fit_cortex_offset", "head_edge_offset", "CORTICAL_MAX_HU"]

#: The densest cortical bone (HU); the fitted cortex level may not exceed it.
CORTICAL_MAX_HU = 2000.0
#: Offsets of the samples from the fitted sphere (mm): 5 mm into the head, 4 mm beyond.
SAMPLE_OFFSETS_MM = np.round(np.arange(-5.0, 4.0 + 1e-9, 0.2), 6)
#: Searched surface offsets from the sphere (mm) and cortex thicknesses (mm).
OFFSET_RANGE_MM = (-2.0, 0.5)
THICKNESS_RANGE_MM = (0.3, 3.0)
#: A clean line stays below this (HU) from 0.8 mm beyond the sphere on: soft tissue or cartilage only.
SOFT_MAX_HU = 150.0
#: Fewer clean lines than this: no correction.
MIN_LINES = 20
#: Only lines blurred less than this (mm) are modelled with a free thickness. Under a wider blur a
#: thin dense cortex and a thick faint one give nearly the same profile, and the fitted surface
#: wanders by half a millimetre: the slice direction of thick slices is left out where enough
#: sharper lines remain.
MAX_BLUR_MM = 1.0
#: Where every line is blurred wider than that (3 mm isotropic grids), the cortex is held at this
#: thickness (mm), the middle of an adult femoral head's subchondral plate (0.5-1.5 mm), and the
#: offset alone is fitted. On 3 mm grids the steepest fall put the surface 0.7-1.1 mm outside the
#: head; held at 1 mm, the model puts it 0.1-0.4 mm inside (0.6-1.4 mm cortices, phantoms and the
#: synthetic head of tests/test_afs.py).
HEAD_CORTEX_PRIOR_MM = 1.0


@dataclass(frozen=True)
class CortexEdge:
    """The fitted blurred-cortex model of one head.

    Attributes
    ----------
    offset_mm : float
        Where the head's outer surface lies relative to the fitted sphere (negative: inside it). Where
        every line is blurred alike, relative to the lines' edges instead (``edge_shape_mm`` taken
        out): the same for a sphere fitted to them.
    thickness_mm : float
        The fitted cortical thickness.
    levels_hu : tuple of 3 float
        Median over lines of the cancellous, cortical and soft-tissue levels.
    lines : int
        Lines the fit used.
    trusted : bool
        False when the offset lies at an end of its search range, the thickness at the top of its
        range (a thick wall: its steepest fall is its surface already), or the cortex's level at its cap
        (within 1 %): the profiles are sharper than the assumed blur makes a cortex of bone's density
        (a smaller point-spread than ``psf_sigma_mm``, or no thin cortex), so the model does not
        explain the edge, and the offset is not applied.
    edge_shape_mm : float
        Mean distance of the fitted lines' own edges beyond the sphere, taken out of ``offset_mm``
        (0.0 where it was not: the blur differs between lines, or no edges were given).
    """

    offset_mm: float
    thickness_mm: float
    levels_hu: tuple
    lines: int
    trusted: bool
    edge_shape_mm: float = 0.0


def line_blur_sigma(directions, spacing, psf_sigma_mm: float, slice_profile_fraction: float) -> np.ndarray:
    """Standard deviation (mm) of the blur along each unit direction of a canonical grid.

    Parameters
    ----------
    directions : (D, 3) array
        Unit directions in the array frame.
    spacing : (3,) array_like
        Voxel spacing (mm).
    psf_sigma_mm : float
        In-plane point-spread sigma of the scanner.
    slice_profile_fraction : float
        The slice sensitivity profile's sigma as a fraction of the slice spacing, applied along the
        axis whose spacing is more than 1.2 times the smallest (none on near-isotropic grids).
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    psf = np.full(3, float(psf_sigma_mm))
    slice_axis = int(np.argmax(spacing))
    if spacing[slice_axis] > 1.2 * spacing.min():
        psf[slice_axis] = max(psf[slice_axis], slice_profile_fraction * spacing[slice_axis])
    variance = np.asarray(directions, dtype=np.float64) ** 2 @ (psf ** 2 + spacing ** 2 / 4.0)
    return np.sqrt(variance)


#: Lines are "blurred alike" where their blur's standard deviations differ by no more than this ratio
#: (isotropic grids): the edges then sit the same distance from the surface on every line.
ALIKE_BLUR_RATIO = 1.1


#: With the thickness free, the cortex is compact bone: thin and dense, not thick and faint. The
#: fit's cost is nearly flat along that trade-off, and its faint end (370-830 HU, 1.0-1.75 mm against
#: true 0.5-1.0 mm) put radii 0.15-0.68 mm too large on dev seeds. Not applied with the thickness
#: held (3 mm grids), where the density stands in for the thickness.
MIN_FREE_CORTEX_HU = 1000.0


class _EdgeTable:
    """Blurred unit steps of every line at edge positions on a fine grid, and their sums with the profiles.

    The model of a line is ``c0 + c1 * step(inner) + c2 * step(outer)``: cancellous bone ``c0``,
    cortex ``c0 + c1``, soft tissue ``c0 + c1 + c2``. Its normal equations need, per line, sums over
    the samples of each step, its square, its product with the profile (precomputed here for every
    grid position) and of the two steps' product (per candidate).
    """

    STEP_MM = 0.025

    def __init__(self, profiles, offsets, sigma, lo_mm, hi_mm, radius_mm=None):
        self.positions = np.arange(lo_mm, hi_mm + self.STEP_MM / 2, self.STEP_MM)
        z = (offsets[None, None, :] - self.positions[:, None, None]) / sigma[None, :, None]
        steps = ndtr(z)
        if radius_mm is not None:
            # The surfaces are spheres about the line's origin, not planes: a ball of radius rho blurred
            # by a Gaussian of SD s reads Phi((rho - r) / s) - (s / r) phi((rho - r) / s) at distance r
            # from its centre (terms of order exp(-(rho + r)^2 / 2 s^2) dropped), so its half-maximum
            # surface lies about s^2 / rho inside it (0.1 mm for a 24 mm head under the 1.6 mm blur of
            # 3 mm voxels). The step from inside to outside gains the second term.
            r = np.maximum(radius_mm + offsets, 1.0)
            steps = steps + (sigma[None, :, None] / r[None, None, :]) * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
        self.steps = steps  # (P, L, S)
        self.sum = steps.sum(axis=2)
        self.square = (steps * steps).sum(axis=2)
        self.with_profile = np.einsum("pls,ls->pl", steps, profiles)
        self.count = float(profiles.shape[1])
        self.profile_sum = profiles.sum(axis=1)
        self.profile_square = float((profiles * profiles).sum())

    def index(self, position_mm: float) -> int:
        return int(round((position_mm - self.positions[0]) / self.STEP_MM))

    def fit(self, inner_mm: float, outer_mm: float):
        """Summed squared residual over lines and the per-line levels (cancellous, cortex, soft)."""
        i, o = self.index(inner_mm), self.index(outer_mm)
        cross = np.einsum("ls,ls->l", self.steps[i], self.steps[o])
        lines = len(cross)
        normal = np.empty((lines, 3, 3))
        normal[:, 0, 0] = self.count
        normal[:, 0, 1] = normal[:, 1, 0] = self.sum[i]
        normal[:, 0, 2] = normal[:, 2, 0] = self.sum[o]
        normal[:, 1, 1] = self.square[i]
        normal[:, 2, 2] = self.square[o]
        normal[:, 1, 2] = normal[:, 2, 1] = cross
        normal += 1e-6 * np.eye(3)
        rhs = np.stack([self.profile_sum, self.with_profile[i], self.with_profile[o]], axis=1)
        coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
        residual = self.profile_square - float((coef * rhs).sum())
        levels = np.cumsum(coef, axis=1)  # c0, c0 + c1, c0 + c1 + c2
        return residual, levels


def fit_cortex_offset(profiles, offsets_mm, sigma_mm, *, max_cortex_hu: float = CORTICAL_MAX_HU,
                      thickness_mm: float | None = None, radius_mm: float | None = None):
    """Fit the shared surface offset and cortical thickness of blurred-cortex profiles.

    Parameters
    ----------
    profiles : (L, S) array
        CT samples (HU) along L lines at ``offsets_mm`` from the fitted sphere (outwards positive).
    offsets_mm : (S,) array
    sigma_mm : (L,) array
        Blur along each line (:func:`line_blur_sigma`).
    max_cortex_hu : float
        Candidates whose median cortical level exceeds it are not considered.
    thickness_mm : float, optional
        Hold the cortical thickness at this value and fit the offset alone (under a blur much wider
        than the cortex, where thickness and density trade off). With the thickness free, the cortex
        must read at least :data:`MIN_FREE_CORTEX_HU`.
    radius_mm : float, optional
        The radius of the sphere the offsets are measured from: the surfaces are modelled as concentric
        spheres (the blur of a curved surface moves its half maximum inwards, by about
        ``sigma^2 / radius``); None models them as planes.

    Returns
    -------
    CortexEdge or None
        None when no candidate respects the cap.
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    offsets = np.asarray(offsets_mm, dtype=np.float64)
    sigma = np.asarray(sigma_mm, dtype=np.float64)
    fixed = thickness_mm is not None
    # The table spans every inner edge searched: the deepest offset less the thickest cortex.
    deepest = float(thickness_mm) if fixed else THICKNESS_RANGE_MM[1]
    table = _EdgeTable(profiles, offsets, sigma, OFFSET_RANGE_MM[0] - deepest - 0.25, OFFSET_RANGE_MM[1] + 0.15,
                       radius_mm)
    best = None

    def search(surfaces, thicknesses):
        nonlocal best
        for surface in surfaces:
            if not OFFSET_RANGE_MM[0] - 1e-9 <= surface <= OFFSET_RANGE_MM[1] + 1e-9:
                continue
            for thickness in thicknesses:
                if not THICKNESS_RANGE_MM[0] - 1e-9 <= thickness <= THICKNESS_RANGE_MM[1] + 1e-9:
                    continue
                residual, levels = table.fit(surface - thickness, surface)
                levels = np.median(levels, axis=0)
                if levels[1] > max_cortex_hu or (not fixed and levels[1] < MIN_FREE_CORTEX_HU):
                    continue
                if best is None or residual < best[0]:
                    best = (residual, float(surface), float(thickness), levels)

    # Coarse to fine: 0.1 mm x 0.2 mm, then 0.025 mm x 0.05 mm around the best.
    thicknesses = np.array([float(thickness_mm)]) if fixed else np.arange(THICKNESS_RANGE_MM[0],
                                                                         THICKNESS_RANGE_MM[1] + 1e-9, 0.2)
    search(np.arange(OFFSET_RANGE_MM[0], OFFSET_RANGE_MM[1] + 1e-9, 0.1), thicknesses)
    if best is None:
        return None
    _, surface0, thickness0, _ = best
    search(surface0 + np.arange(-0.1, 0.1 + 1e-9, 0.025),
           thicknesses if fixed else thickness0 + np.arange(-0.2, 0.2 + 1e-9, 0.05))
    _, surface, thickness, levels = best
    # At the thick end the model cannot tell a thick wall from a thin cortex (a thick wall's steepest
    # fall is its surface already); at either end of the offsets it did not find the edge.
    at_bound = (surface <= OFFSET_RANGE_MM[0] + 0.05 or surface >= OFFSET_RANGE_MM[1] - 0.05
                or (not fixed and thickness >= THICKNESS_RANGE_MM[1] - 0.05))
    # With the thickness held, a cortex at its cap is the thin-and-dense end of the trade-off the
    # fixed thickness stands in for, not a misfit.
    pinned = not fixed and levels[1] >= 0.99 * max_cortex_hu
    return CortexEdge(offset_mm=round(surface, 3), thickness_mm=round(thickness, 3),
                      levels_hu=tuple(round(float(v), 1) for v in levels), lines=int(len(profiles)),
                      trusted=not (at_bound or pinned))


def head_edge_offset(image, center_mm, radius_mm, directions, spacing, *, psf_sigma_mm: float,
                     slice_profile_fraction: float, edge_residuals_mm=None, bone_beyond=None) -> CortexEdge | None:
    """The blurred-cortex fit of a head around its fitted sphere.

    Parameters
    ----------
    image : (R, A, S) array
        CT in HU (NumPy or CuPy).
    center_mm, radius_mm
        The fitted sphere (array millimetre frame: index times spacing).
    directions : (D, 3) array
        Unit line directions.
    spacing : (3,) array_like
    psf_sigma_mm, slice_profile_fraction : float
        See :func:`line_blur_sigma`.
    edge_residuals_mm : (D,) array, optional
        Each line's head edge beyond the sphere (:meth:`RadialBoundary.edge_residuals`, NaN where
        none). Where every line is blurred alike, the clean lines' mean is the head's own shape on
        that side of it (its asphericity, the fovea), not blur, and it is taken out of the offset.
    bone_beyond : (D,) bool array, optional
        Lines with bone in the mask beyond the head (:attr:`RadialBoundary.bone_beyond`): not clean,
        where at least :data:`MIN_LINES` others are.

    Returns
    -------
    CortexEdge or None
        None when fewer than :data:`MIN_LINES` lines are clean (head edge onto soft tissue, no bone
        in the mask behind it, inside the field of view) or no fit respects the cortical cap. Lines
        blurred more than :data:`MAX_BLUR_MM` are used only when fewer than :data:`MIN_LINES` others
        are, and then with the thickness held at :data:`HEAD_CORTEX_PRIOR_MM`.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    # Lines under too wide a blur say nothing here: drop them before sampling (on 3 mm grids, all).
    sigma = line_blur_sigma(directions, spacing, psf_sigma_mm, slice_profile_fraction)
    alike = float(sigma.max()) <= ALIKE_BLUR_RATIO * float(sigma.min())
    residuals = None if edge_residuals_mm is None or not alike else np.asarray(edge_residuals_mm, np.float64)
    sharp = sigma <= MAX_BLUR_MM
    thickness = None
    if sharp.sum() >= MIN_LINES:
        directions, sigma = directions[sharp], sigma[sharp]
        residuals = None if residuals is None else residuals[sharp]
    else:
        # Every line blurred wider than a head's cortex (3 mm grids): thickness and density trade
        # off, so the thickness is held at an adult head's and the offset alone is fitted.
        thickness = HEAD_CORTEX_PRIOR_MM
    radii = (radius_mm + SAMPLE_OFFSETS_MM).astype(np.float32)
    centre_index = np.asarray(center_mm, dtype=np.float64) / spacing
    # Unsmoothed samples: the model carries the blur itself.
    profiles, _ = radial_profiles(image, centre_index, directions, radii, spacing, sigma_samples=0.01)
    profiles = np.asarray(to_host(profiles), dtype=np.float64)
    # Clean: inside the field of view (no NaN) and soft tissue only beyond the edge (NaN compares False).
    clean = np.isfinite(profiles).all(axis=1) & ~(profiles[:, SAMPLE_OFFSETS_MM > 0.8] >= SOFT_MAX_HU).any(axis=1)
    if bone_beyond is not None:
        # A joint space wider than the samples' reach reads as soft tissue on them, but the socket's
        # plate behind it lifts the blurred profile's outer level (3 mm voxels: the lines of a wide
        # joint were half the clean ones, and the fitted surface 0.3-0.4 mm too deep). The mask tells.
        behind = np.asarray(bone_beyond, dtype=bool)
        behind = behind[sharp] if thickness is None else behind
        if (clean & ~behind).sum() >= MIN_LINES:
            clean &= ~behind
    if clean.sum() < MIN_LINES:
        return None
    edge = fit_cortex_offset(profiles[clean], SAMPLE_OFFSETS_MM, sigma[clean], thickness_mm=thickness,
                             radius_mm=float(radius_mm))
    if edge is None or residuals is None or not np.isfinite(residuals[clean]).any():
        return edge
    # The offset was fitted from the sphere, over the clean lines only (the head's free face, mostly
    # medial and inferior). Where its edges lie inside the sphere the head is flatter there, and a
    # radius must not inherit that: under a blur alike on every line the offset from the edges is
    # the same everywhere, and a sphere fitted to all the edges takes it whole.
    shape = float(np.nanmean(residuals[clean]))
    return dataclasses.replace(edge, offset_mm=round(edge.offset_mm - shape, 3), edge_shape_mm=round(shape, 3))
