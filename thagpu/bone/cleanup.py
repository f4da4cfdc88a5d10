"""From the minimum cut to a bone mask: solid bones, no islands, no table or calcifications."""

from __future__ import annotations

import numpy as np

from ..device import bincount, get_array_module, to_host
from .intensity import thick_bright
from ..morphology import (bounding_box, box_closing, box_closing_voxels, box_dilation, dilate_mm, erode_one_voxel, fill_holes_2d, in_plane_structure, labels_on_border,
                          maximum_filter1d, minimum_filter1d, ndimage_for)

__all__ = ["fill_cavities", "closed_interior", "fluid_voxels", "remove_non_skeletal", "trim_resolved_rim", "unenclosed_fluid", "bright_pools", "FLUID_HU", "BRIDGE_MIN_PIXEL_MM", "COARSE_RIM_MIN_MM", "COARSE_RIM_LEVEL", "SLICE_HOLE_MIN_WIDTH_MM",
           "SLICE_HOLE_MIN_DEPTH_MM"]

#: Holes within a slice narrower than this everywhere are gaps (joint spaces), not cavities.
SLICE_HOLE_MIN_WIDTH_MM = 6.0
#: Slice holes that stack up along the slice axis to no more than this are sheets (a joint space cut
#: tangentially, near the top of the femoral head), not cavities; see :func:`thin_along_slices`.
SLICE_HOLE_MIN_DEPTH_MM = 5.0
#: A mask component this uniform (share of voxels within 3 noise SDs of its median) is a fluid, not bone.
HOMOGENEOUS_SHARE = 0.85
#: Fewest inner voxels (of a one-voxel erosion) on which a component's uniformity is judged; thinner
#: components are judged on all their voxels.
MIN_INNER_VOXELS = 20
#: A uniform component brighter than the cortical seed level is judged a fluid only where most of it holds
#: a box this far (mm) each side above that level: a layer of settled contrast 7 mm deep or more. An
#: isolated piece of cortex that thick, and that uniform, does not occur.
FLUID_THICK_HALF_MM = 3.0
#: Passes of the fill without closing: filling slice holes can enclose new 3-D cavities.
FILL_PASSES = 3
#: Voxels of slice holes in this range (HU, smoothed by a voxel) are water-like fluid (cerebrospinal fluid in
#: the spinal canal inside a vertebral arch, urine, joint fluid, cysts), never bone: marrow is fat
#: (below it) or red marrow and trabeculae (above it).
FLUID_HU = (-20.0, 35.0)
#: A cortex whose peak reaches this fraction of the way from soft tissue to the cortical level is resolved:
#: thicker than the blur, so the half maximum between it and the tissue beyond lies on its surface
#: (:func:`trim_resolved_rim`). Fainter peaks (a thin cortex under thick slices, an osteoporotic one)
#: are not, and the voxels on their outer slope can hold cancellous bone (a vertebral body at 2 mm slices).
RESOLVED_CORTEX_FRACTION = 0.75
#: Along axes at least this coarse (mm) every outer voxel of the mask is judged against its inner
#: neighbour, resolved cortex or not (:func:`trim_resolved_rim`): a voxel of 3 mm is several times a
#: cortex and the scanner's blur, so its value is the average of what it holds, and the outer voxel's
#: bone is the outermost, densest part of the bone (the cortex). Not at 2 mm: on the real DICOM
#: (2 mm slices) judging its slice axis so took 3 % of the spine's voxels above 200 HU out of the mask.
COARSE_RIM_MIN_MM = 2.5
#: ... and it lies outside the surface when it reads below this fraction of the way from the voxel
#: outside to the voxel inside: above the half maximum, since the cortex it holds reads brighter than
#: its share of bone (anatomic dev seeds 9100-9105 at 3 mm: bone Dice 0.930 -> 0.946; on 9100-9103,
#: 0.7 scored 0.955 against 0.951 for 0.6 with two to three times the missed voxels; 0.6 chosen).
COARSE_RIM_LEVEL = 0.6
#: A piece of the mask below the cortical seed level that no brighter rim encloses is judged a fluid
#: (:func:`unenclosed_fluid`) from this size (ml) up: smaller pieces (a few voxels of 3 mm) are
#: too few to tell cancellous bone cut off by a bright trabecula from the lumen of a small vessel.
UNENCLOSED_FLUID_MIN_ML = 1.0
#: A pool of contrast (the bladder, settled in a large vessel) brighter than the cortical seed level is
#: judged from this size (ml) up (:func:`bright_pools`); the thick bone cores that pass the same
#: thickness test are a few ml (a femoral head's cancellous core at 3 mm: 1.8-7 ml on the phantom).
BRIGHT_POOL_MIN_ML = 10.0
#: A bright pool is as uniform as the noise: at least this share of its inner voxels within 3 noise SDs
#: of its median (contrast pools on the phantoms: 0.98-1.00; thick cores of bone: 0.64-0.93).
BRIGHT_POOL_UNIFORM_SHARE = 0.95
#: ... and its 99th percentile within this many noise SDs of its median (pools 2.3-3.0, bone 4.0-6.7:
#: trabecular texture and the cortex).
BRIGHT_POOL_MAX_TOP_SD = 3.5
#: One-voxel gaps are bridged only along axes at least this coarse (mm): the slice axis of 3 mm
#: slices (:func:`_bridged_coarse_cavities`), and in-plane for slice holes where the pixels are
#: (:func:`_bridged_slice_holes`). There a cortex 0.5-1.5 mm thick, cut obliquely, reads low in
#: single voxels; along finer axes it is resolved, and a one-voxel gap is an opening of a millimetre
#: or less that is really there (a joint space narrowing at the rim of the socket, which bridged
#: would join head and socket).
BRIDGE_MIN_PIXEL_MM = 2.0


