"""AFS: automatic acetabulum and femoral head segmentation, per side, in 3-D patient space.

``segment_hips(volume, bone_mask)`` labels the hips by the schema and measures
them. The patient's midline comes from anatomy (:mod:`.midline`: the body
outline, else the bone's symmetry, a cut border or the femur itself). Per side
(patient left and right from the image's direction cosines):

1. implant check: large metal on that side of the midline (:mod:`.implant`);
2. head candidates: sphere voting on bone edges (:mod:`.candidates`), inside
   bone, on that side and at least :data:`MIN_LATERAL_MM` from the midline;
3. boundary along radial lines with line NMS, neighbour smoothing and a
   robust sphere fit; the best-fitting candidate of each side is the head
   (:mod:`.boundary`, :mod:`.fit`);
4. the socket from the rising edges beyond the joint space; angles by the
   radiographic definitions (:mod:`.angles`);
5. femur split from pelvis across the joint space, labels 1-4 (:mod:`.split`).

Heavy array work (voting, profile sampling, line NMS) runs where the volume
is (NumPy or CuPy); fits (compiled) and the watershed in the small region
around each head run on the host, the two sides' watersheds in two threads.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import labels as schema
from ..config import AFSConfig, Config
from ..device import get_array_module, to_host
from ..volume import Volume
from .angles import center_edge_angle, radiographic_angles
from .boundary import RadialBoundary, locate_boundary
from .cortex_model import CortexEdge, head_edge_offset
from .candidates import head_candidates
from .fit import fit_sphere
from .implant import find_metal
from .midline import estimate_midline, femur_lateral_sign
from .split import SurfaceField, hip_region, split_hip

__all__ = ["segment_hips", "SIDES", "MIN_LATERAL_MM"]

log = logging.getLogger("thagpu.afs")

#: Patient side -> sign of RAS x on that side.
SIDES = {"right": 1.0, "left": -1.0}
#: Femoral heads lie at least this far (mm) from the midline (85-100 mm in adults); vertebral
#: bodies and the sacrum, which look like spheres too, do not.
MIN_LATERAL_MM = 40.0
#: A rim plane misclassifying more of the lines than this does not describe a socket (angles not measured).
MAX_RIM_ERROR_FRACTION = 0.10
#: A femoral head is solid bone: a fitted sphere (shrunk by 2 mm) less filled by the bone mask is not trusted.
MIN_HEAD_FILL = 0.9
#: A metal object this far (mm) or more from the midline belongs to that side's hip.
METAL_LATERAL_MM = 30.0


def _round(value, digits=3):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_round(v, digits) for v in np.asarray(value, dtype=float).tolist()]
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


def _ras(volume: Volume, mm) -> np.ndarray:
    """RAS millimetres of a point given in the array's millimetre frame (index times spacing)."""
    return volume.index_to_ras(np.asarray(mm, dtype=np.float64) / np.asarray(volume.spacing))[0]


def _ras_directions(volume: Volume, directions) -> np.ndarray:
    """Unit vectors of the array's millimetre frame as unit vectors in RAS (a rotation)."""
    rotation = np.asarray(volume.affine, dtype=np.float64)[:3, :3] / np.asarray(volume.spacing)[None, :]
    out = np.atleast_2d(directions) @ rotation.T
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _head_score(boundary: RadialBoundary) -> float:
    """How much a fitted candidate looks like a femoral head: a tight sphere sitting in bone.

    The share of lines within 1 mm of the sphere, times the share with bone
    just beyond it (its socket and neck), over the fit's RMS (floored at
    0.1 mm). Trochanters and shafts fit spheres loosely and stand in soft tissue.
    """
    return boundary.consensus() * boundary.embedded / max(boundary.sphere.rms, 0.1)


def _edge_report(edge: CortexEdge | None) -> dict | None:
    """The blurred-cortex fit as measurements: None when it was not run or had too few clean lines."""
    if edge is None:
        return None
    return {"offset_mm": edge.offset_mm, "applied": edge.trusted, "cortex_mm": edge.thickness_mm,
            "levels_hu": list(edge.levels_hu), "lines": edge.lines, "edge_shape_mm": edge.edge_shape_mm}


def _not_found(message: str) -> dict:
    return {"status": "not_found", "confidence": 0.0, "message": message}


