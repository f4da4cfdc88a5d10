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

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import BoneConfig, Config
from ..device import get_array_module, to_host
from ..volume import Volume
from .cleanup import fill_cavities, remove_non_skeletal
from .energy import Energy, energy_of, pairwise_weights
from .grid import neighbours
from .intensity import IntensityModel, estimate_tissue_levels
from .morphology import block_reduce_mean, ndimage_for
from .reduction import BACKGROUND, BONE, FREE, reduce_energy
from .seeds import body_mask, bone_interior, seeds
from .solver import solve_full_grid, solve_reduced

__all__ = ["BoneResult", "extract_bone", "build_energy", "minimum_cut", "energy_of", "solve_full_grid",
           "Energy", "IntensityModel"]

log = logging.getLogger("thagpu.bone")


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
        Graph size, reduction passes, cut energy, intensity model, cleanup
        report, sub-stage timings, and ``warnings``.
    """

    mask: object
    cut: object
    diagnostics: dict = field(default_factory=dict)


def build_energy(image, spacing, config: BoneConfig, body=None) -> tuple:
    """Seeds, intensity model and energy terms of ``image`` (NumPy or CuPy, float32 HU).

    Returns
    -------
    energy : Energy
    diagnostics : dict
        The tissue levels and thresholds used.
    body : bool array
    """
    if body is None:
        body = body_mask(image, spacing, config.body_threshold_hu)
    levels = estimate_tissue_levels(image, body, metal_hu=config.metal_hu)
    seed_hu = config.cortical_seed_hu
    if seed_hu is None:
        seed_hu = max(levels.between(config.seed_fraction), levels.soft_hu + 6.0 * levels.noise_hu)
    sigma = config.sigma_hu if config.sigma_hu is not None else \
        config.sigma_fraction * (levels.cortical_hu - levels.soft_hu)
    bone_seed, background_seed = seeds(image, body, cortical_hu=seed_hu,
                                       background_hu=config.background_seed_hu, metal_hu=config.metal_hu)
    shell_hu = max(levels.between(config.shell_fraction), levels.soft_hu + 6.0 * levels.noise_hu)
    xp = get_array_module(image)
    model = IntensityModel.from_levels(levels, soft_sd=config.soft_sd, bone_fraction=config.bone_fraction,
                                       weight=config.unary_weight)
    interior = bone_interior(image, shell_hu, background_seed, spacing, closing_mm=config.fill_closing_mm,
                             max_slice_hole_mm2=config.max_slice_hole_mm2, soft_max_hu=model.soft_max_hu)
    cost_bone, cost_background = model.costs(image)
    if config.interior_prior > 0:
        cost_background = cost_background + interior.astype(xp.float32) * np.float32(config.interior_prior)
    diagnostics = {"soft_tissue_hu": levels.soft_hu, "noise_hu": round(levels.noise_hu, 2),
                   "cortical_hu": levels.cortical_hu, "bone_seed_hu": round(seed_hu, 1),
                   "shell_hu": round(shell_hu, 1), "sigma_hu": round(sigma, 1), **model.to_dict()}
    links = pairwise_weights(image, neighbours(image.shape, spacing, config.connectivity),
                             sigma_hu=sigma, weight=config.pairwise_weight)
    energy = Energy(cost_bone=cost_bone, cost_background=cost_background, bone_seed=bone_seed,
                    background_seed=background_seed, links=links)
    return energy, diagnostics, body


def _band(coarse_labels, factor, shape, band_mm, spacing):
    """Fixed labels from a coarse solution, free in a band around its boundary."""
    xp = get_array_module(coarse_labels)
    ndi = ndimage_for(coarse_labels)
    fine = coarse_labels
    for axis in range(3):
        fine = xp.repeat(fine, factor, axis=axis)
    fine = fine[: shape[0], : shape[1], : shape[2]]
    radius = [max(1, int(np.ceil(band_mm / s))) for s in spacing]
    structure = np.ones([2 * r + 1 for r in radius], dtype=bool)
    if xp is not np:
        structure = xp.asarray(structure)
    band = ndi.binary_dilation(fine, structure) & ~ndi.binary_erosion(fine, structure, border_value=1)
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


def _crop_box(body, margin: int = 1):
    xp = get_array_module(body)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = to_host(xp.any(body, axis=other))
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            return None
        box.append(slice(max(0, int(idx[0]) - margin), min(body.shape[axis], int(idx[-1]) + margin + 1)))
    return tuple(box)


def extract_bone(volume: Volume, config: Config | BoneConfig | None = None) -> BoneResult:
    """Extract the bone mask of a CT volume by an exact graph cut.

    Parameters
    ----------
    volume : Volume
        Canonical CT in HU; its array may be NumPy or CuPy, and the work
        happens on that device (the max-flow itself on the CPU).
    config : Config or BoneConfig, optional

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
    xp = get_array_module(volume.array)
    image = volume.array.astype(xp.float32, copy=False)
    spacing = tuple(float(s) for s in volume.spacing)
    timings, warnings = {}, []
    start = time.perf_counter()
    body = body_mask(image, spacing, config.body_threshold_hu)
    box = _crop_box(body)
    mask = xp.zeros(image.shape, dtype=bool)
    cut = xp.zeros(image.shape, dtype=bool)
    diagnostics = {"shape": list(image.shape), "mode": config.mode, "connectivity": config.connectivity,
                   "warnings": warnings, "timings_s": timings}
    if box is None:
        warnings.append("no body found in the volume (nothing above the body threshold)")
        return BoneResult(mask=mask, cut=cut, diagnostics=diagnostics)
    image_c, body_c = image[box], body[box]
    energy, levels, _ = build_energy(image_c, spacing, config, body=body_c)
    timings["energy"] = round(time.perf_counter() - start, 4)
    diagnostics["intensity_model"] = levels
    diagnostics["crop"] = [[s.start, s.stop] for s in box]
    diagnostics["seeds"] = {"bone": int(energy.bone_seed.sum()), "background": int(energy.background_seed.sum())}
    t = time.perf_counter()
    cut_c, stats = minimum_cut(energy, image_c, spacing, config)
    timings["graph_cut"] = round(time.perf_counter() - t, 4)
    diagnostics.update(stats)
    diagnostics["cut_energy"] = energy_of(cut_c, energy)
    t = time.perf_counter()
    mask_c = cut_c
    if config.fill_cavities:
        # Filled cavities never take background seeds (a metal stem inside the femoral shaft).
        mask_c = fill_cavities(cut_c, spacing, closing_mm=config.fill_closing_mm,
                               max_slice_hole_mm2=config.max_slice_hole_mm2) & ~energy.background_seed
    mask_c, report = remove_non_skeletal(mask_c, body_c, spacing, min_island_ml=config.min_island_ml,
                                         skeleton_min_ml=config.skeleton_min_ml, max_gap_mm=config.max_gap_mm)
    timings["cleanup"] = round(time.perf_counter() - t, 4)
    diagnostics["cleanup"] = report
    cut[box] = cut_c
    mask[box] = mask_c
    n_bone = int(mask.sum())
    diagnostics["bone_voxels"] = n_bone
    diagnostics["bone_ml"] = round(n_bone * float(np.prod(spacing)) / 1000.0, 3)
    if n_bone == 0:
        warnings.append("no bone found (no voxel inside the body reached the bone seed threshold "
                        f"of {diagnostics['intensity_model'].get('bone_seed_hu')} HU)")
    log.info("bone: %d voxels, graph %d nodes, %.2f s", n_bone, stats["graph_nodes"], time.perf_counter() - start)
    return BoneResult(mask=mask, cut=cut, diagnostics=diagnostics)