def fill_cavities(mask, spacing=None, *, closing_mm: float = 0.0, max_slice_hole_mm2: float = 0.0, fluid=None,
                  bridge_gaps: bool = False, image=None, barrier=None):
    """Fill cavities enclosed by bone (marrow, low-density cancellous bone).

    A cavity is a background region not connected to the volume's sides; the
    two axial end faces count as closed, so the marrow of a femoral shaft that
    leaves the field of view at the bottom is filled, while the pelvic cavity
    (open between the bones) stays open.

    Parameters
    ----------
    mask : bool array
    spacing : tuple of 3 float
        Needed when ``closing_mm`` or ``max_slice_hole_mm2`` is set.
    closing_mm : float
        After the cavities of the mask itself (repeated, up to
        :data:`FILL_PASSES` times, while a pass fills slice holes), also those of the mask closed
        by about this much (a thin cortex with gaps still encloses its marrow);
        the closing itself is never added.
    max_slice_hole_mm2 : float
        Also holes within one axial slice up to this area (an iliac body or a
        sacrum at S1 is up to about 45 cm^2 in a slice, a femoral head 20 cm^2;
        the true pelvis is 70 cm^2 and more) and at least :data:`SLICE_HOLE_MIN_WIDTH_MM` wide,
        except where the slice holes that no 3-D cavity explains stack up to
        no more than :data:`SLICE_HOLE_MIN_DEPTH_MM` along the slice axis
        (the joint space where a slice cuts it tangentially). 0 disables.
    fluid : bool array, optional
        :func:`fluid_voxels` of the CT: those voxels of slice holes, and of cavities that only the
        closing encloses, are not filled (a spinal canal enclosed by its vertebral arch). Without
        it every one counts.
    bridge_gaps : bool
        Gaps of one voxel along an axis of :data:`BRIDGE_MIN_PIXEL_MM` or coarser count as closed:
        a thin cortex cut obliquely by 3 mm slices reads low in single voxels. With ``closing_mm``,
        before the closing's pass, the 3-D cavities of the mask closed by one voxel along those
        axes only (:func:`_bridged_coarse_cavities`); last, the slice holes that a ring with
        one-pixel gaps encloses (``fill_holes_2d``'s ``bridge_gaps``), where the in-plane pixels
        are that coarse: one such gap per slice opens the marrow of a whole bone, slice after slice.
    image : array, optional
        With ``bridge_gaps``: the CT. A region (6-connected) that only a ring with gaps encloses is
        filled when its median lies at or above fat (:data:`FLUID_HU`'s lower end): cancellous bone
        does, while a fat pocket between two bones (the acetabular fossa, enclosed by the head and
        the socket where the joint space narrows to a voxel) does not. Fatty marrow inside an
        intact cortex is still filled by the plain reading. Without it every region counts.
    barrier : bool array, optional
        With ``bridge_gaps``: voxels the coarse-axis bridge never closes (the dark sheets between two
        cortices that the energy found, :attr:`thagpu.bone.energy.Energy.sheets`): a joint space cut
        tangentially by 3 mm slices is a one-voxel gap along the slice axis, and the cartilage it
        walls in reads above fat.
    """
    if closing_mm > 0:
        # Cavities enclosed as they are first (also those narrower than the closing, which the
        # closing would swallow), then those that only a closed shell encloses.
        # Repeated while a pass fills slice holes: they can seal the leak of a 3-D cavity (an
        # osteoporotic hip bone whose blurred cortex reads low in isolated voxels). A pass that fills
        # 3-D cavities alone leaves nothing for the next: each slice region lies wholly inside or
        # outside a 3-D cavity, so the other slice regions, and their verdicts, stay as they were.
        mask = _plain_passes(mask, spacing, max_slice_hole_mm2, fluid)
        if bridge_gaps:
            bridged = _bridged_coarse_cavities(mask, spacing, fluid, image, barrier)
            if bool(bridged.any()):
                # The pockets bridged can seal the leak of a cavity beyond them, which the plain
                # passes then fill; that is judged like the pockets (a fat pocket stays open).
                sealed = _plain_passes(mask | bridged, spacing, max_slice_hole_mm2, fluid) & ~mask & ~bridged
                mask = mask | bridged | (_above_fat(sealed, image) if image is not None else sealed)
    mask = _fill_once(mask, spacing, closing_mm, max_slice_hole_mm2, fluid)[0]
    if bridge_gaps and max_slice_hole_mm2 > 0 and min(spacing[:2]) >= BRIDGE_MIN_PIXEL_MM:
        # Last, and never fed back into the 3-D passes: a bridged slice hole must not seal a
        # fat pocket (the fossa) into a 3-D cavity that the next pass would fill unjudged.
        mask = mask | _bridged_slice_holes(mask, spacing, max_slice_hole_mm2, fluid, image)
    return mask


def _plain_passes(mask, spacing, max_slice_hole_mm2: float, fluid=None):
    """The fill without closing, repeated (up to :data:`FILL_PASSES` times) while a pass fills slice holes."""
    for _ in range(FILL_PASSES):
        mask, sealed = _fill_once(mask, spacing, 0.0, max_slice_hole_mm2, fluid)
        if not sealed:
            break
    return mask


