"""Bone extraction benchmark: accuracy on phantoms, speed and memory against the full-grid cut.

Run: ``.venv/bin/python -m benchmarks.bench_bone [--quick] [--device cpu|gpu] [--speed-only] [--repeats N]``;
writes ``benchmarks/results/bench_bone.json`` and ``.md``. Every measurement runs in its own process.
The side-by-side rows run ``--repeats`` times each, interleaved (one round of every method, then the
next), and each keeps its fastest run (``time_s_runs`` lists them all): on a shared machine the load of
other processes only ever adds time. ``--speed-only`` re-measures the side-by-side rows and replaces
them in the existing results (every row keeps the commit it was measured at).
"""

from __future__ import annotations

import argparse

import json

from benchmarks.common import RESULTS, code_version, machine, markdown_table, run_isolated, write_results

SPEED_SPACING = f"{380 / 300},{320 / 200},{230 / 160}"  # a 300 x 200 x 160 volume
#: The sub-millimetre side by side: an ``anatomic`` phantom at 0.65 x 0.65 x 0.8 mm in a 260 x 180 x
#: 140 mm field of view (400 x 277 x 175 voxels, both hips), where ours solves coarse to fine
#: (``thagpu/bone/refine.py``) and the plain cuts solve the full grid.
SUB_MM_SPACING, SUB_MM_FOV = "0.65,0.65,0.8", "260,180,140"
SUB_MM_EXPERIMENT = "speed sub-mm 0.65x0.65x0.8"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer phantoms, no 512^2 x 300 run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--speed-only", action="store_true", help="re-measure only the side-by-side rows")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side-by-side row (the fastest is kept)")
    args = parser.parse_args(argv)
    if args.speed_only:
        previous = json.loads((RESULTS / "bench_bone.json").read_text(encoding="utf-8"))
        speed = _stamped(_speed_rows(args.device, args.repeats))
        kept = [r for r in previous["rows"] if not r["experiment"].startswith("speed")]
        for row in kept:  # they keep the commit they were measured at
            row.setdefault("commit", previous["machine"].get("commit"))
            row.setdefault("date", previous["machine"].get("date"))
        _write(speed + kept)
        return
    seeds = [2001, 2002] if args.quick else [2001, 2002, 2003]
    # 1. Side by side on 300 x 200 x 160 (the plain full-grid cut uncropped and cropped, ours, banded)
    #    and at 0.65 x 0.65 x 0.8 mm (the plain cuts and ours, coarse to fine).
    rows = _speed_rows(args.device, args.repeats)
    # 2. Accuracy: hard phantoms at 1 mm; osteoporotic at 0.8 x 0.8 x 3 mm.
    for seed in seeds:
        row = run_isolated("benchmarks.bone_worker", "ours", str(seed), "hard", "1.0,1.0,1.0", args.device)
        row["experiment"] = "accuracy hard 1 mm"
        rows.append(row)
        row = run_isolated("benchmarks.bone_worker", "ours", str(seed), "osteoporotic", "0.8,0.8,3.0", args.device)
        row["experiment"] = "accuracy osteoporotic 0.8x0.8x3"
        rows.append(row)
    # 3. Joint spaces of controlled width (both sides), hard phantom at 1 mm and osteoporotic at 0.8 x 0.8 x 3 mm:
    #    how much of the true gap the mask leaves open (gap_open), and whether femur and pelvis separate.
    for width in ("1", "2", "3"):
        row = run_isolated("benchmarks.bone_worker", "ours", "2001", "hard", "1.0,1.0,1.0", args.device, width)
        row["experiment"] = f"joint space {width} mm, hard 1 mm"
        rows.append(row)
    for width in ("2", "3"):
        row = run_isolated("benchmarks.bone_worker", "ours", "2001", "osteoporotic", "0.8,0.8,3.0", args.device, width)
        row["experiment"] = f"joint space {width} mm, osteoporotic 0.8x0.8x3"
        rows.append(row)
    # 4. A 512 x 512 x 300 phantom: time per stage, exact and banded.
    if not args.quick:
        rows += _size_rows(args.device)
    _write(_stamped(rows))


def _stamped(rows: list) -> list:
    """Each row with the commit and date of the code it was measured at (``--speed-only`` mixes runs)."""
    stamp = code_version()
    for row in rows:
        row.update(commit=stamp["commit"], date=stamp["date"])
    return rows


