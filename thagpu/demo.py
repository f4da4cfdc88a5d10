"""``thagpu demo``: phantoms through the whole pipeline, scored against their truth."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from . import labels as schema
from ._atomic import atomic_write_text
from .device import resolve_device
from .evaluation import LABEL_COLUMNS, score_case, summarise
from .phantom import DEFAULT_PRESET, make_phantom, write_phantom
from .pipeline import run_case

__all__ = ["run_demo", "accuracy_row", "COLUMNS"]

STAGES = ("load", "bone", "afs", "write")
COLUMNS = (["case", "bone"] + [name for _, name in LABEL_COLUMNS] +
           ["centre mm", "radius mm", "incl deg", "antev deg", "status L", "status R"] +
           [f"{stage} s" for stage in STAGES])


def _worst(sides: dict, key: str):
    values = [abs(side[key]) for side in sides.values() if key in side]
    return max(values) if values else None


def accuracy_row(case_id: str, scores: dict, timings: dict) -> list:
    """One table row in the order of :data:`COLUMNS` (worst side for the errors)."""
    sides = scores.get("sides", {})
    return ([case_id, scores["bone"]] + [scores[schema.LABEL_NAMES[v]] for v, _ in LABEL_COLUMNS] +
            [_worst(sides, "center_mm"), _worst(sides, "radius_mm"), _worst(sides, "inclination_deg"),
             _worst(sides, "anteversion_deg"),
             sides.get("left", {}).get("status"), sides.get("right", {}).get("status")] +
            [float(timings.get(stage, 0.0)) for stage in STAGES])


def _mean_row(rows: list) -> list:
    row = ["mean"]
    for c in range(1, len(COLUMNS)):
        values = [r[c] for r in rows if isinstance(r[c], (int, float)) and r[c] is not None]
        row.append(float(np.mean(values)) if values and not COLUMNS[c].startswith("status") else "")
    return row


def run_demo(out_dir, *, size="small", device="auto", n=2, seed=1000, preset=DEFAULT_PRESET,
             progress_factory=None):
    """Generate ``n`` phantoms, run :func:`~thagpu.pipeline.run_case` on each, score them.

    Returns
    -------
    rows : list of list
        One row per case and a final mean row, in the order of :data:`COLUMNS`.
    summary : dict
        Also written to ``out_dir/demo.json``.
    """
    device = resolve_device(device)
    out_dir = Path(out_dir)
    rows, cases, all_scores = [], [], []
    progress = progress_factory() if progress_factory else nullcontext()
    with progress:
        task = progress.add_task("demo cases", total=n) if progress_factory else None
        for i in range(n):
            case = make_phantom(seed + i, size=size, preset=preset)
            paths = write_phantom(case, out_dir / "phantoms")
            result = run_case(paths["ct"], out_dir / "results", device=device, case_id=case.case_id)
            scores = score_case(result.labels, case.canonical_labels(), result.measurements, case.truth)
            timings = result.measurements["timings_s"]
            rows.append(accuracy_row(case.case_id, scores, timings))
            cases.append({"case_id": case.case_id, "scores": scores, "timings_s": timings})
            all_scores.append(scores)
            if task is not None:
                progress.advance(task)
    rows.append(_mean_row(rows))
    summary = {"device": device, "size": size, "preset": preset, "seed": seed, "columns": COLUMNS,
               "cases": cases, "summary": summarise(all_scores)}
    atomic_write_text(out_dir / "demo.json", json.dumps(summary, indent=2) + "\n")
    return rows, summary
