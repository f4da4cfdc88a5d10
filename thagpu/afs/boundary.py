"""Boundary localisation along radial lines from a head candidate.

From a centre estimate, a few hundred lines (a Fibonacci sphere) sample the
CT (:func:`thagpu.kernels.radial_profiles.radial_profiles`). Going outwards,
the head's bright cortex falls to darker cartilage or soft tissue (a negative
first derivative) and, where the socket covers the head, the joint space is
a dark valley (a positive second derivative): one boundary response combines
both. Line non-maximum suppression (:func:`thagpu.kernels.line_nms.line_nms`)
keeps the response's local maxima on each line; of those, each line takes the
one most consistent with the current sphere, lines that disagree with their
neighbours on the sphere are dropped (the radius field is smooth), and a
robust sphere fit updates the sphere; a few rounds converge.

Beyond the head surface, a rising edge within a few millimetres, after a
dark gap, is the socket's inner surface: the lines that find it are the
directions in which the acetabulum covers the head.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import ndimage as ndi

from ..device import get_array_module, to_host
from ..kernels.line_nms import line_nms
from ..kernels.radial_profiles import radial_profiles
from .fit import SphereFit, fit_sphere, fit_sphere_with_offset

__all__ = ["fibonacci_directions", "RadialBoundary", "locate_boundary", "row_nanmedian"]

#: Weakest boundary response kept by the line NMS (HU per mm).
MIN_RESPONSE = 40.0
#: Neighbouring lines compared for the smoothness of the radius field.
NEIGHBOURS = 8
#: A line whose boundary departs this much (mm) from its neighbours' median is dropped.
NEIGHBOUR_TOLERANCE_MM = 2.0
#: The socket's inner surface lies within this distance (mm) beyond the head surface.
MAX_JOINT_SPACE_MM = 6.0
#: A socket edge rises at least this much (HU) above the darkest point of the gap before it.
SOCKET_RISE_HU = 50.0
#: A line is covered by the socket when the CT beyond the head surface (from 1.5 to 5 mm) averages
#: at least this (HU): bone, where soft tissue and fat outside the joint stay below about 100 HU.
COVER_HU = 200.0
#: The head's edges beside bone get their own offset only with this many lines beside bone and as
#: many onto soft tissue.
MIN_LINES_PER_SURFACE = 30
#: ... and only where they lie at most this far inside (mm), with the centre moved as little: the
#: blur of a socket a few millimetres away moves the edge by a fraction of a millimetre (0.2-0.6 on
#: anatomic phantoms at 0.8-3 mm voxels).
MAX_BONE_OFFSET_MM = 1.0


@functools.lru_cache(maxsize=8)
def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors on the sphere (golden-angle spiral), shape (n, 3), read-only."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    rho = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * k
    directions = np.column_stack([rho * np.cos(phi), rho * np.sin(phi), z])
    directions.flags.writeable = False  # cached: shared by every caller
    return directions


@functools.lru_cache(maxsize=8)
def _neighbour_table(n: int, k: int) -> np.ndarray:
    """For each of the ``n`` Fibonacci directions, its ``k`` nearest others (same for every candidate)."""
    directions = fibonacci_directions(n)
    table = np.argsort(-(directions @ directions.T), axis=1)[:, 1:k + 1]
    table.flags.writeable = False
    return table


def _ray_sphere(origin, directions, center, radius):
    """Distance along each unit direction from ``origin`` (inside the sphere) to the sphere."""
    oc = center - origin
    b = directions @ oc
    disc = b * b - (oc @ oc - radius * radius)
    return b + np.sqrt(np.maximum(disc, 0.0))


def _subsample_peak(values, index):
    """Sub-sample offset of a peak at ``index`` by a parabola through its neighbours."""
    rows = np.arange(len(index))
    lo = values[rows, np.maximum(index - 1, 0)]
    mid = values[rows, index]
    hi = values[rows, np.minimum(index + 1, values.shape[1] - 1)]
    denominator = lo - 2.0 * mid + hi
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(np.isfinite(denominator) & (denominator < 0), 0.5 * (lo - hi) / denominator, 0.0)
    return np.clip(np.nan_to_num(offset), -0.5, 0.5)


def row_nanmedian(values) -> np.ndarray:
    """Median of each row of a 2-D array, ignoring NaN; NaN for a row without a number.

    The same as ``np.nanmedian(values, axis=1)`` without its warning, and many times faster on
    the many short rows of line neighbourhoods.
    """
    values = np.asarray(values, dtype=np.float64)
    ordered = np.sort(values, axis=1)  # NaN sorts last
    count = (~np.isnan(values)).sum(axis=1)
    rows = np.arange(len(values))
    low = ordered[rows, np.maximum(count - 1, 0) // 2]
    high = ordered[rows, count // 2]
    return np.where(count > 0, 0.5 * (low + high), np.nan)


def _peak_table(keep, response):
    """Each line's kept response maxima as two (D, K) arrays: sample index and strength.

    K is the most maxima any line kept; shorter rows are padded with strength 0 (never chosen).
    The fit rounds score only these few maxima per line, in sample order, instead of every sample.
    """
    lines, samples = np.nonzero(keep)
    count = np.bincount(lines, minlength=keep.shape[0])
    slot = np.arange(len(lines)) - np.repeat(np.cumsum(count) - count, count)
    width = max(int(count.max(initial=0)), 1)
    index = np.zeros((keep.shape[0], width), dtype=np.intp)
    strength = np.zeros((keep.shape[0], width))
    index[lines, slot] = samples
    strength[lines, slot] = response[lines, samples]
    return index, strength


@dataclasses.dataclass
class RadialBoundary:
    """The head (and socket) boundary found along radial lines.

    All positions are in the array's millimetre frame (index times spacing).

    Attributes
    ----------
    origin : (3,) ndarray
        Where the lines start.
    directions : (D, 3) ndarray
        Unit line directions.
    head_t : (D,) ndarray
        Distance of the head surface along each line; NaN where none was kept.
    socket_t : (D,) ndarray
        Distance of the socket's inner surface where a rising edge marks it; NaN elsewhere.
    outside : (D,) bool ndarray
        Lines that leave the field of view before the head surface.
    sphere : SphereFit
        The robust sphere fit of the head points: of those onto soft tissue where the lines beside
        bone lie on a concentric sphere of their own (``beside_bone``, ``bone_offset_mm``).
    covered : (D,) bool ndarray
        Lines on which bone (the socket) lies just beyond the head surface.
    separable : bool
        False when the head's edges onto soft tissue alone define another
        sphere than all its lines: where it is covered, the head's surface
        was not seen apart from the socket's (they touch, or the joint space
        is below the image's resolution); the head is then fitted from its
        uncovered part only.
    bone_beyond : (D,) bool ndarray
        Lines with bone just beyond the fitted sphere (socket or neck),
        whether or not a head edge was seen there.
    assessed : (D,) bool ndarray
        Lines whose head edge lies on the fitted sphere: those whose ``covered`` was judged (the
        others are False there for want of an edge, not for want of a socket).
    radius_offset_mm : float
        How far the sphere's radius was moved from the lines' edges (:meth:`with_radius_offset`).
    beside_bone : (D,) bool ndarray or None
        Lines whose edge was fitted on the concentric sphere ``bone_offset_mm`` beyond ``sphere``
        (:func:`_fit_beside_bone`); None where every line was fitted on ``sphere``.
    bone_offset_mm : float
        That sphere's offset (negative: inside); 0.0 where there is none.
    """

    origin: np.ndarray
    directions: np.ndarray
    head_t: np.ndarray
    socket_t: np.ndarray
    outside: np.ndarray
    sphere: SphereFit
    covered: np.ndarray
    bone_beyond: np.ndarray
    assessed: np.ndarray
    separable: bool = True
    radius_offset_mm: float = 0.0
    beside_bone: np.ndarray | None = None
    bone_offset_mm: float = 0.0

    @property
    def head_points(self) -> np.ndarray:
        ok = np.isfinite(self.head_t)
        return self.origin + self.head_t[ok, None] * self.directions[ok]

    @property
    def inlier_fraction(self) -> float:
        """Share of the lines inside the field of view whose head point lies on the fitted sphere."""
        inside = ~self.outside
        return float(self.sphere.inliers.sum() / max(int(inside.sum()), 1))

    @property
    def embedded(self) -> float:
        """Share of the lines inside the field of view with bone just beyond the sphere.

        A femoral head sits in its socket and on its neck; a trochanter stands in soft tissue.
        """
        inside = ~self.outside
        return float(self.bone_beyond[inside].mean()) if inside.any() else 0.0

    def with_radius_offset(self, offset_mm: float) -> "RadialBoundary":
        """The same boundary with the fitted sphere's radius ``offset_mm`` larger (negative: smaller).

        The blurred-cortex model (:mod:`thagpu.afs.cortex_model`) corrects the radius; the lines' edges
        stay where the profiles fall fastest, as the socket's edges do, so the joint space between the
        two and the split's mid-surface keep one convention (shifting them too let the femur's flood
        take acetabular roof at 3 mm slices).
        """
        sphere = dataclasses.replace(self.sphere, radius=self.sphere.radius + offset_mm)
        return dataclasses.replace(self, sphere=sphere, radius_offset_mm=self.radius_offset_mm + offset_mm)

    def edge_residuals(self) -> np.ndarray:
        """(D,) distance (mm) of each line's head edge beyond the fitted sphere (negative: inside it).

        Lines beside bone are measured from their own concentric sphere (``bone_offset_mm``); NaN
        where a line found no head edge.
        """
        surface = _ray_sphere(self.origin, self.directions, self.sphere.center, self.sphere.radius)
        if self.beside_bone is not None:
            surface = surface + self.bone_offset_mm * self.beside_bone
        return self.head_t - surface

    def consensus(self, tolerance_mm: float = 1.0) -> float:
        """Share of the lines inside the field of view whose head point lies within ``tolerance_mm`` of the sphere.

        A tight tolerance tells a sphere (a femoral head) from shapes a sphere
        only roughly fits (a trochanter, a vertebral body).
        """
        residuals = self.sphere.residuals(self.head_points)
        if self.beside_bone is not None:  # those lines against their own sphere
            residuals = residuals - self.bone_offset_mm * self.beside_bone[np.isfinite(self.head_t)]
        return float((np.abs(residuals) < tolerance_mm).sum() / max(int((~self.outside).sum()), 1))



def locate_boundary(image, center_index, radius_mm, spacing, *, n_directions=400, step_mm=0.25,
                    sigma_mm=0.5, scale_mm=2.0, rounds=4, bone=None) -> RadialBoundary | None:
    """Find the head surface along radial lines and fit a sphere to it.

    Parameters
    ----------
    image : (R, A, S) array
        CT in HU (NumPy or CuPy; the kernels run where it is).
    center_index : (3,) array_like
        Candidate centre in voxel indices.
    radius_mm : float
        Candidate radius.
    spacing : tuple of 3 float
    n_directions, step_mm, sigma_mm : see :class:`thagpu.config.AFSConfig`.
    scale_mm : float
        Outlier scale of the sphere fit.
    rounds : int
        Rounds of selection and fit.
    bone : (R, A, S) bool array, optional
        The bone mask (same device as ``image``). Bone beyond the head surface (its socket or
        neck) is then read from it, whatever the bone's density (an osteoporotic socket of
        100 HU is bone); without it, from the CT (at least :data:`COVER_HU`).

    Returns
    -------
    RadialBoundary or None
        None when too few lines find a boundary to fit a sphere.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    directions = fibonacci_directions(n_directions)
    origin_index = np.asarray(center_index, dtype=np.float64)
    origin = origin_index * spacing
    radii = np.arange(max(2.0, radius_mm - 12.0), radius_mm + 12.0 + MAX_JOINT_SPACE_MM, step_mm)
    profiles, response = radial_profiles(image, origin_index, directions, radii.astype(np.float32), spacing,
                                         sigma_samples=sigma_mm / step_mm)
    keep, _ = line_nms(response, min_response=MIN_RESPONSE, radius=max(1, int(round(1.0 / step_mm))))
    profiles, response, keep = (np.asarray(to_host(a)) for a in (profiles, response, keep))
    peaks = _peak_table(keep, response)
    neighbours = _neighbour_table(n_directions, NEIGHBOURS)
    # A line "leaves the field of view" where its samples turn NaN before the far end.
    first_nan = np.where(np.isnan(profiles).any(axis=1), np.argmax(np.isnan(profiles), axis=1), len(radii))
    reach = radii[np.minimum(first_nan, len(radii) - 1)]

    # The edge itself is where the smoothed profile falls fastest: the response's second-order
    # term would pull the peak a little outwards, so positions are refined on -g1 alone. The same
    # smoothed profile and slope place the socket's rising edge.
    smooth = ndi.gaussian_filter1d(np.where(np.isnan(profiles), -1000.0, profiles), max(sigma_mm / step_mm, 0.5),
                                   axis=1)
    slope = np.gradient(smooth, radii, axis=1)
    falling = -slope
    lines = (origin, directions, radii, peaks, falling, neighbours, step_mm, scale_mm)
    fits = [_fit_rounds(*lines, origin, start, 3.0, rounds)
            for start in (radius_mm - 6.0, radius_mm - 3.0, radius_mm, radius_mm + 3.0)]
    fits = [fit for fit in fits if fit is not None]
    if not fits:
        return None
    head_t, sphere = max(fits, key=lambda fit: _support(fit, origin, directions, profiles, radii))
    # Where head and socket touch, the covered lines find the socket's far cortex and a sphere
    # between the two surfaces may fit both halves. The head's edges onto soft tissue tell: if
    # they alone give another sphere, that one is the head.
    onto_soft = _onto_soft(head_t, profiles, radii)
    separable = True
    if onto_soft.sum() >= 30:
        points = origin + head_t[onto_soft, None] * directions[onto_soft]
        try:
            alone = fit_sphere(points, center=sphere.center, radius=sphere.radius, scale_mm=scale_mm)
        except ValueError:
            alone = None
        if alone is not None and (abs(alone.radius - sphere.radius) > 0.5
                                  or np.linalg.norm(alone.center - sphere.center) > 0.75):
            expected = _ray_sphere(origin, directions, alone.center, alone.radius)
            head_t = np.where(np.abs(head_t - expected) < 1.0, head_t, np.nan)
            sphere = SphereFit(center=alone.center, radius=alone.radius, rms=alone.rms,
                               inliers=np.ones(int(np.isfinite(head_t).sum()), dtype=bool))
            separable = False

    def beyond(start):
        if bone is None:
            return _bone_beyond(profiles, radii, start)
        return _mask_beyond(bone, origin, directions, start, spacing)

    edge_beside_bone = beyond(head_t)
    beside_bone, bone_offset = None, 0.0
    if separable:
        sphere, bone_offset, beside_bone = _fit_beside_bone(origin, directions, head_t, sphere,
                                                            edge_beside_bone, scale_mm)
    surface = _ray_sphere(origin, directions, sphere.center, sphere.radius)
    # The socket is measured only beyond head edges that sit on the sphere (their own, for the lines
    # beside bone): an edge 1-2 mm off it (still a fit inlier) may be the socket's own cortex where
    # the two touch.
    edge_surface = surface
    if beside_bone is not None:
        offset_surface = _ray_sphere(origin, directions, sphere.center, sphere.radius + bone_offset)
        edge_surface = np.where(beside_bone, offset_surface, surface)
    on_sphere = np.where(np.abs(head_t - edge_surface) < 1.0, head_t, np.nan)

    covered = np.isfinite(on_sphere) & edge_beside_bone
    socket_t = _socket_surface(profiles, smooth, slope, radii, step_mm, on_sphere, covered)
    return RadialBoundary(origin=origin, directions=directions, head_t=head_t, socket_t=socket_t,
                          outside=reach < surface, sphere=sphere, covered=covered, separable=separable,
                          bone_beyond=beyond(surface), assessed=np.isfinite(on_sphere),
                          beside_bone=beside_bone, bone_offset_mm=bone_offset)


