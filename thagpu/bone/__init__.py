"""BE: bone extraction by an exact graph cut on the CT grid.

``extract_bone(volume)`` returns the bone mask on the volume's device. The
steps, each a plain function of arrays:

1. body mask and hard seeds (:mod:`.seeds`);
2. per-volume HU likelihoods from confident voxels (:mod:`.intensity`);
3. the energy: unary costs and boundary weights (:mod:`.energy`);
4. exact reduction by seeds and unary dominance (:mod:`.reduction`), then
   PyMaxflow on the voxels left free (:mod:`.solver`); or, in ``banded``
   mode, a coarse solve and a full-resolution solve in a band around it;
5. cavities filled, islands / table / calcifications removed (:mod:`.cleanup`).

All array work runs on NumPy or CuPy (cupyx.scipy.ndimage) alike; only the
max-flow runs on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import BoneConfig, Config
from ..device import bincount, get_array_module, to_host
from ..volume import Volume
from .cleanup import (BRIDGE_MIN_PIXEL_MM, RESOLVED_CORTEX_FRACTION, bone_outside, bright_pools, closed_interior, fill_cavities,
                      fluid_voxels, remove_non_skeletal, trim_resolved_rim, unenclosed_fluid)
from .energy import Energy, energy_of, pairwise_weights
from .grid import neighbours
from .intensity import IntensityModel, TissueLevels, estimate_tissue_levels, local_noise
from .halfmax import half_max_tilt, soft_side_rim, thin_cortex_level
from ..morphology import block_reduce_mean, bounding_box, box_dilation, erode_one_voxel, ndimage_for
from .reduction import BACKGROUND, BONE, FREE, reduce_energy
from .refine import SHARP_NOISE_RATIO, coarse_factors, refine_surface, upsample_mask
from .seeds import body_mask, bone_interior, cancellous_region, seeds, unenclosed_pieces
from .sheets import dark_sheets, joint_valleys
from .solver import solve_full_grid, solve_reduced

__all__ = ["BoneResult", "extract_bone", "build_energy", "bone_shells", "Shells", "Smoothed", "smoothed_images", "minimum_cut", "energy_of", "solve_full_grid",
           "Energy", "IntensityModel"]

log = logging.getLogger("thagpu.bone")

#: The "lightly smoothed" image of the valley and half-maximum tests: a Gaussian of half a voxel
#: (noise down by about 2x, edges kept).
LIGHT_SMOOTH_VOX = 0.5
#: The smoothing that finds cancellous bone spans at least this many voxels along each axis: at
#: 3 mm voxels, 1.5 mm is half a voxel and leaves the noise (25-30 HU) as it was, so 100-150 HU
#: cancellous bone could not be told from soft tissue 4 noise SDs away.
SMOOTH_MIN_VOX = 1.0
#: Rise (fraction of the cortex's height above soft tissue, per voxel) of a bone surface's rim.
RIM_MIN_RISE = 0.15
#: A piece of bone-like voxels (26-connected) smaller than this many voxels, or than
#: :data:`BONE_LIKE_MIN_ML`, is noise: the half-maximum tilt is not taken near it. The noise of a
#: soft tissue lifts single voxels, or a few neighbours, over the bone-like levels (600-1400 such
#: pieces, of 1-9 voxels, on the 1 mm phantoms); a bone, even a thin one, is one piece of thousands.
BONE_LIKE_MIN_VOXELS = 8
#: ... nor than this volume (ml): at 3 mm voxels, 8 voxels are 0.2 ml, the smallest island the
#: cleanup keeps (``BoneConfig.min_island_ml``).
BONE_LIKE_MIN_ML = 0.02


@dataclass
class BoneResult:
    """What :func:`extract_bone` returns.

    Attributes
    ----------
    mask : (R, A, S) bool array
        Bone, on the volume's device.
    cut : (R, A, S) bool array
        The minimum cut before cavity filling and component cleanup.
    diagnostics : dict
        Graph size, reduction passes, cut energy (of the solved region: the
        whole volume's energy differs by the constant costs of the background
        seeds outside it), intensity model, cleanup report, sub-stage
        timings, and ``warnings``.
    body : (R, A, S) bool array or None
        The body mask BE found (outside it everything is background).
    """

    mask: object
    cut: object
    diagnostics: dict = field(default_factory=dict)
    body: object = None


@dataclass(frozen=True)
class Thresholds:
    """The HU thresholds and boundary scale derived from a volume's tissue levels."""

    levels: object
    model: IntensityModel
    seed_hu: float
    shell_hu: float
    sigma_hu: float

    @classmethod
    def from_levels(cls, levels, config: BoneConfig) -> "Thresholds":
        floor = levels.soft_hu + 6.0 * levels.noise_hu
        seed_hu = config.cortical_seed_hu
        if seed_hu is None:
            seed_hu = max(levels.between(config.seed_fraction), floor)
        sigma = config.sigma_hu if config.sigma_hu is not None else \
            config.sigma_fraction * (levels.cortical_hu - levels.soft_hu)
        model = IntensityModel.from_levels(levels, soft_sd=config.soft_sd, bone_fraction=config.bone_fraction,
                                           weight=config.unary_weight)
        return cls(levels=levels, model=model, seed_hu=seed_hu,
                   shell_hu=max(levels.between(config.shell_fraction), floor), sigma_hu=sigma)

    @property
    def bone_evidence_hu(self) -> float:
        """Below this no voxel has a background cost from its intensity, nor is it a shell or seed."""
        return min(self.shell_hu, self.seed_hu, self.model.bone_min_hu - self.model.ramp_hu / 2)

    def to_dict(self) -> dict:
        levels = self.levels
        return {"soft_tissue_hu": levels.soft_hu, "noise_hu": round(levels.noise_hu, 2),
                "cortical_hu": levels.cortical_hu, "bone_seed_hu": round(self.seed_hu, 1),
                "shell_hu": round(self.shell_hu, 1), "sigma_hu": round(self.sigma_hu, 1), **self.model.to_dict()}


