"""Bone extraction benchmark: accuracy on phantoms, speed and memory against the full-grid cut.

Run: ``.venv/bin/python -m benchmarks.bench_bone [--quick] [--device cpu|gpu] [--speed-only]``; writes
``benchmarks/results/bench_bone.json`` and ``.md``. Every measurement runs in its own process.
``--speed-only`` re-measures the side-by-side speed rows and the 512 x 512 x 300 rows (on a quiet
machine) and replaces them in the existing results.
"""

from __future__ import annotations

import argparse

import json

from benchmarks.common import RESULTS, machine, markdown_table, run_isolated, write_results

SPEED_SPACING = f"{380 / 300},{320 / 200},{230 / 160}"  # a 300 x 200 x 160 volume


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer phantoms, no 512^2 x 300 run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--speed-only", action="store_true", help="re-measure only the speed and 512^2 x 300 rows")
    args = parser.parse_args(argv)
    if args.speed_only:
        previous = json.loads((RESULTS / "bench_bone.json").read_text())["rows"]
        speed, size = _speed_rows(args.device), _size_rows(args.device)
        kept = [r for r in previous if not r["experiment"].startswith(("speed", "size"))]
        _write(speed + kept + size)
        return
    seeds = [2001, 2002] if args.quick else [2001, 2002, 2003]
    # 1. Side by side on 300 x 200 x 160: the plain full-grid cut, ours exact, ours banded.
    rows = _speed_rows(args.device)
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
    _write(rows)


def _speed_rows(device: str) -> list:
    rows = []
    for method in ("fullgrid", "ours", "banded"):
        row = run_isolated("benchmarks.bone_worker", method, "2000", "hard", SPEED_SPACING,
                           device if method != "fullgrid" else "cpu")
        row["experiment"] = "speed 300x200x160"
        rows.append(row)
    full = rows[0]
    for row in rows[1:]:
        row["speedup_vs_fullgrid"] = round(full["time_s"] / row["time_s"], 2)
        row["energy_gap_rel"] = (row["cut_energy"] - full["cut_energy"]) / full["cut_energy"]
    return rows


def _size_rows(device: str) -> list:
    rows = []
    for method in ("ours", "banded"):
        row = run_isolated("benchmarks.bone_worker", method, "2100", "hard", "full", device)
        row["experiment"] = "size 512x512x300"
        rows.append(row)
    return rows


def _write(rows: list) -> None:
    columns = ["experiment", "method", "device", "seed", "shape", "time_s", "peak_rss_mb", "dice", "head_solid",
               "joint_space_mm", "gap_open", "joint_open", "graph_nodes", "speedup_vs_fullgrid", "energy_gap_rel", "stages_s"]
    table = "## Bone extraction\n\n" + markdown_table(rows, columns)
    write_results("bench_bone", {"machine": machine(), "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
