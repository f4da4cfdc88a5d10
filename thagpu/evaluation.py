"""Scoring a segmented case against phantom truth: the accuracy table of the demo and benchmarks."""

from __future__ import annotations

import numpy as np

from . import labels as schema
from .metrics import dice

__all__ = ["score_case", "side_errors", "summarise", "LABEL_COLUMNS"]

LABEL_COLUMNS = [(schema.FEMORAL_HEAD_LEFT, "head L"), (schema.ACETABULUM_LEFT, "acet L"),
                 (schema.FEMORAL_HEAD_RIGHT, "head R"), (schema.ACETABULUM_RIGHT, "acet R")]


def side_errors(measured: dict, truth: dict) -> dict:
    """Errors of one side's measurements against the phantom's truth for that side.

    Returns
    -------
    dict
        ``status`` and ``truth_status``; where both have a head: ``center_mm``
        (distance), ``radius_mm``, ``inclination_deg``, ``anteversion_deg``
        (signed, measured minus true) and the true ``joint_space_mm``.
    """
    out = {"status": measured.get("status"), "truth_status": truth.get("status"),
           "joint_space_mm": truth.get("joint_space_mm")}
    if measured.get("head_center_mm") is None or truth.get("status") == "implant":
        return out
    out["center_mm"] = float(np.linalg.norm(np.subtract(measured["head_center_mm"], truth["head_center_mm"])))
    out["radius_mm"] = float(measured["head_radius_mm"] - truth["head_radius_mm"])
    for angle in ("inclination_deg", "anteversion_deg"):
        if measured.get(angle) is not None:
            out[angle] = float(measured[angle] - truth[angle])
    return out


def score_case(pred_labels, truth_labels, measurements: dict | None = None, truth: dict | None = None) -> dict:
    """Dice of the bone (every label > 0) and of each hip label, and per-side measurement errors.

    The labels' bone is BE's mask less the joint space that AFS leaves background, so at coarse voxels
    it differs from the mask where the mask holds the joint space.

    Parameters
    ----------
    pred_labels, truth_labels : ndarray
        Canonical label maps of equal shape.
    measurements : dict, optional
        The case's ``measurements.json`` content (its ``sides``).
    truth : dict, optional
        The phantom's ``gt.json`` content (its ``sides``).
    """
    scores = {"bone": dice(pred_labels > 0, truth_labels > 0)}
    for value, _ in LABEL_COLUMNS:
        present = bool((truth_labels == value).any() or (pred_labels == value).any())
        scores[schema.LABEL_NAMES[value]] = dice(pred_labels == value, truth_labels == value) if present else None
    if measurements is not None and truth is not None:
        scores["sides"] = {side: side_errors(measurements["sides"].get(side, {}), truth["sides"][side])
                           for side in ("left", "right")}
    return scores


def summarise(scores: list) -> dict:
    """Means of the Dice columns and the worst measurement errors over cases."""
    out = {}
    for key in ["bone"] + [schema.LABEL_NAMES[v] for v, _ in LABEL_COLUMNS]:
        values = [s[key] for s in scores if s.get(key) is not None]
        out[f"mean_dice_{key}"] = float(np.mean(values)) if values else None
    heads = [s[schema.LABEL_NAMES[v]] for s in scores for v in (schema.FEMORAL_HEAD_LEFT, schema.FEMORAL_HEAD_RIGHT)
             if s.get(schema.LABEL_NAMES[v]) is not None]
    cups = [s[schema.LABEL_NAMES[v]] for s in scores for v in (schema.ACETABULUM_LEFT, schema.ACETABULUM_RIGHT)
            if s.get(schema.LABEL_NAMES[v]) is not None]
    out["mean_dice_femoral_head"] = float(np.mean(heads)) if heads else None
    out["mean_dice_acetabulum"] = float(np.mean(cups)) if cups else None
    sides = [side for s in scores for side in s.get("sides", {}).values()]
    for key in ("center_mm", "radius_mm", "inclination_deg", "anteversion_deg"):
        values = [abs(side[key]) for side in sides if key in side]
        out[f"max_abs_{key}"] = float(np.max(values)) if values else None
        out[f"mean_abs_{key}"] = float(np.mean(values)) if values else None
    out["status_agreement"] = float(np.mean([side["status"] == side["truth_status"] for side in sides])) \
        if sides else None
    return out