def _onto_soft(head_t, profiles, radii):
    """Lines whose head edge falls onto soft tissue or cartilage (CT 1.5 mm beyond below :data:`COVER_HU`)."""
    found = np.isfinite(head_t)
    beyond = np.clip(np.searchsorted(radii, np.nan_to_num(head_t) + 1.5), 0, len(radii) - 1)
    values = profiles[np.arange(len(head_t)), beyond]
    return found & np.isfinite(values) & (values < COVER_HU)


def _fit_beside_bone(origin, directions, head_t, sphere, bone_beyond, scale_mm):
    """The head's sphere from its edges away from bone, its edges beside bone on a sphere of their own.

    Where bone lies a few millimetres beyond the head's edge (the socket across the joint space, or
    the neck), its rising edge, blurred into the head's falling one, pulls the steepest fall
    inwards; onto soft tissue nothing does. A socket covers the head from above and medially, so a
    shared sphere moves its centre away from the socket (anatomic development seeds at 3 mm: edges
    beside bone 0.3-0.6 mm nearer the true centre than the others, centres 0.1-0.7 mm off, away from
    the socket). Fitted with an offset of their own (:func:`~thagpu.afs.fit.fit_sphere_with_offset`),
    the two sets share only the centre. Kept where each set holds at least
    :data:`MIN_LINES_PER_SURFACE` lines and the fit is what that blur does: the offset negative and
    at most :data:`MAX_BONE_OFFSET_MM` deep, the centre within as much of the shared fit's; else
    the shared fit stands (a shape that only an extra parameter makes a sphere is not a head).

    Returns
    -------
    sphere : SphereFit
    offset_mm : float
        0.0 where the shared fit stands.
    beside_bone : (D,) bool ndarray or None
        The lines fitted with the offset; None where the shared fit stands.
    """
    found = np.isfinite(head_t)
    beside_bone = found & bone_beyond
    if beside_bone.sum() < MIN_LINES_PER_SURFACE or (found & ~bone_beyond).sum() < MIN_LINES_PER_SURFACE:
        return sphere, 0.0, None
    points = origin + head_t[found, None] * directions[found]
    try:
        fitted, offset = fit_sphere_with_offset(points, beside_bone[found], center=sphere.center,
                                                radius=sphere.radius, scale_mm=scale_mm)
    except ValueError:
        return sphere, 0.0, None
    if not (-MAX_BONE_OFFSET_MM <= offset < 0.0
            and np.linalg.norm(fitted.center - sphere.center) <= MAX_BONE_OFFSET_MM):
        return sphere, 0.0, None
    return fitted, offset, beside_bone


