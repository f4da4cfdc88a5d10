"""Metal near the hips: a side with a hip replacement gets no head or socket labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..morphology import block_reduce_mean, dilate_mm, ndimage_for
from ..device import bincount, get_array_module, to_host

__all__ = ["MetalComponent", "find_metal"]


@dataclass(frozen=True)
class MetalComponent:
    """One connected metal object: its volume (ml) and centroid in full-resolution canonical voxel indices."""

    volume_ml: float
    centroid_index: np.ndarray


def find_metal(image, spacing, *, metal_hu: float, min_ml: float, grid_mm: float = 2.0):
    """Connected metal objects larger than ``min_ml`` and the region their streaks may spoil.

    Metal is found on a grid of about ``grid_mm`` (a voxel counts as metal when
    any of its block is, so thin stems are kept).

    Returns
    -------
    components : list of MetalComponent
        Largest first.
    spoiled : (R, A, S) bool array or None
        Every metal voxel grown by at least 10 mm (streak artefacts), at full
        resolution on the image's device; None when there is no such metal.
    """
    xp = get_array_module(image)
    ndi = ndimage_for(image)
    factors = [max(1, int(round(grid_mm / s))) for s in spacing]
    coarse_spacing = np.asarray(spacing, dtype=np.float64) * factors
    metal = block_reduce_mean(image >= metal_hu, factors) > 0
    if not bool(metal.any()):
        return [], None
    labelled, count = ndi.label(metal, structure=xp.ones((3, 3, 3), dtype=bool))
    counts = np.asarray(to_host(bincount(labelled.ravel(), minlength=count + 1)))
    # Block counts overestimate thin objects; the volume is measured at full resolution instead.
    components = []
    full_voxel_ml = float(np.prod(spacing)) / 1000.0
    for value in np.argsort(-counts[1:])[:8] + 1:
        if counts[value] * float(np.prod(coarse_spacing)) / 1000.0 < min_ml:
            break
        where = np.asarray(to_host(xp.argwhere(labelled == value)), dtype=np.float64)
        centroid = (where.mean(axis=0) + 0.5) * factors - 0.5
        lo = (where.min(axis=0) * factors).astype(int)
        hi = ((where.max(axis=0) + 1) * factors).astype(int)
        block = image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        volume_ml = float(to_host((block >= metal_hu).sum())) * full_voxel_ml
        if volume_ml >= min_ml:
            components.append(MetalComponent(volume_ml=volume_ml, centroid_index=centroid))
    if not components:
        return [], None
    spoiled = dilate_mm(image >= metal_hu, 10.0, spacing)
    return sorted(components, key=lambda c: -c.volume_ml), spoiled