def _slice_hole_width(spacing):
    """Pixels a slice hole must span along each axis somewhere (:data:`SLICE_HOLE_MIN_WIDTH_MM`)."""
    return [2 * max(1, int(round(SLICE_HOLE_MIN_WIDTH_MM / 2 / s))) + 1 for s in spacing]


def _bridged_coarse_cavities(mask, spacing, fluid=None, image=None, barrier=None):
    """Cavities that the mask encloses once closed by one voxel along its coarse axes, less fluid and fat.

    Along an axis of :data:`BRIDGE_MIN_PIXEL_MM` or coarser (the slice axis of 3 mm slices), a thin
    cortex crossed obliquely averages with the tissue beside it and drops out in single voxels, and
    the pockets of cancellous bone behind it open to the outside. The 4 mm closing encloses them
    too, but also swallows them: a pocket narrower than its box (the interior of an iliac wing, of a
    pubic ramus, or a layer one or two slices deep) becomes part of the closed shell, which is never
    added. A one-voxel closing along the coarse axes bridges only those gaps. Along finer axes a
    one-voxel gap is an opening that is really there (a narrowed joint space), so they are left
    as they are. Each region found (6-connected) is added when its median CT is at or above fat
    (:func:`_above_fat`): a fat pocket closed off this way (the acetabular fossa under a joint space
    cut tangentially by the slices) stays open. The closing never covers a ``barrier`` voxel: a
    cartilage pocket (above fat) walled in where the slices cut a joint space tangentially leaks
    out through its dark sheet and stays open.
    """
    axes = [axis for axis, s in enumerate(spacing) if s >= BRIDGE_MIN_PIXEL_MM]
    if not axes:
        return get_array_module(mask).zeros_like(mask)
    closed = box_closing_voxels(mask, [1 if s >= BRIDGE_MIN_PIXEL_MM else 0 for s in spacing])
    if barrier is not None:
        closed &= ~barrier
    closed |= mask
    extra = _enclosed(closed) & ~closed
    if fluid is not None:
        extra &= ~fluid
    return _above_fat(extra, image) if image is not None else extra


def _bridged_slice_holes(mask, spacing, max_slice_hole_mm2: float, fluid=None, image=None):
    """Slice holes that only a ring with one-pixel gaps encloses, less fluid voxels and fatty regions."""
    max_area = max_slice_hole_mm2 / (spacing[0] * spacing[1])
    width = _slice_hole_width(spacing)
    # (The plain reading's holes are in ``mask`` already, but for the fluid and thin ones, which
    # are taken out again below.)
    holes = fill_holes_2d(mask, axis=2, max_area_vox=max_area, min_width_vox=width, bridge_gaps=True) & ~mask
    holes &= ~thin_along_slices(holes, spacing[2], SLICE_HOLE_MIN_DEPTH_MM)
    if fluid is not None:
        holes &= ~fluid
    return _above_fat(holes, image) if image is not None else holes


def closed_interior(mask, image, spacing, *, closing_mm: float, max_slice_hole_mm2: float, min_wall_share: float,
                    barrier=None, background_seed=None, fluid=None):
    """What a small closing of ``mask`` adds, with its slice holes, where the mask walls it in.

    Where a faint cortex reads as a ring with gaps and the cancellous bone inside it as blobs
    (osteoporotic bone through a sharp reconstruction kernel), the gaps open the plain fill's slice
    holes to the outside, and the closing that bridges them (:func:`fill_cavities`' ``closing_mm``)
    also covers the blotchy interior, so that what it leaves is narrower than a slice hole must be.
    Here the mask is closed by a small box (half-width ``closing_mm``), never across a ``barrier``
    voxel (a joint space: two bones' surfaces are this close there). The voxels the closing adds and
    the slice holes of the closed mask (up to ``max_slice_hole_mm2``, whatever their width), less
    the barrier itself, fluid (``fluid``, else :func:`fluid_voxels` of ``image``), seeded background
    and fatty regions (:func:`_above_fat`), form regions in each slice; a region is taken where at
    least ``min_wall_share`` of its border in the slice is ``mask`` (beyond the array counts as not
    mask): the marrow of a broken cortex is walled by the cortex and its blobs, with a few gaps,
    while what the closing adds in a concavity of a bone's outer surface, or between two bones,
    faces the tissue outside (or a barrier) along its mouth.

    Returns
    -------
    bool array
        The voxels taken (none of ``mask``).
    """
    xp = get_array_module(mask)
    closed = box_closing(mask, closing_mm, spacing)
    if barrier is not None:
        closed &= ~barrier
    closed |= mask
    holes = fill_holes_2d(closed, axis=2, max_area_vox=max_slice_hole_mm2 / (spacing[0] * spacing[1])) & ~mask
    if barrier is not None:  # (a closed mask can still enclose a stretch of a barrier in a slice)
        holes &= ~barrier
    holes &= ~(fluid if fluid is not None else fluid_voxels(image))
    if background_seed is not None:
        holes &= ~background_seed
    holes = _above_fat(holes, image)
    if min_wall_share <= 0:
        return holes
    box = bounding_box(holes, (1, 1, 0))
    if box is None:
        return holes
    inner, wall = holes[box], mask[box]
    labels, count = ndimage_for(inner).label(inner, structure=xp.asarray(in_plane_structure(2)))
    # Each pixel edge of a hole's outline counts once: the hole pixel, its neighbour outside. The
    # edges are counted per pixel first, then summed per region in one weighted bincount each.
    edges = xp.zeros(inner.shape, dtype=xp.uint8)
    walled_edges = xp.zeros(inner.shape, dtype=xp.uint8)
    for axis in (0, 1):
        for step in (1, -1):
            outside = ~_shifted(inner, axis, step)
            edges += outside
            walled_edges += outside & _shifted(wall, axis, step)
    region = labels[inner]
    border = bincount(region, weights=edges[inner].astype(xp.float64), minlength=count + 1)
    walled = bincount(region, weights=walled_edges[inner].astype(xp.float64), minlength=count + 1)
    keep = walled >= min_wall_share * xp.maximum(border, 1.0)
    keep[0] = False
    out = xp.zeros_like(holes)
    out[box] = keep[labels]
    return out