def _support(fit, origin, directions, profiles, radii):
    """How well a fit's lines look like a femoral head's surface.

    Around a head lie other concentric spheres (the socket's inner and far
    cortices) that may gather many lines too, notably where head and socket
    touch, and a sphere between two surfaces may fit both loosely. Lines count
    only within 1 mm of the sphere; those falling onto soft tissue or
    cartilage, as only a head's surface does, count fully, others a quarter.
    """
    head_t, sphere = fit
    close = np.abs(head_t - _ray_sphere(origin, directions, sphere.center, sphere.radius)) < 1.0
    onto_soft = _onto_soft(head_t, profiles, radii) & close
    return float(onto_soft.sum() + 0.25 * (close & ~onto_soft).sum())


def _fit_rounds(origin, directions, radii, peaks, falling, neighbours, step_mm, scale_mm, center, radius,
                width, rounds):
    """Alternate boundary selection and robust sphere fit from one starting sphere.

    ``peaks`` is :func:`_peak_table` of the line NMS. ``width`` (mm) is how
    far from the current sphere a line's boundary is first looked for; it
    halves each round down to 1 mm.
    """
    center, radius = np.asarray(center, dtype=np.float64).copy(), float(radius)
    sphere = None
    head_t = np.full(len(directions), np.nan)
    rows = np.arange(len(directions))
    for _ in range(rounds):
        expected = _ray_sphere(origin, directions, center, radius)
        peak_index, peak_strength = peaks
        score = peak_strength * np.exp(-0.5 * ((radii[peak_index] - expected[:, None]) / width) ** 2)
        chosen = np.argmax(score, axis=1)
        best = peak_index[rows, chosen]
        found = score[rows, chosen] > 0
        # The steepest fall within a sample of the chosen maximum, to sub-sample precision.
        window = np.clip(best[:, None] + np.arange(-2, 3)[None, :], 0, len(radii) - 1)
        steepest = window[rows, np.argmax(falling[rows[:, None], window], axis=1)]
        t = radii[steepest] + _subsample_peak(falling, steepest) * step_mm
        t = np.where(found & (np.abs(t - expected) < 2.5 * width), t, np.nan)
        # Smoothness of the radius field: compare each line's departure from the sphere with its
        # neighbours'; a line alone in its departure is an outlier (fovea, neck, noise).
        departure = t - expected
        local = row_nanmedian(departure[neighbours])  # NaN where no neighbour has a point
        t = np.where(np.abs(departure - np.nan_to_num(local, nan=0.0)) <= NEIGHBOUR_TOLERANCE_MM, t, np.nan)
        ok = np.isfinite(t)
        if ok.sum() < 12:
            return None
        points = origin + t[ok, None] * directions[ok]
        try:
            sphere = fit_sphere(points, center=center, radius=radius, scale_mm=scale_mm)
        except ValueError:
            return None
        center, radius = sphere.center, sphere.radius
        head_t = t
        width = max(1.0, width / 2.0)
    # Keep the final inliers as the head surface.
    inlier_mask = np.zeros(len(directions), dtype=bool)
    inlier_mask[np.flatnonzero(np.isfinite(head_t))[sphere.inliers]] = True
    head_t = np.where(inlier_mask, head_t, np.nan)
    sphere = SphereFit(center=sphere.center, radius=sphere.radius, rms=sphere.rms,
                       inliers=np.ones(int(inlier_mask.sum()), dtype=bool))
    return head_t, sphere


