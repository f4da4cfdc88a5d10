"""The patient's midline from anatomy, and which side a head candidate or an implant is on.

Left and right are the patient's: canonical array axis 0 grows towards RAS +x,
the patient's right (:class:`~thagpu.volume.Volume`), never an array half. The
midline is found, in this order:

``body_outline``
    In axial slices where the body outline does not touch the left or right
    border of the field of view, the body's left-right centre (pelvis, or the
    two thighs) lies on the midline: the median over those slices, slices
    with more bone (the pelvis) weighing more, on a line through them (a
    rolled pose tilts the midline). Clean slices spanning less than
    :data:`MIN_TILT_SPAN_MM` of z cannot show a tilt: then the bone's
    symmetry (next) where the view is wide enough, else their centre,
    upright.
``bone_symmetry``
    The outline is cut but the view is wide enough to hold both hips: the
    plane of mirror symmetry of the bone along x (pelvic ring, sacrum, pubic
    symphysis, both femurs: the midline bones and the paired ones), per axial
    slice, where at least 60 mm of the view lies on each side of it.
``cut_border``
    Only one side is in view (a narrow body, under :data:`ONE_SIDE_WIDTH_MM`)
    and the outline is cut on one x border only: the body continues beyond
    that border, so the midline lies at or beyond it and everything in view
    is on the other side.
``femur_anatomy``
    Only one side is in view and the outline is cut on both borders: the side
    comes from the femur. The head lies medial to the neck, the greater
    trochanter and the shaft, so the bone 70-120 mm below a head (the proximal
    shaft) lies lateral to it; the candidates vote, and the side needs two
    thirds of the votes (a trochanter, lateral to its shaft, votes wrongly).
    Cut on both borders, the width is the view's, and a view narrower than a
    pelvis can still hold both hips: the bone's symmetry plane is then kept as
    an alternative, adopted when two of the strongest head candidates mirror
    each other about it, well off it (:meth:`Midline.adopt_alternative`). A
    view of one hip mirrors onto itself about a plane through its own head,
    and that plane is refused.
``none``
    No body or bone: nothing can be placed.

A candidate whose side cannot be told gets no side (``None``) and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..morphology import block_reduce_mean
from ..bone.seeds import body_mask
from ..device import to_host

__all__ = ["Midline", "SideDecision", "estimate_midline", "femur_lateral_sign", "ONE_SIDE_WIDTH_MM"]

#: A body outline narrower than this (mm, left to right) holds one hip and thigh only: a pelvis with
#: both hips is 280-400 mm wide, and even cut through one head shows well over 240 mm.
ONE_SIDE_WIDTH_MM = 240.0
#: Working grid of the outline and symmetry (mm).
GRID_MM = 4.0
#: Clean slices (outline inside the field of view) needed to trust their centre.
MIN_CLEAN_SLICES = 3
#: Share of the bone with a mirror partner below which the bone is not called symmetric.
MIN_SYMMETRY = 0.5
#: A narrow view's symmetry plane is its midline when two of this many strongest head candidates
#: mirror each other about it, each at least MIRROR_HEAD_MIN_MM off it (heads lie 75-100 mm from the
#: midline), their distances within MIRROR_HEAD_TOLERANCE_MM (:meth:`Midline.adopt_alternative`).
STRONGEST_CANDIDATES = 3
MIRROR_HEAD_MIN_MM = 50.0
MIRROR_HEAD_TOLERANCE_MM = 25.0
#: Clean slices spanning less than this (mm of z) give the midline's x but not its tilt: over a short
#: stretch a cell's worth of noise in their centres reads as a steep roll (demo phantom 1000: five
#: clean slices over 19 mm read -25 degrees, and placed the midline 60 mm off at the heads).
MIN_TILT_SPAN_MM = 60.0
#: Shaft offset (mm) below which the femur does not tell the side.
MIN_FEMUR_OFFSET_MM = 8.0


@dataclass
class SideDecision:
    """Which side one candidate (or metal object) was put on, and why.

    Attributes
    ----------
    x_mm : float
        Its RAS x.
    side : {"left", "right"} or None
        None when it is too near the midline or its side could not be told.
    reason : str
    """

    x_mm: float
    side: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"x_mm": round(float(self.x_mm), 1), "side": self.side, "reason": self.reason}


@dataclass
class Midline:
    """The midline estimate.

    Attributes
    ----------
    x_mm : float or None
        RAS x of the midline in the slice at ``z_mm``; for ``cut_border`` the border it lies at or beyond; None when unknown
        (``femur_anatomy``, ``none``).
    method : str
        ``body_outline``, ``bone_symmetry``, ``cut_border``, ``femur_anatomy`` or ``none``.
    cut_towards : float
        For ``cut_border``: +1 when the body is cut on the RAS +x (patient right) border, -1 on the
        left; else 0.
    detail : dict
        How it was found (slice counts, widths, the symmetry score), for the report.
    decisions : list of SideDecision
        Filled by :meth:`side_of` as candidates are placed.
    view_side : str or None
        For ``femur_anatomy``: the one side in view, settled by :meth:`settle_view_side`.
    z_mm, slope : float
        The midline's x moves by ``slope`` mm per mm of RAS z from ``z_mm`` (a rolled pose tilts it).
    alternative : Midline or None
        For ``femur_anatomy`` views cut on both borders: the bone's symmetry plane, to be adopted
        or refused by :meth:`adopt_alternative` once the head candidates are known.
    """

    x_mm: float | None
    method: str
    cut_towards: float = 0.0
    detail: dict = field(default_factory=dict)
    decisions: list = field(default_factory=list)
    view_side: str | None = None
    z_mm: float = 0.0
    slope: float = 0.0
    alternative: "Midline | None" = None

    def adopt_alternative(self, candidates_ras, strongest: int | None = None):
        """This midline, or its symmetry alternative when two of the strongest candidates mirror each other about it.

        A view of one hip and thigh mirrors onto itself about a plane through its own head about as
        well as a pelvis does about its midline (symmetry shares 0.63-0.72 against 0.66-0.72 on
        ``anatomic_truncated`` development seeds), so the share cannot tell them apart. Two femoral
        heads can: they lie 75-100 mm either side of the midline, mirror partners. The plane is
        adopted when two of the ``strongest`` head candidates lie on opposite sides of it, each at
        least :data:`MIRROR_HEAD_MIN_MM` off it at its own slice, their distances within
        :data:`MIRROR_HEAD_TOLERANCE_MM` of each other. About a plane through one hip's head, the
        head is the strongest candidate and lies on the plane.

        Parameters
        ----------
        candidates_ras : sequence of (3,) array
            Head candidate centres (RAS mm), strongest first.
        strongest : int, optional
            Default :data:`STRONGEST_CANDIDATES`.

        Returns
        -------
        Midline
            The alternative or ``self``; both ``detail`` record the check (``symmetry_alternative``).
        """
        if self.method != "femur_anatomy" or self.alternative is None or not len(candidates_ras):
            return self
        top = candidates_ras[:strongest or STRONGEST_CANDIDATES]
        lateral = [round(float(p[0]) - self.alternative.x_at(float(p[2])), 1) for p in top]
        adopted = any(a * b < 0 and min(abs(a), abs(b)) >= MIRROR_HEAD_MIN_MM
                      and abs(abs(a) - abs(b)) <= MIRROR_HEAD_TOLERANCE_MM
                      for i, a in enumerate(lateral) for b in lateral[i + 1:])
        check = {"x_mm": round(float(self.alternative.x_mm), 1), "strongest_lateral_mm": lateral, "adopted": adopted}
        self.detail["symmetry_alternative"] = check
        self.alternative.detail["symmetry_alternative"] = check
        return self.alternative if adopted else self

    def x_at(self, z_mm: float) -> float | None:
        """RAS x of the midline in the axial slice at RAS z ``z_mm`` (the plane may be tilted)."""
        if self.x_mm is None:
            return None
        if self.method == "cut_border":
            return self.x_mm
        return self.x_mm + self.slope * (z_mm - self.z_mm)

    def settle_view_side(self, signs) -> str | None:
        """The one side in a ``femur_anatomy`` view, from its candidates' femurs.

        Only one hip is in view, so one side holds for all its candidates; a
        trochanter has the shaft medial to it and votes wrongly, so the side is
        the one at least two thirds of the candidates whose femur told a side
        point to, else None. Candidates count alike: a trochanter's vote peak
        can outscore the head's.

        Parameters
        ----------
        signs : sequence of float or None
            :func:`femur_lateral_sign` of each candidate.
        """
        told = [s for s in signs if s is not None]
        total = len(told)
        right = sum(1 for s in told if s > 0)
        self.detail["femur_votes"] = {"right": right, "left": total - right}
        if total > 0 and right >= 2.0 / 3.0 * total:
            self.view_side = "right"
        elif total > 0 and total - right >= 2.0 / 3.0 * total:
            self.view_side = "left"
        return self.view_side

    def side_of(self, point_ras, min_lateral_mm: float, femur_sign=None, record: bool = True):
        """The patient side of a point.

        Parameters
        ----------
        point_ras : (3,) array
            RAS millimetres.
        min_lateral_mm : float
            With a known midline, points nearer to it than this get no side (spine, sacrum).
        femur_sign : callable, optional
            Returns +1 / -1 (RAS x towards which the point's femur lies, i.e. lateral) or None; used by
            ``femur_anatomy`` only.
        record : bool
            Append the decision to :attr:`decisions`.

        Returns
        -------
        SideDecision
        """
        x_mm = float(point_ras[0])
        if self.method in ("body_outline", "bone_symmetry"):
            lateral = x_mm - self.x_at(float(point_ras[2]))
            if abs(lateral) < min_lateral_mm:
                decision = SideDecision(x_mm, None, f"{abs(lateral):.0f} mm from the midline")
            else:
                decision = SideDecision(x_mm, "right" if lateral > 0 else "left", "midline")
        elif self.method == "cut_border":
            side = "left" if self.cut_towards > 0 else "right"
            decision = SideDecision(x_mm, side, "body cut on the other side: one side in view")
        elif self.method == "femur_anatomy" and self.view_side is not None:
            decision = SideDecision(x_mm, self.view_side, "femur anatomy: one side in view")
        elif self.method == "femur_anatomy" and femur_sign is not None:
            sign = femur_sign()
            if sign is None:
                decision = SideDecision(x_mm, None, "side could not be determined: no femoral shaft below")
            else:
                decision = SideDecision(x_mm, "right" if sign > 0 else "left", "femur anatomy")
        else:
            decision = SideDecision(x_mm, None, "side could not be determined")
        if record:
            self.decisions.append(decision)
        return decision

    def report(self) -> dict:
        """The midline for ``measurements["afs"]["midline"]``."""
        return {"x_mm": None if self.x_mm is None else round(float(self.x_mm), 1), "method": self.method,
                **({"z_mm": round(self.z_mm, 1), "tilt_deg": round(float(np.degrees(np.arctan(self.slope))), 1)}
                   if self.method in ("body_outline", "bone_symmetry") else {}),
                **({"cut_towards": "right" if self.cut_towards > 0 else "left"} if self.cut_towards else {}),
                **self.detail, "decisions": [d.to_dict() for d in self.decisions]}


def _grid(volume):
    factors = [max(1, int(round(GRID_MM / s))) for s in volume.spacing]
    return factors, np.asarray(volume.spacing) * factors


def _x_of_index(volume, factors, i_coarse, k_coarse=None, j_coarse=None) -> np.ndarray:
    """RAS x of coarse-grid indices (centres of the blocks)."""
    i = np.atleast_1d(np.asarray(i_coarse, dtype=np.float64))
    j = np.zeros_like(i) if j_coarse is None else np.broadcast_to(j_coarse, i.shape)
    k = np.zeros_like(i) if k_coarse is None else np.broadcast_to(k_coarse, i.shape)
    index = (np.stack([i, j, k], axis=1) + 0.5) * np.asarray(factors) - 0.5
    return volume.index_to_ras(index)[:, 0]


def _symmetry_plane(bone: np.ndarray, min_half_width: int):
    """Per axial slice, the mirror position p (coarse x index; i <-> 2p - i) of the bone.

    The slice's bone profile along x (bone per column) is mirrored about every
    position leaving ``min_half_width`` cells on each side; the slice's
    position is the one with the largest overlap: the share of the slice's
    bone with a mirror partner.

    Returns
    -------
    slices, positions, scores, masses : ndarray
        Slices with bone (20 cells or more), their positions, overlaps and bone.
    """
    profiles = bone.sum(axis=1).astype(np.float64)  # (x, z)
    n = profiles.shape[0]
    found = []
    for k in range(profiles.shape[1]):
        profile = profiles[:, k]
        mass = profile.sum()
        if mass < 20:
            continue
        best = (None, 0.0)
        for twice in range(2 * min_half_width, 2 * (n - 1 - min_half_width) + 1):
            lo, hi = max(0, twice - (n - 1)), min(n - 1, twice)
            part = profile[lo:hi + 1]
            score = np.minimum(part, part[::-1]).sum() / mass
            if score > best[1]:
                best = (twice / 2.0, score)
        if best[0] is not None:
            found.append((k, best[0], best[1], mass))
    found = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    return found[:, 0].astype(int), found[:, 1], found[:, 2], found[:, 3]


def _weighted_median(values, weights) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _midline_line(z, x, weights):
    """Robust weighted line x = x0 + slope (z - z0) through the slices' midline points.

    A pose rolled by some degrees tilts the midline plane: its x moves with
    the slice. z0 is the weighted median slice (the pelvis weighs most); the
    line is fitted by weighted least squares, then again without points more
    than max(3 MAD, 4 mm) off it; the slope is kept within 25 degrees.
    """
    z, x, w = (np.asarray(v, dtype=np.float64) for v in (z, x, weights))
    z0 = _weighted_median(z, w)
    keep = np.ones(len(z), dtype=bool)
    x0, slope = _weighted_median(x, w), 0.0
    for _ in range(2):
        if keep.sum() >= 3 and np.ptp(z[keep]) > 0:
            slope, x0 = np.polyfit(z[keep] - z0, x[keep], 1, w=np.sqrt(w[keep]))
        slope = float(np.clip(slope, -np.tan(np.radians(25.0)), np.tan(np.radians(25.0))))
        residual = np.abs(x - (x0 + slope * (z - z0)))
        keep = residual <= max(3.0 * float(np.median(residual)) * 1.4826, 4.0)
    return float(x0), float(z0), slope


def estimate_midline(volume, bone) -> Midline:
    """Find the patient's midline from the body outline, the bone's symmetry or the cut borders.

    Parameters
    ----------
    volume : Volume
        Canonical CT (NumPy or CuPy array).
    bone : (R, A, S) bool array
        The bone mask, on the volume's device.

    Returns
    -------
    Midline
    """
    factors, cell = _grid(volume)
    image = np.asarray(to_host(block_reduce_mean(volume.array, factors)))
    coarse_bone = np.asarray(to_host(block_reduce_mean(bone, factors) >= 0.5))
    if not coarse_bone.any():
        return Midline(None, "none", detail={"reason": "no bone"})
    body = np.asarray(to_host(body_mask(image, tuple(cell))))
    rows = body.any(axis=1)  # (x, z): body present at that x in that axial slice
    slices = np.flatnonzero(rows.any(axis=0))
    if len(slices) == 0:
        return Midline(None, "none", detail={"reason": "no body outline"})
    nx = rows.shape[0]
    first = np.array([np.flatnonzero(rows[:, k])[0] for k in slices])
    last = np.array([np.flatnonzero(rows[:, k])[-1] for k in slices])
    touch_lo, touch_hi = first == 0, last == nx - 1
    clean = ~touch_lo & ~touch_hi
    x_first = _x_of_index(volume, factors, first - 0.5, slices)
    x_last = _x_of_index(volume, factors, last + 0.5, slices)
    width = float(np.median(np.abs(x_last - x_first)))
    bone_per_slice = coarse_bone.sum(axis=(0, 1))[slices].astype(float)
    detail = {"slices": int(len(slices)), "clean_slices": int(clean.sum()),
              "cut_left_slices": int(touch_lo.sum()), "cut_right_slices": int(touch_hi.sum()),
              "body_width_mm": round(width, 1)}
    z_slices = volume.index_to_ras((np.stack([np.full(len(slices), rows.shape[0] / 2.0),
                                              np.full(len(slices), body.shape[1] / 2.0), slices], axis=1)
                                    + 0.5) * factors - 0.5)[:, 2]
    if clean.sum() >= MIN_CLEAN_SLICES:
        centres = (x_first[clean] + x_last[clean]) / 2.0
        # The pelvic slices (most bone) weigh most; thighs alone count too (two near-symmetric legs).
        weights = 1.0 + bone_per_slice[clean] / max(bone_per_slice[clean].mean(), 1.0)
        z_clean = z_slices[clean]
        span = float(np.ptp(z_clean))
        if span >= MIN_TILT_SPAN_MM:
            x, z0, slope = _midline_line(z_clean, centres, weights)
        else:
            # Too short a stretch to read a roll from, and perhaps far from the hips: the bone's
            # symmetry plane, fitted over every slice with bone, where the view holds both hips; else
            # the outline's centre, upright.
            x, z0, slope = _weighted_median(centres, weights), _weighted_median(z_clean, weights), 0.0
            detail["clean_span_mm"] = round(span, 1)
            detail["outline_x_mm"] = round(x, 1)
            symmetric = (_symmetry_midline(volume, coarse_bone, cell, factors, detail)
                         if width >= ONE_SIDE_WIDTH_MM else None)
            if symmetric is not None:
                return symmetric
        detail["spread_mm"] = round(float(np.median(np.abs(centres - (x + slope * (z_clean - z0))))), 1)
        return Midline(x, "body_outline", z_mm=z0, slope=slope, detail=detail)
    if width >= ONE_SIDE_WIDTH_MM:
        symmetric = _symmetry_midline(volume, coarse_bone, cell, factors, detail)
        if symmetric is not None:
            return symmetric
    lo, hi = touch_lo.mean(), touch_hi.mean()
    if width < ONE_SIDE_WIDTH_MM and max(lo, hi) >= 0.5 and min(lo, hi) <= 0.1:
        towards = 1.0 if hi > lo else -1.0
        border = float(_x_of_index(volume, factors, [nx - 0.5 if towards > 0 else -0.5])[0])
        return Midline(border, "cut_border", cut_towards=towards, detail=detail)
    alternative = None
    if width < ONE_SIDE_WIDTH_MM and min(lo, hi) >= 0.5:
        # Cut on both borders, the width is the view's: keep the symmetry plane for adopt_alternative.
        alternative = _symmetry_midline(volume, coarse_bone, cell, factors, dict(detail))
    return Midline(None, "femur_anatomy", detail=detail, alternative=alternative)


def _symmetry_midline(volume, coarse_bone, cell, factors, detail: dict):
    """The ``bone_symmetry`` midline, or None when under :data:`MIN_SYMMETRY` of the bone has a
    mirror partner; ``detail`` gets the ``symmetry`` share either way."""
    k, positions, scores, masses = _symmetry_plane(coarse_bone, int(np.ceil(60.0 / cell[0])))
    score = float(np.average(scores, weights=masses)) if len(k) else 0.0
    detail["symmetry"] = round(score, 3)
    if score < MIN_SYMMETRY:
        return None
    centre = (np.stack([positions, np.full(len(k), coarse_bone.shape[1] / 2.0), k], axis=1) + 0.5)
    points = volume.index_to_ras(centre * factors - 0.5)
    x, z0, slope = _midline_line(points[:, 2], points[:, 0], scores * masses)
    return Midline(x, "bone_symmetry", z_mm=z0, slope=slope, detail=detail)


def femur_lateral_sign(volume, bone, center_index, *, below_mm=(70.0, 120.0), window_mm=(80.0, 50.0)):
    """RAS x direction (+1 / -1) in which the femur lies below a head, or None.

    The femoral head sits on the neck, medial to the greater trochanter and
    the shaft: 70-120 mm below the head's centre the bone within 80 mm
    (left-right) and 50 mm (front-back) of it is the proximal shaft, below the
    ischium and the lesser trochanter, and its centre lies lateral to the head.

    Parameters
    ----------
    volume : Volume
    bone : (R, A, S) bool array
    center_index : (3,) array
        Canonical voxel index of the head centre.
    below_mm, window_mm : tuple of 2 float

    Returns
    -------
    float or None
        None when under 15 mm of that slab is in view, it holds no bone, or its centre lies within
        :data:`MIN_FEMUR_OFFSET_MM` of the head in x.
    """
    spacing = np.asarray(volume.spacing, dtype=float)
    c = np.asarray(center_index, dtype=float)
    shape = np.asarray(bone.shape)
    k_lo = int(np.floor(c[2] - below_mm[1] / spacing[2]))
    k_hi = int(np.ceil(c[2] - below_mm[0] / spacing[2]))
    k_lo, k_hi = max(k_lo, 0), min(k_hi, shape[2] - 1)
    if (k_hi - k_lo + 1) * spacing[2] < 15.0:
        return None
    i_lo = max(int(np.floor(c[0] - window_mm[0] / spacing[0])), 0)
    i_hi = min(int(np.ceil(c[0] + window_mm[0] / spacing[0])), shape[0] - 1)
    j_lo = max(int(np.floor(c[1] - window_mm[1] / spacing[1])), 0)
    j_hi = min(int(np.ceil(c[1] + window_mm[1] / spacing[1])), shape[1] - 1)
    slab = np.asarray(to_host(bone[i_lo:i_hi + 1, j_lo:j_hi + 1, k_lo:k_hi + 1]))
    where = np.argwhere(slab)
    if len(where) < 20:
        return None
    where = where + [i_lo, j_lo, k_lo]
    offsets = volume.index_to_ras(where)[:, 0] - volume.index_to_ras(c)[0, 0]
    offset = float(np.median(offsets))
    if abs(offset) < MIN_FEMUR_OFFSET_MM:
        return None
    return 1.0 if offset > 0 else -1.0