def _shifted(array, axis: int, step: int):
    """``array`` at each voxel's neighbour ``step`` (+1 or -1) along ``axis``; False beyond the array."""
    xp = get_array_module(array)
    out = xp.zeros_like(array)
    here, there = [slice(None)] * array.ndim, [slice(None)] * array.ndim
    here[axis], there[axis] = (slice(0, -1), slice(1, None)) if step > 0 else (slice(1, None), slice(0, -1))
    out[tuple(here)] = array[tuple(there)]
    return out


def _fill_once(mask, spacing, closing_mm: float, max_slice_hole_mm2: float, fluid=None):
    """One pass of :func:`fill_cavities`: the filled mask, and whether it filled any slice hole."""
    shell = box_closing(mask, closing_mm, spacing) | mask if closing_mm > 0 else mask
    extra = _enclosed(shell)
    if closing_mm > 0 and fluid is not None:
        # What only the closed shell encloses is open through the gaps the closing bridged: fluid
        # there (a spinal canal closed off at the intervertebral foramina) stays open.
        extra &= ~(fluid & ~_enclosed(mask))
    sealed = False
    if max_slice_hole_mm2 > 0:
        holes = fill_holes_2d(shell, axis=2, max_area_vox=max_slice_hole_mm2 / (spacing[0] * spacing[1]),
                              min_width_vox=_slice_hole_width(spacing)) & ~shell & ~extra
        holes &= ~thin_along_slices(holes, spacing[2], SLICE_HOLE_MIN_DEPTH_MM)
        if fluid is not None:
            holes &= ~fluid
        sealed = bool(holes.any())
        extra |= holes
    return mask | (extra & ~shell), sealed


def _above_fat(regions, image):
    """The 6-connected regions of ``regions`` whose median CT is at least :data:`FLUID_HU`'s lower end.

    Judged per region on the raw CT, by its median: a fat pocket a few voxels wide has a rim of
    partial-volume voxels brighter than fat that lifts its mean, and alone would be a shell of false
    bone.
    """
    xp = get_array_module(regions)
    box = bounding_box(regions, 0)
    if box is None:
        return regions
    labels, count = ndimage_for(regions).label(regions[box])
    size = bincount(labels.ravel(), minlength=count + 1)
    fatty = bincount(labels.ravel(), weights=(image[box] < np.float32(FLUID_HU[0])).ravel().astype(xp.float32),
                         minlength=count + 1)
    keep = fatty * 2 <= size
    keep[0] = False
    out = xp.zeros_like(regions)
    out[box] = keep[labels]
    return out


def _homogeneous(labels, count, image, noise_hu, max_median_hu=np.inf, thick=None):
    """Per label: no cortex (its 99th percentile within 6 noise SDs of its median, its outer voxel
    layer not brighter on average than the median by a noise SD), and either at least
    :data:`HOMOGENEOUS_SHARE` of its inner voxels within 3 noise SDs of its median with the median
    below ``max_median_hu``, or most of its voxels ``thick`` (above the seed level over a box
    :data:`FLUID_THICK_HALF_MM` each side: no cortex is, a layer of settled contrast is).

    The share is taken over the component's inner voxels (those of a one-voxel erosion) where it has
    at least :data:`MIN_INNER_VOXELS`: the rim of a contrast-filled vessel 7-9 mm wide is half of
    its voxels at 1 mm and all partial volume, so over every voxel a vessel is never uniform. The
    median and the 99th percentile stay those of every voxel: a bone's cortex is its rim.
    """
    xp = get_array_module(labels)
    median, top = _median_and_top(labels, count, image)
    inner = xp.where(erode_one_voxel(labels > 0), labels, 0)
    # Counts at the labelled voxels only (most of the grid is no component; label 0's count is unused).
    where = xp.flatnonzero(labels)
    owner = labels.ravel()[where]
    use_inner = bincount(inner.ravel()[where], minlength=count + 1) >= MIN_INNER_VOXELS
    judged = xp.where(use_inner[labels], inner, labels)  # the inside of components, all voxels of thin ones
    share = _share_near_median(judged, count, image, median, noise_hu)
    # ... and no cortex: bone, however uniform its cancellous part (osteoporotic bone at 3 mm), has
    # a rim brighter than its inside: a bright top, or an outer voxel layer brighter on average than
    # the median by a noise SD (a faint cortex, 250 HU over 140 HU marrow with 40 HU noise at 3 mm:
    # the mean of hundreds of rim voxels carries little noise). A fluid's rim is partial volume,
    # darker than its inside.
    rim = (inner.ravel()[where] == 0) & use_inner[owner]
    rim_owner = owner[rim]
    rim_sizes = bincount(rim_owner, minlength=count + 1)
    rim_mean = (bincount(rim_owner, weights=image.ravel()[where[rim]].astype(xp.float64), minlength=count + 1)
                / xp.maximum(rim_sizes, 1))
    cortex = (rim_sizes > 0) & (rim_mean > median + np.float32(noise_hu))
    no_cortex = (top <= median + np.float32(6.0 * noise_hu)) & ~cortex
    out = no_cortex & (share >= HOMOGENEOUS_SHARE) & (median < max_median_hu)
    if thick is not None:
        # Mostly thicker than a cortex above the seed level, and no brighter rim: a pool of contrast,
        # whatever its uniformity (settled contrast layers, 3 mm slices average across the layers).
        sizes = xp.maximum(bincount(owner, minlength=count + 1), 1)
        out |= no_cortex & (bincount(owner[thick.ravel()[where]], minlength=count + 1) >= 0.5 * sizes)
    out[0] = False
    return out