@dataclass(frozen=True)
class Shells:
    """Where bone shows before the cut (arrays on the volume's device).

    Attributes
    ----------
    shell : bool array
        Bone shells whose closed, filled inside is the bone-interior prior: bright voxels (at or
        above the shell level) and ``cancellous``.
    cancellous : bool array or None
        Cancellous bone that hangs together with the bright shells (None when
        ``cancellous_margin_hu`` is 0).
    tilt : float32 array or None
        The half-maximum tilt (:func:`thagpu.bone.halfmax.half_max_tilt`) near pieces of bone-like
        voxels (:attr:`Smoothed.pieces`), 0 elsewhere (None when ``half_max_weight`` is 0).
    outside : bool array or None
        Voxels of ``cancellous`` on the soft-tissue side of a bone surface
        (:func:`thagpu.bone.halfmax.soft_side_rim`): they close the shells but take no
        bone-interior prior (None when either of the above is None).
    half_tilt : float32 array or None
        With a surface level above the half maximum (``BoneConfig.half_max_level``), the same tilt
        at the half maximum, for the outline energy; None otherwise.
    valleys : bool array or None
        The valleys of resolved joint spaces (:func:`thagpu.bone.sheets.joint_valleys`) that
        ``cancellous`` keeps out of; the cleanup's closed interior never closes across them
        (None when ``cancellous`` is None).
    """

    shell: object
    cancellous: object
    tilt: object
    outside: object = None
    half_tilt: object = None
    valleys: object = None


def _enclosed_trims(trimmed, filled):
    """The pieces of ``trimmed`` (half-maximum bone the surface level left out) that do not reach the
    outer voxel layer of ``filled``: pockets inside the bone (cancellous bone next to a brighter
    plate), not its surface, so they stay bone."""
    xp = get_array_module(trimmed)
    labels, count = ndimage_for(trimmed).label(trimmed)
    if count == 0:
        return trimmed
    at_surface = xp.zeros(count + 1, dtype=bool)
    at_surface[labels[trimmed & ~erode_one_voxel(filled)]] = True
    at_surface[0] = True
    return ~at_surface[labels]


def half_max_level(config: BoneConfig, spacing) -> float:
    """The surface level of the half-maximum tilt: ``config.half_max_level``, or the thin-cortex level
    of the voxel size (:func:`thagpu.bone.halfmax.thin_cortex_level`)."""
    if config.half_max_level not in (None, "auto"):
        return float(config.half_max_level)
    return thin_cortex_level(spacing, cortex_mm=config.half_max_cortex_mm, psf_sigma_mm=config.half_max_psf_mm,
                             smooth_vox=LIGHT_SMOOTH_VOX)


@dataclass(frozen=True)
class Smoothed:
    """The smoothed images :func:`bone_shells` reads, and the bone-like voxels they show (arrays on the
    volume's device).

    Attributes
    ----------
    light : float32 array
        The CT smoothed by a Gaussian of :data:`LIGHT_SMOOTH_VOX` voxels.
    smooth : float32 array or None
        The CT capped at the shell level and smoothed by ``cancellous_smooth_mm`` (None when
        ``cancellous_margin_hu`` is 0).
    low_hu, light_noise_hu : float or None
        The cancellous level of ``smooth`` and the noise SD of ``light`` (None with ``smooth``).
    pieces : bool array
        Of the bone-like voxels (bright ones, at or above the shell level, and those of ``smooth`` at
        or above ``low_hu`` or of ``light`` at or above its own margin above soft tissue; never
        background seeds), the 26-connected pieces of at least :data:`BONE_LIKE_MIN_VOXELS` voxels and
        :data:`BONE_LIKE_MIN_ML`: the half-maximum tilt is taken near them only.
    bright_pieces : bool array
        The smaller pieces that hold a bright voxel: with ``pieces``, what may hold a bone shell.
    """

    light: object
    smooth: object
    low_hu: float | None
    light_noise_hu: float | None
    pieces: object
    bright_pieces: object

    def crop(self, box) -> "Smoothed":
        """The same maps inside ``box`` (a tuple of slices; views, as a contiguous copy of each
        was no faster)."""
        return dataclasses.replace(self, **{name: getattr(self, name)[box] for name in
                                            ("light", "smooth", "pieces", "bright_pieces")
                                            if getattr(self, name) is not None})


