"""Hard seeds and confident samples: what is certainly bone, certainly not, and the body."""

from __future__ import annotations

import numpy as np

from ..device import get_array_module
from .morphology import box_closing, box_erosion, fill_holes_2d, ndimage_for

__all__ = ["body_mask", "seeds", "bone_interior"]


def body_mask(image, spacing, threshold_hu: float = -400.0, *, min_thickness_mm: float = 10.0,
              min_volume_ml: float = 50.0):
    """The patient: regions above ``threshold_hu`` that are thick and large, holes filled per axial slice.

    A region counts when something of it survives an erosion by a box of
    half-width ``min_thickness_mm / 2`` (as an opening would: what the opening
    keeps of a region grows back from what the erosion kept of it) and it
    holds at least ``min_volume_ml``:
    the trunk and the arms do, the scanner table (thin carbon skins around
    foam) and the blankets do not. Gas inside the bowel is part of the body.
    """
    xp = get_array_module(image)
    ndi = ndimage_for(image)
    dense = image > threshold_hu
    labels, count = ndi.label(dense)
    if count == 0:
        return dense
    thick = box_erosion(dense, min_thickness_mm / 2.0, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = xp.bincount(labels.ravel(), minlength=count + 1) * voxel_ml
    has_core = xp.zeros(count + 1, dtype=bool)
    has_core[labels[thick]] = True
    keep = has_core & (sizes >= min_volume_ml)
    keep[0] = False
    return fill_holes_2d(keep[labels], axis=2, max_area_vox=float("inf"))


def seeds(image, body, *, cortical_hu: float, background_hu: float, metal_hu: float):
    """Hard seeds (bone, background), disjoint.

    Bone: cortical values inside the body and below metal. Background: air,
    gas and fat below ``background_hu``, everything outside the body, and
    metal grown by one voxel (an implant and its blurred rim are not bone).
    """
    metal = image >= metal_hu
    if bool(metal.any()):
        # The blurred rim of an implant is not bone either.
        metal = ndimage_for(image).binary_dilation(metal)
    background = (image <= background_hu) | ~body | metal
    bone = (image >= cortical_hu) & ~background
    return bone, background


def bone_interior(image, shell_hu: float, background_seed, spacing, *, closing_mm: float,
                  max_slice_hole_mm2: float, soft_max_hu: float):
    """Where bone certainly is: inside closed bone shells, one voxel in from their surface.

    The shells are the voxels at or above ``shell_hu`` (low enough to catch a
    thin cortex blurred by partial volume). Closed by about ``closing_mm``
    (gaps of up to about twice that bridged, except where the bridge looks
    like soft tissue, at or below ``soft_max_hu``: a joint space) and filled,
    they hold the cancellous bone and marrow whose intensity alone could pass
    for soft tissue. The region is eroded by one
    voxel so that the bone surface itself is left to intensities and edges.
    """
    from .cleanup import fill_cavities

    ndi = ndimage_for(image)
    shell = (image >= shell_hu) & ~background_seed
    closed = box_closing(shell, closing_mm, spacing) | shell
    region = fill_cavities(closed, spacing, max_slice_hole_mm2=max_slice_hole_mm2)
    # Bridges of the closing that look like soft tissue (the cartilage of a joint space between
    # head and socket, the gap between two bones) are not bone; bridges over a blurred cortex are
    # brighter and stay.
    region &= ~((closed & ~shell) & (image <= soft_max_hu))
    region &= ~background_seed
    # One voxel in from the surface (a 3x3x3 box erosion, separable and fast).
    eroded = region.view("uint8")
    for axis in range(3):
        eroded = ndi.minimum_filter1d(eroded, 3, axis=axis, mode="constant", cval=0)
    return eroded.astype(bool)