def _bone_beyond(profiles, radii, start):
    """Lines whose CT from 1.5 to 5 mm beyond ``start`` averages :data:`COVER_HU` or more."""
    r = radii[None, :]
    beyond = (r >= start[:, None] + 1.5) & (r <= start[:, None] + 5.0) & np.isfinite(profiles)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_beyond = np.where(beyond, profiles, 0.0).sum(axis=1) / beyond.sum(axis=1)
    return np.nan_to_num(mean_beyond, nan=-1000.0) >= COVER_HU


def _mask_beyond(bone, origin, directions, start, spacing):
    """Lines with bone (the mask, nearest voxel) at a third or more of the samples from 1.5 mm to
    :data:`MAX_JOINT_SPACE_MM` + 2 mm beyond ``start``: a socket behind a joint space of up to
    6 mm, or the neck.

    Lines without a ``start`` (NaN) and samples outside the volume count as no bone.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    offsets = np.arange(1.5, MAX_JOINT_SPACE_MM + 2.0 + 1e-9, 0.5)
    t = np.nan_to_num(start, nan=-1e6)[:, None] + offsets[None, :]
    points = (origin[None, None, :] + t[:, :, None] * directions[:, None, :]) / spacing
    index = np.rint(points).astype(np.int64).reshape(-1, 3)
    shape = np.asarray(bone.shape)
    inside = np.all((index >= 0) & (index < shape), axis=1)
    values = np.zeros(len(index), dtype=bool)
    if inside.any():
        where = index[inside]
        flat = np.ravel_multi_index(tuple(where.T), tuple(shape))
        xp = get_array_module(bone)
        values[inside] = np.asarray(to_host(bone.ravel()[xp.asarray(flat)]), dtype=bool)
    return np.isfinite(start) & (values.reshape(len(start), -1).mean(axis=1) >= 1.0 / 3.0)


def _socket_surface(profiles, smooth, slope, radii, step_mm, head_t, covered):
    """The socket's inner surface along the lines it covers.

    On covered lines (bone just beyond the head surface), the steepest rise
    within :data:`MAX_JOINT_SPACE_MM` is the socket's inner surface when it
    climbs :data:`SOCKET_RISE_HU` above the gap's darkest point (a joint space
    narrower than the image's resolution leaves no such rise: covered, no surface).

    Returns
    -------
    socket_t : (D,) ndarray
        NaN where no surface was seen.
    """
    start = head_t
    r = radii[None, :]
    socket = np.full(len(start), np.nan)
    window = (r > start[:, None] + 0.3) & (r <= start[:, None] + MAX_JOINT_SPACE_MM)
    rising = np.where(window & np.isfinite(profiles), slope, -np.inf)
    best = np.argmax(rising, axis=1)
    rows = np.arange(len(start))
    valid = covered & np.isfinite(rising[rows, best]) & (rising[rows, best] > 0)
    # The gap runs from the head surface to the rising edge; the edge must climb above its darkest
    # point within 3 mm.
    first = np.searchsorted(radii, np.nan_to_num(start))[:, None]
    column = np.arange(len(radii))[None, :]
    edge = best[:, None]
    gap = np.where((column >= first) & (column <= edge), smooth, np.inf).min(axis=1)
    after = np.where((column >= edge) & (column < edge + int(round(3.0 / step_mm))), smooth, -np.inf).max(axis=1)
    valid &= (best > first[:, 0]) & (after - gap >= SOCKET_RISE_HU)
    offset = _subsample_peak(slope[valid], best[valid])
    socket[valid] = radii[best[valid]] + offset * step_mm
    return socket