def _speed_rows(device: str, repeats: int = 1) -> list:
    """The side-by-side rows: on 300 x 200 x 160 (``hard`` phantom) three CPU rows (uncropped full
    grid, cropped full grid, ours) and banded, then, with ``device="gpu"``, ours and banded on the GPU
    as rows of their own; at 0.65 x 0.65 x 0.8 mm (``anatomic`` phantom, :data:`SUB_MM_FOV`) the
    three CPU rows (and ours on the GPU).

    Speed-ups divide two CPU times only (``speedup_vs_uncropped``, ``speedup_vs_cropped``); a GPU row
    carries its time and no ratio. ``energy_gap_rel`` compares each cut's energy on the whole volume
    with the uncropped full grid's (the minimum: 0 for every exact method; above 0 for a coarse or
    banded solve).
    """
    groups = {"speed 300x200x160": (("2000", "hard", SPEED_SPACING),
                                    ("fullgrid_uncropped", "fullgrid_cropped", "ours", "banded"), ("ours", "banded")),
              SUB_MM_EXPERIMENT: (("2000", "anatomic", SUB_MM_SPACING, "-", SUB_MM_FOV),
                                  ("fullgrid_uncropped", "fullgrid_cropped", "ours"), ("ours",))}
    rows = []
    for experiment, (case, cpu_methods, gpu_methods) in groups.items():
        runs = [(method, "cpu") for method in cpu_methods]
        if device == "gpu":
            runs += [(method, "gpu") for method in gpu_methods]
        measured: dict = {run: [] for run in runs}
        for _ in range(max(1, repeats)):
            for method, on in runs:
                args = (case[0], case[1], case[2], on) + tuple(case[3:])
                measured[method, on].append(run_isolated("benchmarks.bone_worker", method, *args))
        group = []
        for run in runs:
            row = dict(min(measured[run], key=lambda r: r["time_s"]))
            row["time_s_runs"] = [r["time_s"] for r in measured[run]]
            group.append(row)
        rows += add_speed_figures(group, experiment)
    return rows


def add_speed_figures(rows: list, experiment: str = "speed 300x200x160") -> list:
    """Add the CPU speed-ups and the energy gaps to the speed rows (in place; see :func:`_speed_rows`).

    Parameters
    ----------
    rows : list of dict
        Worker rows (``method``, ``device``, ``time_s``, ``cut_energy``, ``cut_energy_box``); the CPU
        ``fullgrid_uncropped`` and ``fullgrid_cropped`` rows are the baselines.

    Returns
    -------
    list of dict
        ``rows``, each with ``experiment``, and, on CPU rows only, ``speedup_vs_uncropped`` /
        ``speedup_vs_cropped``; every row gets ``energy_gap_rel`` (its whole-volume energy against the
        uncropped cut's) and, where it solved the cropped box, ``box_energy_gap_rel`` (its
        box energy against the cropped full-grid cut's: the exactness of the reduction alone).
    experiment : str
        The rows' ``experiment`` (it starts with ``speed``).
    """
    cpu = {r["method"]: r for r in rows if r["device"] == "cpu"}
    uncropped, cropped = cpu["fullgrid_uncropped"], cpu["fullgrid_cropped"]
    for row in rows:
        row["experiment"] = experiment
        if row["device"] == "cpu" and row is not uncropped:
            row["speedup_vs_uncropped"] = round(uncropped["time_s"] / row["time_s"], 2)
            if row is not cropped:
                row["speedup_vs_cropped"] = round(cropped["time_s"] / row["time_s"], 2)
        if row["cut_energy"] is None:  # solved coarse to fine: no full-resolution minimum sought
            row["energy_gap_rel"] = row["box_energy_gap_rel"] = None
            continue
        row["energy_gap_rel"] = (row["cut_energy"] - uncropped["cut_energy"]) / uncropped["cut_energy"]
        if row["method"] != "fullgrid_uncropped":
            row["box_energy_gap_rel"] = ((row["cut_energy_box"] - cropped["cut_energy_box"])
                                         / cropped["cut_energy_box"])
    return rows


def _size_rows(device: str) -> list:
    rows = []
    for method in ("ours", "banded"):
        row = run_isolated("benchmarks.bone_worker", method, "2100", "hard", "full", device)
        row["experiment"] = "size 512x512x300"
        rows.append(row)
    return rows


def _write(rows: list) -> None:
    speed = [r for r in rows if r["experiment"].startswith("speed")]
    columns = ["experiment", "method", "device", "shape", "solved_shape", "graph_nodes", "time_s", "time_s_runs", "stages_s",
               "peak_rss_mb", "dice",
               "speedup_vs_uncropped", "speedup_vs_cropped", "energy_gap_rel", "box_energy_gap_rel"]
    table = ("## Bone extraction\n\n### Side by side, 300 x 200 x 160 and sub-millimetre (CPU ratios divide CPU times only)\n\n"
             + markdown_table(speed, columns) + "\n\n### Accuracy, joint spaces, 512 x 512 x 300\n\n")
    columns = ["experiment", "method", "device", "seed", "shape", "time_s", "peak_rss_mb", "dice", "head_solid",
               "joint_space_mm", "gap_open", "joint_open", "graph_nodes", "stages_s"]
    table += markdown_table([r for r in rows if r not in speed], columns)
    write_results("bench_bone", {"machine": machine(), "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