def smoothed_images(image, body, spacing, thresholds: Thresholds, config: BoneConfig, background_seed) -> Smoothed:
    """The smoothed images of ``image`` and the bone-like voxels they show (see :class:`Smoothed`).

    Computed on the body's box before the rest of :func:`bone_shells`: the pieces of bone-like voxels
    bound the box that BE solves in (:func:`_bone_region`), and the noise levels of the smoothed
    images are those of the whole body, wherever the shells are then computed.
    """
    ndi = ndimage_for(image)
    xp = get_array_module(image)
    bright = (image >= np.float32(thresholds.shell_hu)) & ~background_seed
    soft = thresholds.levels.soft_hu
    light = ndi.gaussian_filter(image, LIGHT_SMOOTH_VOX, mode="nearest")
    smooth = low = light_noise = None
    bone_like = bright
    if config.cancellous_margin_hu > 0:
        # Capped at the shell level before smoothing, so that a bright cortex does not spread into
        # the soft tissue around it (1500 HU blurred by 1.5 mm still reads 200 HU 2 mm outside a
        # 1 mm cortex; capped at 500 HU, about 100 HU).
        cap = np.float32(thresholds.shell_hu)
        smooth = ndi.gaussian_filter(xp.minimum(image, cap), _smooth_vox(config, spacing), mode="nearest")
        low = soft + max(config.cancellous_margin_hu, config.cancellous_noise_sd * local_noise(smooth, body, soft))
        light_noise = local_noise(light, body, soft)
        # Bone-like on the lightly smoothed image too (thin bones, whose heavy smoothing reads
        # low), at a margin above the soft tissue in its own noise SDs.
        light_low = soft + max(config.cancellous_margin_hu, config.cancellous_noise_sd * light_noise)
        bone_like = bright | (((smooth >= np.float32(low)) | (light >= np.float32(light_low))) & ~background_seed)
    pieces, bright_pieces = _bone_like_pieces(bone_like, bright, spacing)
    return Smoothed(light=light, smooth=smooth, low_hu=low, light_noise_hu=light_noise, pieces=pieces,
                    bright_pieces=bright_pieces)


def _smooth_vox(config: BoneConfig, spacing) -> list:
    """The Gaussian (voxels per axis) that finds cancellous bone."""
    return [max(config.cancellous_smooth_mm / s, SMOOTH_MIN_VOX) for s in spacing]


def bone_shells(image, body, spacing, thresholds: Thresholds, config: BoneConfig, background_seed=None,
                smoothed: Smoothed | None = None) -> Shells:
    """The bone shells, the cancellous bone and the half-maximum tilt of ``image`` (see :class:`Shells`).

    The cancellous bone (:func:`thagpu.bone.seeds.cancellous_region`) is the image, capped and
    smoothed by ``cancellous_smooth_mm``, at or above the soft-tissue level plus a margin, less
    the valleys of resolved joint spaces (:func:`thagpu.bone.sheets.joint_valleys`), where it
    hangs together with the bright voxels. ``smoothed``: :func:`smoothed_images` of this image, or
    of a larger one cropped to it (computed when omitted).
    """
    xp = get_array_module(image)
    if background_seed is None:
        background_seed = seeds(image, body, cortical_hu=thresholds.seed_hu,
                                background_hu=config.background_seed_hu, metal_hu=config.metal_hu)[1]
    if smoothed is None:
        smoothed = smoothed_images(image, body, spacing, thresholds, config, background_seed)
    shell = (image >= np.float32(thresholds.shell_hu)) & ~background_seed
    soft = thresholds.levels.soft_hu
    light, smooth, light_noise = smoothed.light, smoothed.smooth, smoothed.light_noise_hu
    tilt = half_tilt = None
    if config.half_max_weight > 0:
        level = half_max_level(config, spacing)
        tilts = half_max_tilt(light, spacing, radius_mm=config.half_max_radius_mm,
                              min_span_hu=max(config.half_max_min_span_hu, 6.0 * thresholds.levels.noise_hu),
                              level=level, with_half=level > 0.5)
        tilt, half_tilt = tilts if level > 0.5 else (tilts, None)
    valleys = cancellous = None
    if smooth is not None:
        # A resolved joint space, lifted to cancellous levels by the smoothing, must not join head
        # and socket into one piece of cancellous bone.
        valleys = joint_valleys(light, spacing, bright_hu=thresholds.shell_hu, soft_hu=soft,
                                reach_mm=config.valley_reach_mm)
        cancellous = cancellous_region(smooth, shell, background_seed | valleys, low_hu=smoothed.low_hu)
        # Contrast-filled vessels lying on a bone (the iliac and femoral arteries) hang together
        # with it too; no brighter rim encloses them.
        # The rim is judged voxel by voxel on the lightly smoothed image, so the margin is in its
        # noise SDs (at 3 mm voxels 3 SDs of the raw CT, 125 HU, exceed the step from osteoporotic
        # marrow to its faint cortex, and the marrow of a whole sacrum was taken for a vessel).
        cancellous &= ~unenclosed_pieces(cancellous, shell, light, spacing,
                                         margin_hu=max(50.0, 3.0 * light_noise))
        shell = shell | cancellous
    if tilt is not None:
        # Surfaces of bones only, not of muscle against fat, nor of noise that reads bone-like in
        # single voxels (whose tilt would also widen the box BE solves in to the whole body).
        near_bone = box_dilation(smoothed.pieces, _tilt_reach_vox(config, spacing))
        tilt = xp.where(near_bone, tilt, np.float32(0.0))
        if half_tilt is not None:
            half_tilt = xp.where(near_bone, half_tilt, np.float32(0.0))
    outside = None
    if tilt is not None and cancellous is not None:
        # The rim reaches about twice the smoothing width out (half-way to the soft-tissue level).
        rim_mm = 2.0 * max(v * s for v, s in zip(_smooth_vox(config, spacing), spacing)) + 0.5
        # A step from soft tissue to cortex rises over about a voxel: a fraction of its height
        # per voxel is a surface; trabecular texture and noise rise less steeply.
        voxel_mm = float(np.prod(spacing)) ** (1.0 / 3.0)
        rise = RIM_MIN_RISE * (thresholds.levels.cortical_hu - soft) / voxel_mm
        outside = soft_side_rim(cancellous, light, tilt, spacing, rim_mm=rim_mm, min_rise_hu_per_mm=rise,
                                noise_hu=light_noise, max_hole_mm2=config.max_slice_hole_mm2,
                                follow_mm=3.0 * config.half_max_psf_mm)
    return Shells(shell=shell, cancellous=cancellous, tilt=tilt, outside=outside, half_tilt=half_tilt, valleys=valleys)


