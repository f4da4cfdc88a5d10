"""Hard seeds and confident samples: what is certainly bone, certainly not, and the body."""

from __future__ import annotations

import numpy as np

from ..device import bincount, get_array_module
from ..morphology import (box_closing, box_dilation, box_erosion, erode_one_voxel, fill_holes_2d, maximum_filter1d, ndimage_for)

__all__ = ["body_mask", "seeds", "bone_interior", "cancellous_region", "unenclosed_pieces"]

#: A piece of the cancellous region at least this large (ml) ...
UNENCLOSED_MIN_ML = 0.3
#: ... whose surroundings are brighter than it on less than this share of its surface is not bone.
UNENCLOSED_MAX_BRIGHTER_SHARE = 0.3


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
    sizes = bincount(labels.ravel(), minlength=count + 1) * voxel_ml
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


def bone_interior(image, shell, background_seed, spacing, *, closing_mm: float,
                  max_slice_hole_mm2: float, soft_max_hu: float, fluid=None):
    """Where bone certainly is: inside closed bone shells, one voxel in from their surface.

    The shells (``shell``: bright voxels, low enough to catch a thin cortex blurred by partial
    volume, and the cancellous bone that hangs together with them, :func:`cancellous_region`),
    closed by about ``closing_mm`` (gaps of up to about twice that bridged, except where the
    bridge looks like soft tissue, at or below ``soft_max_hu``: a joint space) and filled, hold
    the cancellous bone and marrow whose intensity alone could pass for soft tissue. The region
    is eroded by one voxel so that the bone surface itself is left to intensities and edges.
    ``fluid``: :func:`~thagpu.bone.cleanup.fluid_voxels` of ``image``, where the caller has it.
    """
    from .cleanup import fill_cavities, fluid_voxels

    shell = shell & ~background_seed
    closed = box_closing(shell, closing_mm, spacing) | shell
    if fluid is None:
        fluid = fluid_voxels(image)
    region = fill_cavities(closed, spacing, max_slice_hole_mm2=max_slice_hole_mm2, fluid=fluid)
    # Bridges of the closing that look like soft tissue (the cartilage of a joint space between
    # head and socket, the gap between two bones) are not bone; bridges over a blurred cortex are
    # brighter and stay.
    region &= ~((closed & ~shell) & (image <= soft_max_hu))
    region &= ~background_seed
    # One voxel in from the surface (the sides of the field of view are not a surface).
    region = erode_one_voxel(region)
    # Fluid enclosed by the closed shells is not bone interior (a spinal canal closed off at the
    # intervertebral foramina). A cyst inside a bone is enclosed by the cut itself, and the fill of
    # the cut (cleanup.fill_cavities) keeps it in the mask. Taken out after the erosion: through a
    # sharp kernel, noise carries scattered voxels of low-density marrow into the fluid range, and
    # taken out before it, each such voxel cost its 26 neighbours too (one slice of an osteoporotic
    # femoral shaft at 0.8 x 0.8 x 3 mm kept 189 of its 1,097 marrow voxels).
    return region & ~(fluid & ~closed)


