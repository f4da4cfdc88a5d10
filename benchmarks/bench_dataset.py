"""Dataset build throughput: cases/min for 1 and 2 workers, and the scheduling overhead per case.

Run: ``.venv/bin/python -m benchmarks.bench_dataset [--cases 16] [--workers 1,2]
[--scheduler local|cuda] [--workers-per-gpu 1,2] [--device cpu|gpu] [--out DIR]``; with ``cuda``,
``--workers`` counts GPUs, each measured with every ``--workers-per-gpu`` count of processes; writes
``bench_dataset.json`` and ``.md``
(``bench_dataset_gpu.*`` with ``--device gpu``) to ``benchmarks/results/`` or ``--out``.

The inputs are ``hard`` phantoms of 256 x 256 x 160 voxels written as NIfTI, so the figures include
reading the input and writing every output (labels, QC picture, measurements). For each worker count:

* ``cases_per_min``: cases over the processing time (first submit to last result), and
  ``cases_per_min_wall`` over the whole build including starting the cluster;
* ``scaling_efficiency``: cases/min divided by (workers x the 1-worker cases/min);
* ``overhead_per_case``: scheduling overhead: of the worker busy longest, the processing time
  beyond the sum of its cases' own times, per case it ran, as a fraction of the mean case time.
  Target: under 5 %. ``imbalance_per_case_s``: the rest of ``processing_s x workers / cases - mean
  case time``, from workers idling at the end (the last cases cannot be split).

Each row also gives ``stage_share``: the share of the workers' case time each stage takes (load,
bone, afs, write; the rest of a case is hashing the input and bookkeeping), and ``cpu_utilisation``:
the machine's busy CPU time over its capacity (cores x processing time), from ``/proc/stat`` through
psutil (the whole machine: run it on one that does nothing else). A second, smaller set at
512 x 512 x 300 (``--large-cases``, the largest worker count) shows the same at clinical size.

Then, with the largest worker count, the same dataset is regenerated (``thagpu dataset regenerate``)
under another configuration, so every case changes: ``regenerate_cases_per_min`` beside the build's
``cases_per_min`` (target: equal; the regeneration also compares each case's old and new labels),
and a second regeneration where nothing changed: ``unchanged_regenerate_s`` (target: seconds; it
reads no image).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import machine, markdown_table, write_results
from thagpu.dataset.cluster import DEFAULT_WORKERS_PER_GPU

SHAPE = (256, 256, 160)
LARGE_SHAPE = (512, 512, 300)
FOV_MM = (380.0, 320.0, 230.0)  # the phantom's field of view (RAS)
STAGES = ("load", "bone", "afs", "write")


def make_inputs(folder: Path, n: int, seed: int = 6000, shape=SHAPE) -> None:
    from thagpu.phantom import make_phantom
    from thagpu.io import write_image
    spacing = tuple(f / s for f, s in zip(FOV_MM, shape))
    for i in range(n):
        case = make_phantom(seed + i, size="small", preset="hard", spacing=spacing, header="RAS")
        write_image(case.ct, case.geometry, folder / f"case{i:03d}.nii.gz")


def measure(inputs: Path, workers: int, scheduler: str, device: str, regenerate: bool = False,
            workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU) -> dict:
    from thagpu.config import AFSConfig, Config
    from thagpu.dataset import Ledger, build_dataset
    from thagpu.dataset.engine import LEDGER_NAME
    from thagpu.dataset.generations import regenerate_dataset
    import psutil

    regenerated = {}
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        before = psutil.cpu_times()
        summary = build_dataset(inputs, Path(tmp) / "ds", scheduler=scheduler, workers=workers, device=device,
                                workers_per_gpu=workers_per_gpu)
        after = psutil.cpu_times()
        rows = Ledger(Path(tmp) / "ds" / LEDGER_NAME).rows()
        if regenerate:
            other = Config(afs=AFSConfig(n_directions=300))  # another configuration: every case changes
            again = regenerate_dataset(Path(tmp) / "ds", config=other, scheduler=scheduler, workers=workers,
                                       device=device, workers_per_gpu=workers_per_gpu)
            unchanged = regenerate_dataset(Path(tmp) / "ds", config=other, scheduler=scheduler, workers=workers,
                                           device=device, workers_per_gpu=workers_per_gpu)
            regenerated = {"regenerate_cases_per_min": round(60.0 * again.processed / again.timings["processing_s"], 2),
                           "regenerate_wall_s": round(again.elapsed_s, 3),
                           "unchanged_regenerate_s": round(unchanged.elapsed_s, 3)}
    worker_s = [row["t_total"] for row in rows if row["t_total"]]
    processing = summary.timings["processing_s"]
    mean_case = statistics.fmean(worker_s)
    # Scheduling overhead: the worker that finished last was busy for the sum of its cases' times;
    # the rest of the processing time it spent waiting on the scheduler (no tail imbalance in it).
    busy: dict = {}
    for row in rows:
        busy.setdefault(row["worker"], []).append(row["t_total"])
    last = max(busy, key=lambda w: sum(busy[w]))
    overhead = (processing - sum(busy[last])) / len(busy[last])
    imbalance = processing * workers / len(rows) - mean_case - overhead
    # Busy share of the machine over the build (cluster start included: it is short next to the cases).
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    stage_mean = {stage: statistics.fmean(row[f"t_{stage}"] for row in rows) for stage in STAGES}
    return {
        "scheduler": scheduler, "device": device, "workers": workers,
        "workers_per_gpu": workers_per_gpu if scheduler == "cuda" else None, "cases": len(rows),
        "done": summary.counts["done"], "cluster_start_s": summary.timings["cluster_start_s"],
        "processing_s": processing, "wall_s": round(summary.elapsed_s, 3),
        "cases_per_min": round(60.0 * len(rows) / processing, 2),
        "cases_per_min_wall": round(60.0 * len(rows) / summary.elapsed_s, 2),
        "mean_case_s": round(mean_case, 3),
        "stage_mean_s": {stage: round(value, 3) for stage, value in stage_mean.items()},
        "stage_share": {stage: round(value / mean_case, 3) for stage, value in stage_mean.items()},
        "cpu_utilisation": round(1.0 - idle / total, 3) if total > 0 else None,
        "overhead_per_case_s": round(overhead, 3),
        "overhead_fraction": round(overhead / mean_case, 4),
        "imbalance_per_case_s": round(imbalance, 3),
        **regenerated,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--workers-per-gpu", default="2",
                        help="comma-separated worker processes per GPU (--scheduler cuda; --workers counts GPUs)")
    parser.add_argument("--scheduler", default="local", choices=("local", "cuda"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--large-cases", type=int, default=4,
                        help="phantoms of 512 x 512 x 300 built with the largest worker count (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    rows = []
    counts = [int(w) for w in args.workers.split(",")]
    per_gpu = [int(w) for w in args.workers_per_gpu.split(",")] if args.scheduler == "cuda" else [DEFAULT_WORKERS_PER_GPU]
    runs = [(workers, k) for workers in counts for k in per_gpu]
    with tempfile.TemporaryDirectory(prefix="bench-dataset-inputs-") as tmp:
        make_inputs(Path(tmp), args.cases)
        for workers, k in runs:
            rows.append(dict(shape=list(SHAPE), **measure(Path(tmp), workers, args.scheduler, args.device,
                                                          regenerate=(workers, k) == runs[-1], workers_per_gpu=k)))
            print(rows[-1], flush=True)
    # Scaling over worker processes (a GPU's processes count each).
    processes = [r["workers"] * (r["workers_per_gpu"] or 1) for r in rows]
    base = rows[0]["cases_per_min"] / processes[0]
    for row, n in zip(rows, processes):
        row["scaling_efficiency"] = round(row["cases_per_min"] / (n * base), 3)
    if args.large_cases:
        with tempfile.TemporaryDirectory(prefix="bench-dataset-large-") as tmp:
            make_inputs(Path(tmp), args.large_cases, seed=6500, shape=LARGE_SHAPE)
            rows.append(dict(shape=list(LARGE_SHAPE), **measure(Path(tmp), max(counts), args.scheduler, args.device,
                                                                workers_per_gpu=max(per_gpu))))
            print(rows[-1], flush=True)
    columns = ["shape", "scheduler", "device", "workers", "workers_per_gpu", "cases", "done", "cases_per_min", "cases_per_min_wall",
               "scaling_efficiency", "mean_case_s", "cpu_utilisation", "stage_share", "overhead_per_case_s",
               "overhead_fraction", "imbalance_per_case_s", "cluster_start_s", "stage_mean_s",
               "regenerate_cases_per_min", "unchanged_regenerate_s"]
    title = (f"## Dataset build: {args.cases} phantoms of {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]}"
             + (f" and {args.large_cases} of {LARGE_SHAPE[0]} x {LARGE_SHAPE[1]} x {LARGE_SHAPE[2]}"
                if args.large_cases else "") + ", I/O included\n\n")
    name = "bench_dataset_gpu" if args.device == "gpu" else "bench_dataset"
    payload = {"machine": machine(), "shape": SHAPE, "rows": rows}
    write_results(name, payload, title + markdown_table(rows, columns), folder=args.out)
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