def _share_near_median(labels, count, image, median, noise_hu):
    """Per label: the share of its voxels within 3 noise SDs of ``median`` (its own)."""
    xp = get_array_module(labels)
    where = xp.flatnonzero(labels)
    region = labels.ravel()[where]
    close = xp.abs(image.ravel()[where] - median[region]) <= np.float32(3.0 * noise_hu)
    return (bincount(region, weights=close.astype(xp.float64), minlength=count + 1)
            / xp.maximum(bincount(region, minlength=count + 1), 1))


def _median_and_top(labels, count, image):
    """Per label: the median and the 99th percentile of the CT over its voxels."""
    xp = get_array_module(labels)
    where = xp.flatnonzero(labels)
    region = labels.ravel()[where]
    values = image.ravel()[where]
    order = xp.lexsort(xp.stack([values, region]))  # by label, then by value
    region, values = region[order], values[order]
    sizes = bincount(region, minlength=count + 1)
    starts = xp.cumsum(sizes) - sizes
    last = max(len(values) - 1, 0)
    median = values[xp.minimum(starts + sizes // 2, last)]
    top = values[xp.minimum(starts + (0.99 * xp.maximum(sizes - 1, 0)).astype(sizes.dtype), last)]
    return median, top


def fluid_voxels(image):
    """Voxels whose CT, smoothed by a Gaussian of one voxel, lies in :data:`FLUID_HU`.

    Voxel by voxel rather than region by region: a slice hole can join the spinal canal and the
    cancellous bone of a vertebral body whose thin posterior wall does not show.
    """
    xp = get_array_module(image)
    smooth = ndimage_for(image).gaussian_filter(image.astype(xp.float32, copy=False), 1.0, mode="nearest")
    return (smooth >= np.float32(FLUID_HU[0])) & (smooth <= np.float32(FLUID_HU[1]))


def thin_along_slices(mask, slice_mm: float, max_mm: float):
    """Voxels of ``mask`` in runs along the slice axis (axis 2) spanning at most ``max_mm``.

    A joint space is a sheet 1-5 mm thick; where an axial slice cuts it
    tangentially (around the top of the femoral head, under the acetabular
    roof) it is a wide hole enclosed within the slice, but only a few slices
    deep. Marrow and cancellous cavities are many slices deep. A 1-D opening
    along the slice axis by a line one voxel longer than ``max_mm`` keeps the
    deep runs. When slices are thicker than ``max_mm / 2`` a sheet is a single
    slice and cannot be told from a one-slice pocket of a fragmented
    osteoporotic head, so nothing is thin there (all ``False``).
    """
    xp = get_array_module(mask)
    n = int(np.floor(max_mm / slice_mm + 1e-9)) + 1
    if n < 4:
        return xp.zeros_like(mask)
    runs = minimum_filter1d(mask.view(xp.uint8), n, axis=2, mode="nearest")
    deep = maximum_filter1d(runs, n, axis=2, mode="constant", cval=0, origin=-1 if n % 2 == 0 else 0)
    return mask & ~deep.astype(bool)


def trim_resolved_rim(mask, image, spacing, *, peak_min_hu: float, closing_mm: float, level: float = 0.5,
                      coarse_mm: float = COARSE_RIM_MIN_MM, coarse_level: float = COARSE_RIM_LEVEL, outside=None):
    """``mask`` less the outer voxels that lie on the soft side of a resolved cortex's half maximum.

    A CT blurs a bone surface over a millimetre or two, and the graph cut keeps the first voxel
    layer outside a bright cortex wherever the blur lifts it above the intensity model's bone
    level (a voxel 0.5 mm outside a 1500 HU cortex reads about 700 HU at 1 mm voxels). Along each
    array axis, a voxel of the mask's outer layer with a brighter mask voxel (the peak, at least
    ``peak_min_hu``) on one side and a darker voxel outside the bone on the other lies outside the
    surface when it reads below ``level`` of the way from the outer voxel to the peak: the
    half-maximum rule, exact where the peak is the cortex's own density. One voxel layer at most
    is removed, so no bone is eroded beyond it.

    Along axes of ``coarse_mm`` or coarser (the slice axis of 3 mm slices, every axis of a 3 mm
    reconstruction) any brighter mask voxel inside counts as the peak and the level is
    ``coarse_level``: a voxel that coarse averages what it holds, and the outer voxel holds the
    outermost bone, the cortex, which reads brighter than its share of the voxel. Its centre lies in
    bone only when it reads well above the half maximum.

    "Outside the bone" is outside the mask closed by ``closing_mm`` (a box, rounded to whole
    voxels per axis, at least one) with its cavities filled: a gap or a hole in an osteoporotic
    cortex, whose cancellous bone reads close to soft tissue, is not a soft side. Every voxel
    judged lies next to the outside, and the brightest voxel of each piece of bone stays, so one
    layer at most goes and no piece vanishes (a neck one voxel thin can be cut; the cleanup then
    judges the pieces).

    Parameters
    ----------
    mask : (X, Y, Z) bool array
        NumPy or CuPy.
    image : (X, Y, Z) float32 array
        The CT (HU), raw: the half maximum is a property of the blurred profile itself.
    spacing : tuple of 3 float
        Voxel size (mm).
    peak_min_hu : float
        Least CT of a peak whose outer slope is judged (a resolved cortex).
    closing_mm : float
        Half-width (mm) of the box closing that tells the outside of the bone from gaps in its
        cortex; rounded to whole voxels per axis, at least one.
    level : float
        Where between the outer voxel (0) and the peak (1) the surface lies.
    coarse_mm, coarse_level : float
        Axes this coarse (mm) judge every outer voxel, at ``coarse_level`` (see above); ``inf``
        turns it off.
    outside : (X, Y, Z) bool array, optional
        The outside of the bone where it is known already (coarse-to-fine BE: from its coarse
        mask, at a sixteenth of the cost); ``mask`` voxels in it count as inside. Without it, it
        is found by the closing.

    Returns
    -------
    (X, Y, Z) bool array
        The trimmed mask (a new array), on the input's device.
    """
    xp = get_array_module(mask)
    outside = bone_outside(mask, spacing, closing_mm) if outside is None else outside & ~mask
    resolved = mask & (image >= np.float32(peak_min_hu))
    # Only voxels of the mask next to the outside (and to a resolved peak, where no axis is coarse)
    # can be on a slope; a few percent of the mask, judged one by one (gathered by coordinates:
    # ``image`` may be a view of a crop, and flattening it would copy it).
    coarse = [s >= coarse_mm for s in spacing]
    near = box_dilation(outside, 1)
    if not any(coarse):
        near &= box_dilation(resolved, 1)
    coords = xp.nonzero(mask & near)
    trimmed = mask.copy()
    if coords[0].size == 0:
        return trimmed
    value = image[coords]
    rim = xp.zeros(value.shape, dtype=bool)
    for axis, n in enumerate(mask.shape):
        interior = (coords[axis] > 0) & (coords[axis] < n - 1)
        peaks, at = (mask, np.float32(coarse_level)) if coarse[axis] else (resolved, np.float32(level))
        # Clipped at the array's sides; voxels there are never judged (``interior``).
        before = tuple(xp.maximum(c - 1, 0) if a == axis else c for a, c in enumerate(coords))
        after = tuple(xp.minimum(c + 1, n - 1) if a == axis else c for a, c in enumerate(coords))
        for inner, outer in ((before, after), (after, before)):
            peak, trough = image[inner], image[outer]
            rim |= (interior & peaks[inner] & outside[outer]
                    & (trough < value) & (value < trough + at * (peak - trough)))
    trimmed[tuple(c[rim] for c in coords)] = False
    return trimmed


def bone_outside(mask, spacing, closing_mm: float):
    """The voxels outside ``mask`` closed by a box of half-width ``closing_mm`` with its cavities
    filled: the outside of the bone, not a gap or a hole in its cortex (see :func:`trim_resolved_rim`)."""
    closed = box_closing(mask, closing_mm, spacing) | mask
    return ~(closed | _enclosed(closed))


def unenclosed_fluid(mask, image, spacing, *, bright_hu: float, noise_hu: float,
                     min_ml: float = UNENCLOSED_FLUID_MIN_ML):
    """Uniform pieces of the mask, darker than the cortex, that no brighter rim encloses: contrast in
    vessels lying on a bone.

    An artery or vein filled with contrast reads 150-450 HU: bone to any intensity model, and
    above an osteoporotic cancellous bone (50-150 HU). The iliac, gluteal, obturator and femoral
    vessels run along the pelvis and the hip and touch the bone through partial volume, so the cut
    takes them and they hang together with the skeleton, where the component rules of
    :func:`remove_non_skeletal` never see them alone. Cancellous bone lies inside a cortex; a vessel
    lumen has soft tissue around it except along the strip where it touches the bone. So the mask
    is cut into pieces below ``bright_hu`` (the voxels at or above it and their neighbours taken
    out), and a piece goes when all of these hold:

    * no brighter rim: fewer than :data:`~thagpu.bone.seeds.UNENCLOSED_MAX_BRIGHTER_SHARE` of the
      voxels around it have a neighbour brighter than the piece's mean by 3 noise SDs
      (:func:`~thagpu.bone.seeds.unenclosed_pieces`, the same test that keeps vessels out of the
      cancellous prior of the energy);
    * uniform, with no cortex of its own (:func:`_homogeneous`: a fluid is as uniform as the noise);
    * at least ``min_ml``.

    Parameters
    ----------
    mask : (X, Y, Z) bool array
    image : (X, Y, Z) float32 array
        The CT (NumPy or CuPy, like ``mask``).
    spacing : tuple of 3 float
    bright_hu : float
        The cortical seed level: voxels at or above it are bone evidence and never judged here.
    noise_hu : float
        The CT's noise SD.
    min_ml : float
        Smallest piece judged.

    Returns
    -------
    (X, Y, Z) bool array
        The voxels of the pieces judged a fluid.
    """
    from .seeds import unenclosed_pieces  # seeds imports this module

    xp = get_array_module(mask)
    bright = image >= np.float32(bright_hu)
    candidates = unenclosed_pieces(mask, bright, image, spacing, margin_hu=3.0 * float(noise_hu))
    box = bounding_box(candidates, 1)
    if box is None:
        return xp.zeros(mask.shape, dtype=bool)
    labels, count = ndimage_for(mask).label(candidates[box])
    sizes = bincount(labels.ravel(), minlength=count + 1) * (float(np.prod(spacing)) / 1000.0)
    fluid = _homogeneous(labels, count, image[box], noise_hu) & (sizes >= min_ml)
    out = xp.zeros(mask.shape, dtype=bool)
    out[box] = fluid[labels]
    return out


def bright_pools(mask, image, spacing, *, level_hu: float, noise_hu: float, min_ml: float = BRIGHT_POOL_MIN_ML):
    """Pools of contrast in the mask brighter than ``level_hu``: the bladder, a contrast-filled vessel.

    Excreted contrast in the bladder reads 300-2000 HU, as bright as a cortex or brighter than an
    osteoporotic one, and the bladder lies on the pubic bones, so the cut takes it and it hangs
    together with the skeleton (where :func:`remove_non_skeletal`'s component rules never see it
    alone) while :func:`unenclosed_fluid` only judges what lies below the cortical level. No bone is
    both thick and uniform above that level: a cortex is a few millimetres thick, and the thick cores
    of cancellous bone that reach it (a femoral head at 3 mm voxels) carry trabecular texture and a
    brighter rim. So the cores of the mask above ``level_hu`` that hold a box
    :data:`FLUID_THICK_HALF_MM` each side (:func:`~.intensity.thick_bright`) are judged one by one
    (26-connected), and a core goes when all of these hold:

    * at least ``min_ml``;
    * at least :data:`BRIGHT_POOL_UNIFORM_SHARE` of its inner voxels within 3 noise SDs of its median;
    * its 99th percentile within :data:`BRIGHT_POOL_MAX_TOP_SD` noise SDs of its median.

    Where the pool reads near ``level_hu`` the noise keeps the box from fitting in part of it: a piece
    of the mask that only the cores joined to the rest (26-connected), uniform with no cortex of its
    own (:func:`_homogeneous`) and with a median within 3 noise SDs of that of a pool it touches, goes
    with them. So do the voxels next to a core below ``level_hu`` (its partial-volume rim); where a
    pool touches a bone, the bone's voxels at or above the level stay.

    Parameters
    ----------
    mask : (X, Y, Z) bool array
    image : (X, Y, Z) float32 array
        The CT (NumPy or CuPy, like ``mask``).
    spacing : tuple of 3 float
    level_hu : float
        The cortical seed level.
    noise_hu : float
        The CT's noise SD.
    min_ml : float
        Smallest core judged.

    Returns
    -------
    (X, Y, Z) bool array
        The voxels of the cores judged a pool.
    """
    xp = get_array_module(mask)
    out = xp.zeros(mask.shape, dtype=bool)
    # A margin of the box's half-width: the filters continue the edge, and a plate on the face of a
    # tight box would pass for thicker than it is.
    half = [max(1, int(round(FLUID_THICK_HALF_MM / float(s)))) for s in spacing]
    box = bounding_box(mask, half)
    if box is None:
        return out
    image, mask = image[box], mask[box]
    core = thick_bright(image, spacing, level_hu, FLUID_THICK_HALF_MM) & mask
    if not bool(core.any()):
        return out
    labels, count = ndimage_for(core).label(core, structure=xp.ones((3, 3, 3), dtype=bool))
    sizes = bincount(labels.ravel(), minlength=count + 1) * (float(np.prod(spacing)) / 1000.0)
    median, top = _median_and_top(labels, count, image)
    inner = xp.where(erode_one_voxel(core), labels, 0)
    judged = xp.where(bincount(inner.ravel(), minlength=count + 1)[labels] >= MIN_INNER_VOXELS, inner, labels)
    pool = ((sizes >= min_ml) & (_share_near_median(judged, count, image, median, noise_hu) >= BRIGHT_POOL_UNIFORM_SHARE)
            & (top <= median + np.float32(BRIGHT_POOL_MAX_TOP_SD * noise_hu)))
    pool[0] = False
    if not bool(pool.any()):
        return out
    # The pools, with the partial-volume rim around them below the level (brighter voxels there are
    # the cortex of a bone the pool lies on), each voxel carrying its pool's label.
    owner = xp.where(pool[labels], labels, 0)
    grown = _grow_labels(owner)
    owner = xp.where((owner > 0) | ((grown > 0) & mask & (image < np.float32(level_hu))), grown, 0)
    cores = owner > 0
    # The rest of a pool that reads near the level, where noise keeps the box from fitting: the pieces
    # of the mask that only the cores held to the bone, as uniform as a fluid, with no cortex, and
    # with a median within 3 noise SDs of that of a pool they touch.
    rest = mask & ~cores
    rest_labels, rest_count = ndimage_for(rest).label(rest, structure=xp.ones((3, 3, 3), dtype=bool))
    if rest_count == 0:
        out[box] = cores
        return out
    around = _grow_labels(owner)
    next_to = rest & (around > 0)
    touched = xp.full(rest_count + 1, np.nan, dtype=xp.float32)
    touched[rest_labels[next_to]] = median[around[next_to]]  # a piece touching two pools keeps one
    rest_median, _ = _median_and_top(rest_labels, rest_count, image)
    same = ((xp.abs(rest_median - touched) <= np.float32(3.0 * noise_hu))  # NaN (no pool touched): False
            & _homogeneous(rest_labels, rest_count, image, noise_hu))
    same[0] = False
    out[box] = cores | same[rest_labels]
    return out


def _grow_labels(labels):
    """Each voxel the largest label in its 3 x 3 x 3 neighbourhood (a one-voxel dilation of labels)."""
    grown = labels
    for axis in range(3):
        grown = maximum_filter1d(grown, 3, axis=axis, mode="constant", cval=0)
    return grown


def _enclosed(mask):
    """Background not 6-connected to the i or j faces of the volume (the k end faces count as closed).

    The same result as ``binary_fill_holes`` on the mask padded with bone at
    both k ends, from one connected-component labelling, which is much faster
    than SciPy's iterated dilation.
    """
    xp = get_array_module(mask)
    ndi = ndimage_for(mask)
    labels, count = ndi.label(~mask)
    if count == 0:
        return xp.zeros_like(mask)
    return ~labels_on_border(labels, count, axis=2)[labels]


def remove_non_skeletal(mask, body, spacing, *, min_island_ml: float, skeleton_min_ml: float,
                        max_gap_mm: float, min_inside_fraction: float = 0.5, body_margin_mm: float = 5.0,
                        image=None, noise_hu: float | None = None, fluid_max_hu: float = np.inf):
    """Keep the skeleton and what lies close to it; drop islands, the table, calcifications, contrast.

    Components (26-connected) are dropped when smaller than ``min_island_ml``,
    when less than ``min_inside_fraction`` of them lies deeper than
    ``body_margin_mm`` inside the body (the scanner table, skin markers), or
    when they are smaller than ``skeleton_min_ml`` and farther than
    ``max_gap_mm`` from every component at least that large (vessel
    calcifications, contrast, fragments of noise). With ``image`` and
    ``noise_hu``, also components of which at least :data:`HOMOGENEOUS_SHARE`
    of the voxels lie within 3 noise SDs of the component's median, with no
    rim brighter than 6 noise SDs above it (a cortex), and a median below
    ``fluid_max_hu`` (the cortical seed level: a uniform block of cortical
    density is not judged by its uniformity) unless most of it is thicker than any
    cortex (:func:`~.intensity.thick_bright` at ``fluid_max_hu``): a fluid
    (contrast settled in the bladder, 300-1500 HU, or filling a vessel or the
    bowel) is as uniform as the noise, while bone always mixes cortex with
    cancellous bone or marrow (on the anatomic phantoms 29-63 % of a bone's
    voxels, 91 % of a contrast-filled bladder's).

    Returns
    -------
    mask : bool array
    report : dict
        Counts of components kept and dropped for each reason.
    """
    xp = get_array_module(mask)
    ndi = ndimage_for(mask)
    structure = np.ones((3, 3, 3), dtype=bool)
    labels, count = ndi.label(mask, structure=structure if xp is np else xp.asarray(structure))
    report = {"components": int(count), "dropped_small": 0, "dropped_outside_body": 0,
              "dropped_far_from_skeleton": 0, "dropped_homogeneous": 0}
    if count == 0:
        return mask.copy(), report
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # Counted at the mask's own voxels (most of the grid is no component).
    where = xp.flatnonzero(mask)
    owner = labels.ravel()[where]
    sizes = bincount(owner, minlength=count + 1).astype(xp.float64)
    core = ~dilate_mm(~body, body_margin_mm, spacing)
    inside = bincount(owner[core.ravel()[where]], minlength=count + 1).astype(xp.float64)
    volume_ml = sizes * voxel_ml
    small = volume_ml < min_island_ml
    outside = (inside / xp.maximum(sizes, 1.0)) < min_inside_fraction
    keep = ~small & ~outside
    keep[0] = False
    if image is not None and noise_hu is not None:
        thick = thick_bright(image, spacing, fluid_max_hu, FLUID_THICK_HALF_MM) if np.isfinite(fluid_max_hu) else None
        homogeneous = _homogeneous(labels, count, image, noise_hu, fluid_max_hu, thick) & keep
        keep &= ~homogeneous
        report["dropped_homogeneous"] = int(to_host(homogeneous.sum()))
    skeleton = keep & (volume_ml >= skeleton_min_ml)
    candidates = keep & ~skeleton
    far = xp.zeros_like(keep)
    if bool(candidates.any()) and bool(skeleton.any()):
        near_skeleton = dilate_mm(skeleton[labels], max_gap_mm, spacing)
        touching = xp.zeros(count + 1, dtype=bool)
        touching[labels[near_skeleton & (labels > 0)]] = True
        far = candidates & ~touching
    keep &= ~far
    report.update(dropped_small=int(to_host((small[1:]).sum())),
                  dropped_outside_body=int(to_host((outside & ~small)[1:].sum())),
                  dropped_far_from_skeleton=int(to_host(far.sum())), kept=int(to_host(keep.sum())))
    return keep[labels], report