def cancellous_region(smooth, bright, background_seed, *, low_hu: float):
    """Bone-like tissue that hangs together with bright bone: cancellous bone whose cortex may not close.

    Cancellous bone (150-500 HU, lower in osteoporosis) lies inside a cortex, but a thin cortex
    blurred by 2-3 mm voxels does not always read as one (a vertebral body's posterior wall, the
    outer layer of a femoral head at 3 mm), so closed shells alone miss it. Here the voxels of
    the smoothed image at or above ``low_hu`` are eroded by one voxel, so that thin contacts do
    not join them (a contrast-filled vessel whose calcified wall touches a vertebra); the pieces
    next to ``bright`` bone (a cortex) are kept and grown back by one voxel inside the bone-like
    voxels (thin bones keep their extent). The result widens the shells of
    :func:`bone_interior`, whose final erosion leaves the partial-volume surface to the cut. A
    contrast vessel, the bladder or an enhanced organ lies apart from
    bone, behind a layer of fat or soft tissue, and stays out.

    Parameters
    ----------
    smooth : (X, Y, Z) float32 array
        CT in HU, NumPy or CuPy, smoothed by about a trabecular spacing (noise and trabeculae
        average out to the tissue's density).
    bright : (X, Y, Z) bool array
        Voxels that are certainly bone (at or above the shell level).
    background_seed : (X, Y, Z) bool array
    low_hu : float
        Above the soft tissue of the volume (its mode plus a margin, in noise SDs of ``smooth``):
        bone-like.

    Returns
    -------
    (X, Y, Z) bool array
    """
    xp = get_array_module(smooth)
    ndi = ndimage_for(smooth)
    like = (smooth >= np.float32(low_hu)) & ~background_seed
    labels, count = ndi.label(erode_one_voxel(like))
    if count == 0:
        return xp.zeros(smooth.shape, dtype=bool)
    touching = xp.zeros(count + 1, dtype=bool)
    touching[labels[box_dilation(bright, 1)]] = True
    touching[0] = False
    return like & box_dilation(touching[labels], 1)


def unenclosed_pieces(cancellous, bright, light, spacing, *, margin_hu: float):
    """Pieces of the cancellous region that no brighter rim encloses: contrast-filled vessels on a bone.

    An artery in the arterial phase (250-450 HU) reads as cancellous bone, and the iliac and
    femoral vessels run along the pelvic brim and the hip, touching the bone through partial
    volume, so :func:`cancellous_region` keeps them. Cancellous bone lies inside a cortex: take
    the region less the bright voxels and their neighbours, and around each of its pieces count
    the voxels with a voxel brighter than the piece's mean by ``margin_hu`` next to them. Marrow and cancellous bone have a brighter rim on
    most of their surface (a faint osteoporotic cortex too); a vessel lumen has soft tissue
    around it except along the strip where it touches the bone.

    Parameters
    ----------
    cancellous, bright : (X, Y, Z) bool array
        NumPy or CuPy: the cancellous region and the voxels at or above the shell level.
    light : (X, Y, Z) float32 array
        The CT lightly smoothed.
    spacing : tuple of 3 float
    margin_hu : float
        How much brighter than a piece its rim must be (a few noise SDs: the piece's own voxels
        next to its surface must not count).

    Returns
    -------
    (X, Y, Z) bool array
        The voxels of pieces of at least :data:`UNENCLOSED_MIN_ML` whose surroundings are brighter
        on less than :data:`UNENCLOSED_MAX_BRIGHTER_SHARE` of their surface.
    """
    xp = get_array_module(light)
    ndi = ndimage_for(light)
    pieces, count = ndi.label(cancellous & ~box_dilation(bright, 1))
    if count == 0:
        return xp.zeros(cancellous.shape, dtype=bool)
    # Per-piece sums over the pieces' voxels only (they are a minority of the grid).
    inside = xp.flatnonzero(pieces)
    owner_inside = pieces.ravel()[inside]
    sizes = bincount(owner_inside, minlength=count + 1)
    mean = bincount(owner_inside, weights=light.ravel()[inside], minlength=count + 1) / xp.maximum(sizes, 1)
    # The voxels just outside each piece (a voxel between two pieces counts for the higher label).
    grown = pieces
    for axis in range(3):
        grown = maximum_filter1d(grown, 3, axis=axis, mode="nearest")
    around = (grown > 0) & (pieces == 0)
    owner = grown[around]
    rim = light
    for axis in range(3):
        rim = maximum_filter1d(rim, 3, axis=axis, mode="nearest")
    brighter = (rim[around] > mean[owner] + np.float32(margin_hu)).astype(xp.float64)
    share = bincount(owner, weights=brighter, minlength=count + 1) / xp.maximum(
        bincount(owner, minlength=count + 1), 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    drop = (sizes * voxel_ml >= UNENCLOSED_MIN_ML) & (share < UNENCLOSED_MAX_BRIGHTER_SHARE)
    drop[0] = False
    out = xp.zeros(cancellous.shape, dtype=bool)
    out.ravel()[inside[drop[owner_inside]]] = True
    return out