def _tilt_reach_vox(config: BoneConfig, spacing) -> list:
    """How far (voxels per axis) from a bone-like piece the half-maximum tilt is taken."""
    return [max(1, int(round(config.half_max_radius_mm / s))) for s in spacing]


def _bone_like_pieces(bone_like, bright, spacing):
    """The pieces (26-connected) of ``bone_like``: those of at least :data:`BONE_LIKE_MIN_VOXELS` voxels
    and :data:`BONE_LIKE_MIN_ML`, and the smaller ones that hold a voxel of ``bright``."""
    xp = get_array_module(bone_like)
    labels, count = ndimage_for(bone_like).label(bone_like, structure=xp.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return bone_like, bone_like
    # Counted at the bone-like voxels only (most of the grid is no piece).
    where = xp.flatnonzero(bone_like)
    owner = labels.ravel()[where]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    large = bincount(owner, minlength=count + 1) >= max(BONE_LIKE_MIN_VOXELS, BONE_LIKE_MIN_ML / voxel_ml)
    with_bright = xp.zeros(count + 1, dtype=bool)
    with_bright[labels[bright]] = True  # bright lies within bone_like
    pieces, bright_pieces = xp.zeros(bone_like.shape, dtype=bool), xp.zeros(bone_like.shape, dtype=bool)
    pieces.ravel()[where[large[owner]]] = True
    bright_pieces.ravel()[where[(with_bright & ~large)[owner]]] = True
    return pieces, bright_pieces


def _tilted_costs(cost_bone, cost_background, image, tilt_map, shells: Shells, model, config: BoneConfig,
                  thresholds: Thresholds, background_seed, *, step_aside: bool) -> tuple:
    """The intensity costs with the half-maximum tilt ``tilt_map`` added (unchanged without one).

    ``step_aside`` (a surface level above the half maximum): up to the cortical seed level, a voxel
    below the level is the blurred rim of a brighter cortex, however bone-like its CT alone; the
    intensity costs step aside and the tilt decides. At the half maximum the intensity costs stay.
    """
    if tilt_map is None:
        return cost_bone, cost_background
    xp = get_array_module(image)
    # Where the intensity model is neutral, near bone-like voxels, the surface lies at the level.
    neutral = (image > np.float32(model.soft_max_hu)) & (image < np.float32(model.bone_min_hu))
    tilt = xp.where(neutral, tilt_map, np.float32(0.0))
    if shells.cancellous is not None:
        # One voxel inside cancellous bone, a darker pocket next to a bright trabecula or cortex
        # is bone, not the soft side of a surface.
        tilt = xp.where(erode_one_voxel(shells.cancellous), xp.maximum(tilt, np.float32(0.0)), tilt)
    if step_aside:
        band = ((image >= np.float32(model.bone_min_hu)) & (image < np.float32(thresholds.seed_hu))
                & (tilt_map < 0) & ~background_seed)
        cost_background = xp.where(band, np.float32(0.0), cost_background)
        tilt = xp.where(band, tilt_map, tilt)
    weight = np.float32(config.half_max_weight)
    return (cost_bone + weight * xp.maximum(-tilt, np.float32(0.0)),
            cost_background + weight * xp.maximum(tilt, np.float32(0.0)))


def build_energy(image, spacing, config: BoneConfig, body=None, thresholds: Thresholds | None = None,
                 shells: Shells | None = None, fluid=None) -> tuple:
    """Seeds, intensity model and energy terms of ``image`` (NumPy or CuPy, float32 HU).

    Parameters
    ----------
    thresholds : Thresholds, optional
        Derived from this image's own tissue levels when omitted.
    shells : Shells, optional
        :func:`bone_shells` of this image (computed when omitted; :func:`extract_bone` computes
        them in the box it solves, from smoothed images of the body's box).
    fluid : bool array, optional
        :func:`thagpu.bone.cleanup.fluid_voxels` of this image (computed when omitted).

    Returns
    -------
    energy : Energy
    diagnostics : dict
        The tissue levels and thresholds used.
    body : bool array
    """
    if body is None:
        body = body_mask(image, spacing, config.body_threshold_hu)
    if thresholds is None:
        thresholds = Thresholds.from_levels(estimate_tissue_levels(image, body, metal_hu=config.metal_hu,
                                                                   spacing=spacing), config)
    xp = get_array_module(image)
    bone_seed, background_seed = seeds(image, body, cortical_hu=thresholds.seed_hu,
                                       background_hu=config.background_seed_hu, metal_hu=config.metal_hu)
    model = thresholds.model
    shells = shells if shells is not None else bone_shells(image, body, spacing, thresholds, config, background_seed)
    shell, cancellous = shells.shell, shells.cancellous
    interior = bone_interior(image, shell, background_seed, spacing, closing_mm=config.fill_closing_mm,
                             max_slice_hole_mm2=config.max_slice_hole_mm2, soft_max_hu=model.soft_max_hu, fluid=fluid)
    if shells.outside is not None:
        # The smoothing that finds cancellous bone also spreads a bright cortex outwards: the
        # partial-volume rim outside it closes the shells but is left to the half-maximum rule.
        interior &= ~shells.outside
    base_bone, base_background = model.costs(image)
    thin_cortex = shells.half_tilt is not None  # a surface level above the half maximum
    surface = _tilted_costs(base_bone, base_background, image, shells.tilt, shells, model, config, thresholds,
                            background_seed, step_aside=thin_cortex)
    # The same energy at the half maximum, which errs outwards: it outlines a thin cortex around its
    # marrow where the surface level opens gaps in it (see extract_bone).
    outline = (_tilted_costs(base_bone, base_background, image, shells.half_tilt, shells, model, config,
                             thresholds, background_seed, step_aside=False) if thin_cortex else None)
    extra_bone = extra_background = np.float32(0.0)
    sheet = None
    if config.sheet_cost > 0:
        # A joint space narrower than the shells' closing is enclosed by them: the interior prior
        # would make it bone. Where it shows as a dark sheet between two cortices, it costs as bone.
        sheet = dark_sheets(image, spacing, dark_hu=thresholds.shell_hu, bright_hu=thresholds.seed_hu,
                            reach_mm=config.sheet_reach_mm) & ~bone_seed & ~background_seed
        interior &= ~sheet
        extra_bone = sheet.astype(xp.float32) * np.float32(config.sheet_cost)
    if config.interior_prior > 0:
        extra_background = interior.astype(xp.float32) * np.float32(config.interior_prior)
    cost_bone, cost_background = surface[0] + extra_bone, surface[1] + extra_background
    if outline is not None:
        outline = (outline[0] + extra_bone, outline[1] + extra_background)
    links = pairwise_weights(image, neighbours(image.shape, spacing, config.connectivity),
                             sigma_hu=thresholds.sigma_hu, weight=config.pairwise_weight)
    energy = Energy(cost_bone=cost_bone, cost_background=cost_background, bone_seed=bone_seed,
                    background_seed=background_seed, links=links, outline_costs=outline,
                    sheets=sheet)
    return energy, thresholds.to_dict(), body


def _bone_region(image, body, thresholds: Thresholds, spacing, config: BoneConfig, smoothed: Smoothed):
    """A box around every voxel that could be bone, with a margin; ``None`` when there is none.

    Outside it no voxel is a seed, a shell or clearly bone, nor has a half-maximum tilt, nor lies
    within the closing of one, so its background cost is zero; see :func:`extract_bone` for why
    solving inside the box is exact when the solution keeps off the box's sides. Found before the
    shells (which are then computed in the box only) from what holds them: every shell voxel lies in
    a piece of ``smoothed.pieces`` or ``smoothed.bright_pieces`` (a cancellous voxel hangs together
    with a bright one through bone-like voxels), every tilt within reach of ``smoothed.pieces``.
    """
    evidence = ((image >= thresholds.bone_evidence_hu) | smoothed.bright_pieces
                | box_dilation(smoothed.pieces, _tilt_reach_vox(config, spacing)))
    evidence &= body & (image < config.metal_hu)
    return bounding_box(evidence, _region_margin_vox(config, spacing))


def _region_margin_vox(config: BoneConfig, spacing) -> list:
    """The margin (voxels per axis) of :func:`_bone_region`'s box beyond the evidence: three voxels
    beyond the closing of the bone interior, the half-maximum tilt's window around the voxels within
    its reach, or the valleys' reach around the cancellous bone's (two voxels beyond a piece), whichever
    is farthest; so the shells computed in the box are those of the body's box there."""
    return [max(int(np.ceil(config.fill_closing_mm / s)), 2 * reach, int(np.floor(config.valley_reach_mm / s)) + 2) + 3
            for s, reach in zip(spacing, _tilt_reach_vox(config, spacing))]


def _inner_sides(box, shape) -> list:
    """The sides of ``box`` that lie inside an array of ``shape``: (axis, 0) or (axis, -1)."""
    sides = []
    for axis, s in enumerate(box):
        if s.start > 0:
            sides.append((axis, 0))
        if s.stop < shape[axis]:
            sides.append((axis, -1))
    return sides


def _layer(axis: int, index: int):
    face = [slice(None)] * 3
    face[axis] = index
    return tuple(face)


def _forbid_sides(energy: Energy, sides) -> None:
    """Make the outermost layer on ``sides`` background seeds: it stands for everything beyond."""
    for axis, index in sides:
        energy.background_seed[_layer(axis, index)] = True
        energy.bone_seed[_layer(axis, index)] = False


def _bone_next_to_sides(labels, sides) -> bool:
    """True when the layer just inside a forbidden side holds bone."""
    return any(bool(labels[_layer(axis, 1 if index == 0 else -2)].any()) for axis, index in sides)


def _band(coarse_labels, factor, shape, band_mm, spacing):
    """Fixed labels from a coarse solution, free in a band around its boundary."""
    xp = get_array_module(coarse_labels)
    fine = upsample_mask(coarse_labels, (factor,) * 3, shape)
    radius = [max(1, int(np.ceil(band_mm / s))) for s in spacing]
    # Box dilations of the labels and of their complement (separable, linear in the volume).
    band = box_dilation(fine, radius) & box_dilation(~fine, radius)
    fixed = xp.where(fine, BONE, BACKGROUND).astype(xp.int8)
    fixed[band] = FREE
    return fixed


def minimum_cut(energy: Energy, image, spacing, config: BoneConfig) -> tuple:
    """Minimum cut of ``energy`` (exact mode) or its banded approximation.

    Returns (bone mask, stats).
    """
    if config.mode == "banded":
        factor = config.coarse_factor
        coarse_image = block_reduce_mean(image, factor)
        coarse_spacing = tuple(s * factor for s in spacing)
        coarse_energy, _, _ = build_energy(coarse_image, coarse_spacing, config)
        coarse_labels, coarse_stats = solve_reduced(coarse_energy, reduce_energy(coarse_energy,
                                                                                 max_passes=config.max_passes))
        fixed = _band(coarse_labels, factor, image.shape, config.band_mm, spacing)
        reduction = reduce_energy(energy, max_passes=config.max_passes, fixed=fixed)
        labels, stats = solve_reduced(energy, reduction)
        stats["coarse_graph_nodes"] = coarse_stats["graph_nodes"]
    else:
        reduction = reduce_energy(energy, max_passes=config.max_passes)
        labels, stats = solve_reduced(energy, reduction)
    stats["reduction_passes"] = reduction.passes
    return labels, stats


#: The solvers :func:`extract_bone` takes: the exact reduction then PyMaxflow on the free voxels
#: (``config.mode`` chooses exact or banded), or plain PyMaxflow on every voxel (the reference).
SOLVERS = ("reduced", "full_grid")


def extract_bone(volume: Volume, config: Config | BoneConfig | None = None, *, crop: bool = True,
                 solver: str = "reduced") -> BoneResult:
    """Extract the bone mask of a CT volume by an exact graph cut.

    Parameters
    ----------
    volume : Volume
        Canonical CT in HU; its array may be NumPy or CuPy, and the work
        happens on that device (the max-flow itself on the CPU).
    config : Config or BoneConfig, optional
    crop : bool
        Solve in a box around the body and the voxels that could be bone (the
        default; exact, see the comments in the code). ``False`` solves the
        whole grid: the uncropped reference of the benchmarks.
    solver : {"reduced", "full_grid"}
        ``"reduced"`` (default): the exact reduction (:mod:`.reduction`), then
        PyMaxflow on the voxels left free, or the banded approximation when
        ``config.mode`` is ``"banded"``. ``"full_grid"``: plain PyMaxflow with
        every voxel of the solved region a node (:func:`solve_full_grid`), the
        same energy and the same minimum; the baseline of ``benchmarks/bench_bone.py``.
        Both return the same stages and timings (``energy``, ``graph_cut``,
        ``cleanup``). With ``"reduced"``, axes finer than ``config.coarse_below_mm``
        are solved coarse to fine (:mod:`.refine`; timing ``refine`` added);
        ``"full_grid"`` always solves the full grid.

    Returns
    -------
    BoneResult
        ``mask`` on the volume's device. A volume without bone returns an
        empty mask and a warning in ``diagnostics["warnings"]``.

    Examples
    --------
    >>> from thagpu import phantom
    >>> from thagpu.bone import extract_bone
    >>> case = phantom.make_phantom(1, size="tiny", preset="easy")
    >>> result = extract_bone(case.to_volume())
    >>> bool(result.mask.any())
    True
    """
    if isinstance(config, Config):
        config = config.bone
    config = config or BoneConfig()
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    xp = get_array_module(volume.array)
    image = volume.array.astype(xp.float32, copy=False)
    spacing = tuple(float(s) for s in volume.spacing)
    factors = coarse_factors(spacing, config.coarse_below_mm)
    if solver == "reduced" and max(factors) > 1:
        return _extract_coarse_to_fine(image, spacing, factors, config, crop=crop)
    return _extract_on_grid(image, spacing, config, crop=crop, solver=solver)


def _solve_box(body, crop: bool):
    """The box BE estimates its levels and solves in: around the body (``crop``), or the whole grid
    (the uncropped reference); None without a body."""
    if crop:
        return bounding_box(body, (1, 1, 1))
    return tuple(slice(0, n) for n in body.shape) if bool(body.any()) else None


def _extract_on_grid(image, spacing, config: BoneConfig, *, crop: bool, solver: str, body=None,
                     levels: TissueLevels | None = None) -> BoneResult:
    """:func:`extract_bone` on ``image``'s own grid; ``body`` and ``levels`` where the caller has them
    already (the coarse-to-fine check: the same calls on the same image, the levels in the same box
    for the same ``crop``)."""
    xp = get_array_module(image)
    timings, warnings = {}, []
    start = time.perf_counter()
    if body is None:
        body = body_mask(image, spacing, config.body_threshold_hu)
    box = _solve_box(body, crop)
    mask = xp.zeros(image.shape, dtype=bool)
    cut = xp.zeros(image.shape, dtype=bool)
    diagnostics = {"shape": list(image.shape), "mode": config.mode, "connectivity": config.connectivity,
                   "warnings": warnings, "timings_s": timings}
    if box is None:
        warnings.append("no body found in the volume (nothing above the body threshold)")
        return BoneResult(mask=mask, cut=cut, diagnostics=diagnostics, body=body)
    image_c, body_c = image[box], body[box]
    if levels is None:
        levels = estimate_tissue_levels(image_c, body_c, metal_hu=config.metal_hu, spacing=spacing)
    thresholds = Thresholds.from_levels(levels, config)
    # Solve in a box around the voxels that could be bone. Outside it every voxel has zero background
    # cost, so if the solution inside keeps off the box's inner sides, no voxel outside can lower the
    # energy by turning bone (it would pay its bone cost and cut links to background only): the
    # solution is a minimum of the whole volume's energy. Otherwise solve the whole crop.
    # The shells are computed in that box only; the smoothed images, whose noise levels are the whole
    # body's, and the bone-like pieces that bound the box come first, on the body's box.
    background_c = seeds(image_c, body_c, cortical_hu=thresholds.seed_hu, background_hu=config.background_seed_hu,
                         metal_hu=config.metal_hu)[1]
    smoothed_c = smoothed_images(image_c, body_c, spacing, thresholds, config, background_c)
    region = _bone_region(image_c, body_c, thresholds, spacing, config, smoothed_c) if crop else None
    attempts = [region, None] if region is not None else [None]
    for sub in attempts:
        inner = sub if sub is not None else tuple(slice(0, n) for n in image_c.shape)
        sides = _inner_sides(inner, image_c.shape)
        image_r, body_r = image_c[inner], body_c[inner]
        if smoothed_c is None:  # the whole box after all (computed again, the same)
            smoothed_c = smoothed_images(image_c, body_c, spacing, thresholds, config, background_c)
        shells_r = bone_shells(image_r, body_r, spacing, thresholds, config, background_c[inner],
                               smoothed=smoothed_c.crop(inner))
        # Freed before the cut, whose arrays would otherwise grow the heap past its high-water mark
        # (fresh pages: on the 512 x 512 x 300 volume the cut took 6 s with them kept, 3 s without).
        smoothed_c = None
        fluid = fluid_voxels(image_r)  # for the bone interior and the cleanup
        energy, used, _ = build_energy(image_r, spacing, config, body=body_r, thresholds=thresholds,
                                       shells=shells_r, fluid=fluid)
        valleys_r = shells_r.valleys  # all the cleanup needs of the shells
        del shells_r
        _forbid_sides(energy, sides)
        timings["energy"] = round(time.perf_counter() - start, 4)
        t = time.perf_counter()
        if solver == "full_grid":
            cut_r, stats = solve_full_grid(energy)
            cut_r = xp.asarray(cut_r)
        else:
            cut_r, stats = minimum_cut(energy, image_r, spacing, config)
        timings["graph_cut"] = round(time.perf_counter() - t, 4)
        if not _bone_next_to_sides(cut_r, sides):
            break
        warnings.append("bone reached the side of the solved region; solved the whole volume instead")
    solved = tuple(slice(b.start + s.start, b.start + s.stop) for s, b in zip(inner, box))
    diagnostics["intensity_model"] = used
    diagnostics["crop"] = [[s.start, s.stop] for s in solved]
    diagnostics["seeds"] = {"bone": int(energy.bone_seed.sum()), "background": int(energy.background_seed.sum())}
    diagnostics.update(stats)
    diagnostics["cut_energy"] = energy_of(cut_r, energy)
    t = time.perf_counter()
    mask_r = cut_r
    if config.fill_cavities:
        # Filled cavities never take background seeds (a metal stem inside the femoral shaft).
        # The bone is the half-maximum cut, which errs outwards and so closes a thin cortex around
        # its marrow, with its cavities filled; this cut only decides its outermost voxel layer.
        outline = cut_r
        if energy.outline_costs is not None:
            outline, _ = minimum_cut(dataclasses.replace(energy, cost_bone=energy.outline_costs[0],
                                                         cost_background=energy.outline_costs[1]),
                                     image_r, spacing, config)
        filled = fill_cavities(outline, spacing, closing_mm=config.fill_closing_mm,
                               max_slice_hole_mm2=config.max_slice_hole_mm2, fluid=fluid,
                               bridge_gaps=True, image=image_r, barrier=energy.sheets)
        if energy.outline_costs is not None:
            filled = cut_r | (filled & ~outline) | _enclosed_trims(outline & ~cut_r, filled)
        mask_r = filled & ~energy.background_seed
        if config.interior_closing_mm > 0 and config.max_slice_hole_mm2 > 0 and max(spacing) >= BRIDGE_MIN_PIXEL_MM:
            # A faint cortex with gaps around blotchy cancellous bone: its marrow, closed off by a
            # small closing that never crosses a joint space the energy found. Only where an axis is
            # coarse enough for a thin cortex, cut obliquely, to read low in places: at 1 mm voxels
            # the gaps are real and the closing joined head and socket (anatomic 9100: cartilage
            # in the mask 29 % -> 56 %, bone Dice 0.988 -> 0.983, nothing recovered).
            barrier = energy.sheets
            if valleys_r is not None:
                barrier = valleys_r if barrier is None else barrier | valleys_r
            mask_r = mask_r | closed_interior(mask_r, image_r, spacing, closing_mm=config.interior_closing_mm,
                                              max_slice_hole_mm2=config.max_slice_hole_mm2,
                                              min_wall_share=config.interior_wall_share, barrier=barrier,
                                              background_seed=energy.background_seed, fluid=fluid)
    if config.rim_closing_mm > 0:
        mask_r = trim_resolved_rim(mask_r, image_r, spacing, closing_mm=config.rim_closing_mm,
                                   peak_min_hu=thresholds.levels.between(RESOLVED_CORTEX_FRACTION))
    vessels = unenclosed_fluid(mask_r, image_r, spacing, bright_hu=thresholds.seed_hu,
                               noise_hu=thresholds.levels.noise_hu)
    mask_r = mask_r & ~vessels
    skeletal = functools.partial(remove_non_skeletal, body=body_r, spacing=spacing, min_island_ml=config.min_island_ml,
                                 skeleton_min_ml=config.skeleton_min_ml, max_gap_mm=config.max_gap_mm,
                                 image=image_r, noise_hu=thresholds.levels.noise_hu, fluid_max_hu=thresholds.seed_hu)
    mask_r, report = skeletal(mask_r)
    # A pool on its own went with the component rules, whole; one joined to the skeleton goes here,
    # and the pieces it held to the skeleton are judged again.
    pools = bright_pools(mask_r, image_r, spacing, level_hu=thresholds.seed_hu, noise_hu=thresholds.levels.noise_hu)
    if bool(pools.any()):
        mask_r, report["after_bright_pools"] = skeletal(mask_r & ~pools)
    report["unenclosed_fluid_voxels"] = int(to_host(vessels.sum()))
    report["bright_pool_voxels"] = int(to_host(pools.sum()))
    timings["cleanup"] = round(time.perf_counter() - t, 4)
    diagnostics["cleanup"] = report
    cut[solved] = cut_r
    mask[solved] = mask_r
    n_bone = int(mask.sum())
    diagnostics["bone_voxels"] = n_bone
    diagnostics["bone_ml"] = round(n_bone * float(np.prod(spacing)) / 1000.0, 3)
    if n_bone == 0:
        warnings.append("no bone found (no voxel inside the body reached the bone seed threshold "
                        f"of {diagnostics['intensity_model'].get('bone_seed_hu')} HU)")
    log.info("bone: %d voxels, graph %d nodes, %.2f s", n_bone, stats["graph_nodes"], time.perf_counter() - start)
    return BoneResult(mask=mask, cut=cut, diagnostics=diagnostics, body=body)


def _noise_ratio(image, coarse_image, coarse_spacing, factors, config: BoneConfig, *, crop: bool):
    """How many times the block means lowered the noise of the body's soft tissue.

    Returns ``(ratio, body, levels, fine_body)``: the fine grid's local noise over the block means'
    (both about the soft-tissue level of the block means' body, :func:`.intensity.local_noise`), the
    block means' body and :class:`TissueLevels` (handed to the coarse solve, which would make the
    same calls), and the body repeated onto the fine grid; ratio, levels and fine body are None
    without a body.
    """
    body = body_mask(coarse_image, coarse_spacing, config.body_threshold_hu)
    box = _solve_box(body, crop)  # the box the coarse solve estimates its levels in
    if box is None:
        return None, body, None, None
    levels = estimate_tissue_levels(coarse_image[box], body[box], metal_hu=config.metal_hu, spacing=coarse_spacing)
    fine_body = upsample_mask(body, factors, image.shape)
    return local_noise(image, fine_body, levels.soft_hu) / levels.noise_hu, body, levels, fine_body


def _extract_coarse_to_fine(image, spacing, factors, config: BoneConfig, *, crop: bool) -> BoneResult:
    """BE on block means of the axes finer than ``config.coarse_below_mm``, its surface placed again
    at full resolution (:mod:`.refine`); a sharp kernel's image is solved at full resolution."""
    start = time.perf_counter()
    coarse_spacing = tuple(s * f for s, f in zip(spacing, factors))
    coarse_image = block_reduce_mean(image, factors)
    ratio, coarse_body, levels, fine_body = _noise_ratio(image, coarse_image, coarse_spacing, factors,
                                                          config, crop=crop)
    check_s = time.perf_counter() - start
    if ratio is not None and ratio >= SHARP_NOISE_RATIO:
        # A sharp kernel: block means would take its detail away with its noise. Solve the full grid,
        # decided before any coarse solve (it costs only the block means, a body and its levels).
        log.warning("bone: block means lower the noise %.2f times (a sharp kernel); solving at full "
                    "resolution", ratio)
        del coarse_image
        full = _extract_on_grid(image, spacing, config, crop=crop, solver="reduced")
        full.diagnostics["coarse_to_fine"] = {"factors": list(factors), "noise_ratio": round(ratio, 3),
                                              "fell_back": True}
        full.diagnostics["timings_s"]["sharp_check"] = round(check_s, 4)
        full.diagnostics["warnings"].append(
            f"block means lower the noise {ratio:.2f} times (a sharp kernel); solved at full resolution")
        return full
    # One level only: below 0.425 mm the blocks are still finer than the threshold, and a second
    # level would solve 4-voxel blocks with two refinements.
    coarse = _extract_on_grid(coarse_image, coarse_spacing, config, crop=crop, solver="reduced",
                              body=coarse_body, levels=levels)
    del coarse_image
    diagnostics = coarse.diagnostics
    t = time.perf_counter()
    mask = upsample_mask(coarse.mask, factors, image.shape)
    cut = upsample_mask(coarse.cut, factors, image.shape)
    if levels is not None:  # no body: nothing to refine
        min_span = max(config.half_max_min_span_hu, 6.0 * levels.noise_hu)
        refined, band = refine_surface(mask, image, spacing, factors, min_span_hu=min_span)
        if config.rim_closing_mm > 0:
            # What is outside the bone is a question of topology, which the coarse mask answers; the
            # voxels the band gave up next to it lie outside the surface too (not those at a hole or a
            # gap in a cortex, which the coarse closing keeps inside).
            outside = upsample_mask(bone_outside(coarse.mask, coarse_spacing, config.rim_closing_mm), factors,
                                    image.shape)
            outside |= mask & ~refined & box_dilation(outside, [1 if f > 1 else 0 for f in factors])
            refined = trim_resolved_rim(refined, image, spacing, closing_mm=config.rim_closing_mm,
                                        peak_min_hu=levels.between(RESOLVED_CORTEX_FRACTION), outside=outside)
        diagnostics["coarse_to_fine"] = {
            "factors": list(factors), "coarse_spacing": [round(s, 4) for s in coarse_spacing],
            "noise_ratio": round(ratio, 3), "fell_back": False,
            "band_voxels": int(to_host(band.sum())),
            "added": int(to_host((refined & ~mask).sum())), "removed": int(to_host((mask & ~refined).sum()))}
        mask = refined
    # Everything coarse to fine adds around the coarse BE: the block means, the check, the band, the trim.
    diagnostics["timings_s"]["refine"] = round(time.perf_counter() - t + check_s, 4)
    diagnostics["shape"] = list(image.shape)
    if "crop" in diagnostics:
        diagnostics["crop"] = [[a * f, min(b * f, n)] for (a, b), f, n in zip(diagnostics["crop"], factors, image.shape)]
    n_bone = int(to_host(mask.sum()))
    diagnostics["bone_voxels"] = n_bone
    diagnostics["bone_ml"] = round(n_bone * float(np.prod(spacing)) / 1000.0, 3)
    log.info("bone (coarse to fine, blocks %s): %d voxels, %.2f s", factors, n_bone, time.perf_counter() - start)
    if fine_body is None and coarse.body is not None:
        fine_body = upsample_mask(coarse.body, factors, image.shape)
    return BoneResult(mask=mask, cut=cut, diagnostics=diagnostics, body=fine_body)