def _opens_inferolaterally(field: SurfaceField, volume: Volume, side: str) -> bool:
    """Whether the bone covering the fitted sphere is a socket: it opens downwards and outwards.

    The acetabulum covers the head from above, behind and medially; its opening axis points
    inferolaterally (radiographic inclination 35-60 deg, some tens of degrees of pelvic tilt
    more or less). Bone covering a sphere from below (the femoral shaft under a trochanter or the
    intertrochanteric region) or laterally is not a socket. Without a rim axis (too few covered
    or uncovered lines) nothing is claimed here; the coverage test judges.
    """
    if field.rim_axis is None:
        return True
    axis = _ras_directions(volume, field.rim_axis)[0]
    return bool(axis[2] < -0.2 and SIDES[side] * axis[0] > 0.0)


def _bone_fill(region, field: SurfaceField, spacing) -> float:
    """Share of the fitted head sphere (shrunk by 2 mm) that the bone mask fills.

    A femoral head is solid bone; a sphere fitted across a joint, or reaching out of the bone
    beside a neck, is not.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    grids = np.meshgrid(*[(np.arange(b.start, b.stop) * s - c) for b, s, c in zip(region.box, spacing, field.center)],
                        indexing="ij", sparse=True)
    inside = (grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2) <= max(field.radius - 2.0, 1.0) ** 2
    return float(region.bone[inside].mean()) if inside.any() else 0.0


def _side_measurements(boundary: RadialBoundary, field: SurfaceField, volume: Volume, side: str,
                       cfg: AFSConfig) -> dict:
    sphere = boundary.sphere
    visible = 1.0 - float(boundary.outside.mean())
    covered = field.covered
    gap = field.socket - field.head
    gap_lines = field.measured_socket
    joint = {"min": None, "mean": None}
    socket_fit = None
    if gap_lines.sum() >= 5:
        joint = {"min": _round(np.min(gap[gap_lines])), "mean": _round(np.mean(gap[gap_lines]))}
        points = field.center + field.socket[gap_lines, None] * field.directions[gap_lines]
        try:
            socket_fit = fit_sphere(points, center=field.center, radius=float(np.median(field.socket[gap_lines])),
                                    scale_mm=cfg.fit_outlier_mm, fixed_center=gap_lines.sum() < 30)
        except ValueError:
            socket_fit = None
    coverage = float(covered.mean())
    inclination = anteversion = ce_angle = None
    seen = ~boundary.outside  # lines leaving the field of view say nothing about the socket
    rim_found = field.rim_axis is not None and field.rim_error_fraction <= MAX_RIM_ERROR_FRACTION
    if rim_found and covered[seen].sum() >= 10:
        inclination, anteversion = radiographic_angles(_ras_directions(volume, field.rim_axis)[0])
        ce_angle = center_edge_angle(_ras_directions(volume, field.directions[seen & covered]), SIDES[side])
    inliers = boundary.inlier_fraction
    head_term = float(np.clip((inliers - 0.5) / 0.4, 0.0, 1.0))
    fit_term = float(np.clip(1.0 - sphere.rms / cfg.max_fit_rms_mm, 0.0, 1.0))
    joint_term = float(np.clip((joint["min"] or 0.0) / 1.0, 0.0, 1.0)) if coverage >= 0.2 else 0.0
    confidence = float((head_term * fit_term * joint_term) ** (1.0 / 3.0))
    status, message = "ok", "head and socket fitted"
    if visible < 0.999:
        status, message = "truncated", f"the head leaves the field of view ({100 * (1 - visible):.0f}% of it)"
    if not boundary.separable:
        status, message = "low_confidence", ("head and socket surfaces not seen apart where the socket covers the "
                                             "head (joint space below the resolution?): head fitted from its "
                                             "uncovered part, split along the fitted sphere")
        confidence = min(confidence, 0.3)
    elif sphere.rms > cfg.ok_max_fit_rms_mm:
        status, message = "low_confidence", (f"the head departs from its sphere by {sphere.rms:.2f} mm RMS: a "
                                             "deformed head, or head and socket not seen apart")
    elif not _opens_inferolaterally(field, volume, side):
        status, message = "low_confidence", ("the bone around the fitted sphere does not cover it from above and "
                                             "medially (no socket opening inferolaterally): not a femoral head?")
    elif coverage < 0.2:
        status, message = "low_confidence", f"the socket covers only {100 * coverage:.0f}% of the head's lines"
    elif joint["min"] is not None and joint["min"] < cfg.min_joint_space_mm:
        status, message = "low_confidence", (f"joint space down to {joint['min']:.1f} mm: femur and pelvis may "
                                             "touch, the split follows the fitted surface")
    elif confidence < cfg.min_confidence:
        status, message = "low_confidence", f"confidence {confidence:.2f} below {cfg.min_confidence}"
    if status in ("ok", "truncated") and not rim_found:
        # A real acetabular rim is warped (the notch, a deeper posterior wall): the labels stand,
        # the radiographic angles of a rim plane would not.
        message += (f"; angles not measured (the rim plane misclassifies {100 * field.rim_error_fraction:.0f}% "
                    "of the lines)")
    if status == "low_confidence":
        confidence = min(confidence, cfg.min_confidence - 0.01)
    return {
        "status": status,
        "confidence": _round(confidence),
        "head_center_mm": _round(_ras(volume, sphere.center)),
        "head_radius_mm": _round(sphere.radius),
        "sphere_fit_rms_mm": _round(sphere.rms),
        "acetabulum_center_mm": _round(_ras(volume, socket_fit.center)) if socket_fit else None,
        "acetabulum_radius_mm": _round(socket_fit.radius) if socket_fit else None,
        "joint_space_mm": joint,
        "inclination_deg": _round(inclination) if inclination is not None else None,
        "anteversion_deg": _round(anteversion) if anteversion is not None else None,
        "center_edge_angle_deg": _round(ce_angle) if ce_angle is not None else None,
        "rim_error_fraction": _round(field.rim_error_fraction),
        "head_inlier_fraction": _round(inliers),
        "socket_coverage_fraction": _round(coverage),
        "head_visible_fraction": _round(visible),
        "message": message,
    }


def segment_hips(volume: Volume, bone_mask, config: Config | None = None):
    """Label the femoral heads and acetabula of a CT and measure them.

    Parameters
    ----------
    volume : Volume
        Canonical CT (NumPy or CuPy array).
    bone_mask : (R, A, S) bool array
        From :func:`thagpu.extract_bone`, on the volume's device.
    config : Config, optional

    Returns
    -------
    labels : (R, A, S) uint8 ndarray
        Host label map by schema v1: bone is 5 except the hips' labels 1-4.
    measurements : dict
        ``{"sides": {"left": {...}, "right": {...}}, "afs": {...}}`` in patient
        RAS millimetres and degrees; each side has a ``status`` (``ok``,
        ``implant``, ``truncated``, ``low_confidence`` or ``not_found``), a
        ``confidence`` and a ``message``. ``afs["midline"]`` is
        :meth:`.midline.Midline.report`: where the midline is, how it was
        found, and each candidate's side decision.
    """
    cfg = (config or Config()).afs
    image = volume.array
    xp = get_array_module(image)
    if tuple(bone_mask.shape) != volume.shape:
        raise ValueError(f"bone mask shape {tuple(bone_mask.shape)} != volume shape {volume.shape}")
    bone = xp.asarray(bone_mask, dtype=bool)
    spacing = tuple(float(s) for s in volume.spacing)
    timings = {}
    start = time.perf_counter()
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[np.asarray(to_host(bone))] = schema.OTHER_BONE
    sides = {}
    midline = estimate_midline(volume, bone)
    report = {"midline": midline.report(), "candidates": 0, "timings_s": timings}
    if midline.method == "none":
        for side in SIDES:
            sides[side] = _not_found("no bone in the volume")
        return labels, {"sides": sides, "afs": report}

    components, spoiled = find_metal(image, spacing, metal_hu=cfg.metal_hu, min_ml=cfg.implant_min_ml)
    timings["implant"] = round(time.perf_counter() - start, 4)

    t = time.perf_counter()
    radii = np.arange(cfg.min_radius_mm, cfg.max_radius_mm + 0.5, 1.0)
    candidates = head_candidates(image, bone, spacing, radii_mm=radii, vote_spacing_mm=cfg.vote_spacing_mm,
                                 exclude=spoiled)
    report["candidates"] = len(candidates)
    timings["candidates"] = round(time.perf_counter() - t, 4)
    # A narrow view cut on both borders may hold both hips: its symmetry plane is the midline when two
    # strong candidates mirror each other about it (before the metal is placed, which needs the midline).
    midline = midline.adopt_alternative([volume.index_to_ras(c.center_index)[0] for c in candidates])

    t = time.perf_counter()
    implants = {}
    metal_mask = None
    for component in components:
        if midline.method == "femur_anatomy" and metal_mask is None:
            metal_mask = bone | (image >= cfg.metal_hu)  # the stem stands in the shaft
        decision = midline.side_of(
            volume.index_to_ras(component.centroid_index)[0], METAL_LATERAL_MM, record=False,
            femur_sign=lambda c=component: femur_lateral_sign(volume, metal_mask, c.centroid_index))
        if decision.side is not None:
            implants[decision.side] = implants.get(decision.side, 0.0) + component.volume_ml
    report["metal_ml"] = {side: _round(ml, 1) for side, ml in implants.items()}
    timings["implant"] = round(timings["implant"] + time.perf_counter() - t, 4)

    t = time.perf_counter()
    if midline.method == "femur_anatomy":  # one hip in view, its side told by its femur
        midline.settle_view_side([femur_lateral_sign(volume, bone, c.center_index) for c in candidates])
    best = {}
    for candidate in candidates:
        side = midline.side_of(volume.index_to_ras(candidate.center_index)[0], MIN_LATERAL_MM).side
        if side is None or side in implants:
            continue
        boundary = locate_boundary(image, candidate.center_index, candidate.radius_mm, spacing,
                                   n_directions=cfg.n_directions, step_mm=cfg.profile_step_mm,
                                   sigma_mm=cfg.profile_sigma_mm, scale_mm=cfg.fit_outlier_mm, bone=bone)
        if boundary is None:
            continue
        radius = boundary.sphere.radius
        fits = (boundary.inlier_fraction >= cfg.min_inlier_fraction and boundary.sphere.rms <= cfg.max_fit_rms_mm
                and cfg.min_radius_mm - 1.0 <= radius <= cfg.max_radius_mm + 1.0)
        if fits and (side not in best or _head_score(boundary) > _head_score(best[side])):
            best[side] = boundary
    report["midline"] = midline.report()
    timings["boundary"] = round(time.perf_counter() - t, 4)

    t = time.perf_counter()
    splits = {}
    for side in SIDES:
        if side in implants:
            sides[side] = {"status": "implant", "confidence": 1.0,
                           "metal_ml": _round(implants[side], 1),
                           "message": f"metal implant ({implants[side]:.0f} ml) on the patient's {side} side"}
            continue
        if side not in best:
            message = f"no femoral head found on the patient's {side} side"
            undecided = [d for d in midline.decisions if d.side is None and "determined" in d.reason]
            if undecided:
                message += f" ({len(undecided)} candidate(s) whose side could not be determined)"
            sides[side] = _not_found(message)
            continue
        # Cast the lines again from the fitted centre so directions are about the head's own centre.
        first = best[side]
        boundary = locate_boundary(image, first.sphere.center / np.asarray(spacing), first.sphere.radius, spacing,
                                   n_directions=cfg.n_directions, step_mm=cfg.profile_step_mm,
                                   sigma_mm=cfg.profile_sigma_mm, scale_mm=cfg.fit_outlier_mm, bone=bone) or first
        edge = None
        if cfg.cortex_edge_model:
            edge = head_edge_offset(image, boundary.sphere.center, boundary.sphere.radius, boundary.directions,
                                    spacing, psf_sigma_mm=cfg.psf_sigma_mm,
                                    slice_profile_fraction=cfg.slice_profile_fraction,
                                    edge_residuals_mm=boundary.edge_residuals(), bone_beyond=boundary.bone_beyond)
            if edge is not None and edge.trusted:
                boundary = boundary.with_radius_offset(edge.offset_mm)
        field = SurfaceField(boundary)
        sides[side] = _side_measurements(boundary, field, volume, side, cfg)
        sides[side]["head_edge_model"] = _edge_report(edge)
        region = hip_region(image, bone, spacing, field)  # device -> host here, in this thread
        if region is not None:
            splits[side] = (region, field, spacing, side)
            fill = _bone_fill(region, field, spacing)
            sides[side]["head_bone_fill_fraction"] = _round(fill)
            if fill < MIN_HEAD_FILL and sides[side]["status"] in ("ok", "truncated"):
                sides[side].update(status="low_confidence", confidence=min(sides[side]["confidence"],
                                                                            cfg.min_confidence - 0.01),
                                   message=f"only {100 * fill:.0f}% of the fitted head sphere is bone: the sphere "
                                           "reaches out of the head, or the bone mask missed part of it")
    # The two splits are host work that only reads shared arrays (labels are written afterwards,
    # side by side in a fixed order); scikit-image's watershed releases the GIL, so they run at once.
    with ThreadPoolExecutor(max_workers=max(len(splits), 1)) as pool:
        done = {side: pool.submit(split_hip, *job) for side, job in splits.items()}
        for side in SIDES:
            if side in done:
                done[side].result().write(labels)
    timings["split"] = round(time.perf_counter() - t, 4)
    timings["total"] = round(time.perf_counter() - start, 4)
    return labels, {"sides": sides, "afs": report}
