"""``thagpu demo``: phantoms through the whole pipeline, scored against their truth."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from . import labels as schema
from ._atomic import atomic_write_text
from .device import resolve_device
from .metrics import dice
from .phantom import make_phantom, write_phantom
from .pipeline import run_case

__all__ = ["run_demo", "score_case"]

STAGES = ("load", "bone", "afs", "write")
LABEL_COLUMNS = [(schema.FEMORAL_HEAD_LEFT, "head L"), (schema.ACETABULUM_LEFT, "acet L"),
                 (schema.FEMORAL_HEAD_RIGHT, "head R"), (schema.ACETABULUM_RIGHT, "acet R")]


def score_case(pred, truth) -> dict:
    """Dice of the bone mask (any label) and of each hip label, canonical arrays of equal shape."""
    scores = {"bone": dice(pred > 0, truth > 0)}
    for value, _ in LABEL_COLUMNS:
        scores[schema.LABEL_NAMES[value]] = dice(pred == value, truth == value)
    return scores


def run_demo(out_dir, *, size="small", device="auto", n=2, seed=1000, preset="hard",
             progress_factory=None):
    """Generate ``n`` phantoms, run :func:`~thagpu.pipeline.run_case` on each, score them.

    Returns
    -------
    rows : list of list
        One row per case and a final mean row, in the order of ``summary["columns"]``.
    summary : dict
        Also written to ``out_dir/demo.json``.
    """
    device = resolve_device(device)
    out_dir = Path(out_dir)
    columns = ["case", "bone"] + [name for _, name in LABEL_COLUMNS] + [f"{stage} s" for stage in STAGES]
    rows, cases = [], []
    progress = progress_factory() if progress_factory else nullcontext()
    with progress:
        task = progress.add_task("demo cases", total=n) if progress_factory else None
        for i in range(n):
            case = make_phantom(seed + i, size=size, preset=preset)
            paths = write_phantom(case, out_dir / "phantoms")
            result = run_case(paths["ct"], out_dir / "results", device=device, case_id=case.case_id)
            scores = score_case(result.labels, case.canonical_labels())
            timings = result.measurements["timings_s"]
            rows.append([case.case_id, scores["bone"]] +
                        [scores[schema.LABEL_NAMES[v]] for v, _ in LABEL_COLUMNS] +
                        [float(timings.get(stage, 0.0)) for stage in STAGES])
            cases.append({"case_id": case.case_id, "scores": scores, "timings_s": timings})
            if task is not None:
                progress.advance(task)
    mean = ["mean"] + [float(np.mean([row[c] for row in rows])) for c in range(1, len(columns))]
    rows.append(mean)
    summary = {"device": device, "size": size, "preset": preset, "seed": seed, "columns": columns,
               "cases": cases, "mean": dict(zip(columns[1:], mean[1:]))}
    atomic_write_text(out_dir / "demo.json", json.dumps(summary, indent=2) + "\n")
    return rows, summary
