"""BE + AFS on one 512 x 512 x 300 phantom: GPU time without file I/O, and CPU/GPU agreement.

Run (on a GPU machine): ``python3 -m benchmarks.gpu_pipeline [--out DIR] [--repeats 3]``; prints one
JSON line last and writes ``gpu_pipeline.json`` to ``--out`` (default ``benchmarks/results/gpu``).
``--device cpu --size small`` is a dry run of the same script without a GPU (the tests use it): the
"GPU" figures are then the CPU's and parity compares the CPU with itself.

* ``gpu_s``: median over ``--repeats`` warm runs of ``segment_volume`` (bone extraction + hip
  segmentation) on a volume already on the GPU, the labels back on the host; per-stage medians too.
  Target: <= 1.5 s. ``gpu_substage_s``: the medians of each stage's own steps (``bone.energy``,
  ``afs.boundary``, ...), to show where the time goes.
* Parity with the CPU run of the same volume: voxels whose label differs (target: identical, or
  within the tolerance documented in docs/architecture.md), and per side the head centre and
  radius differences and both statuses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    from benchmarks.common import code_version
    from thagpu._atomic import atomic_write_text
    from thagpu.config import Config
    from thagpu.device import resolve_device, to_device
    from thagpu.phantom import make_phantom
    from thagpu.pipeline import segment_volume

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5400)
    parser.add_argument("--size", choices=("tiny", "small", "full"), default="full")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)

    def synchronize():
        if device == "gpu":
            import cupy

            cupy.cuda.Device().synchronize()

    config = Config()
    began = time.perf_counter()

    def log(message):  # one line per step: a run cut short by its time limit still shows where it was
        print(f"[{time.perf_counter() - began:6.1f} s] {message}", flush=True)

    start = time.perf_counter()
    case = make_phantom(args.seed, size=args.size, preset="hard")
    volume = case.to_volume()
    make_s = time.perf_counter() - start
    log(f"phantom {volume.shape} made in {make_s:.1f} s")
    on_gpu = volume.with_array(to_device(volume.array, device))
    runs = []
    for repeat in range(args.repeats + 1):  # the first run compiles the kernels
        timings: dict = {}
        synchronize()
        start = time.perf_counter()
        gpu_labels, gpu_results = segment_volume(on_gpu, config, device, timings)
        total = time.perf_counter() - start
        log(f"{device} run {repeat} ({'warm' if repeat else 'compiles'}): {total:.3f} s "
            f"(BE {timings.get('bone', float('nan')):.3f}, AFS {timings.get('afs', float('nan')):.3f})")
        if repeat:
            stages = {f"bone.{k}": v for k, v in gpu_results["bone"].get("timings_s", {}).items()}
            stages.update({f"afs.{k}": v for k, v in gpu_results["afs"]["timings_s"].items() if k != "total"})
            runs.append({"total_s": total, **timings, "stages": stages})
    gpu_s = statistics.median(r["total_s"] for r in runs)
    timing = {
        "device": device, "shape": list(volume.shape), "phantom_s": round(make_s, 2), "repeats": args.repeats,
        "gpu_s": round(gpu_s, 3),
        "gpu_stage_s": {k: round(statistics.median(r[k] for r in runs), 3) for k in ("bone", "afs")},
        "gpu_substage_s": {k: round(statistics.median(r["stages"][k] for r in runs), 4) for k in runs[0]["stages"]},
        "target_gpu_s": 1.5, "target_met": gpu_s <= 1.5, **code_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # The timings first, in case the CPU reference below outlasts the run's time limit.
    atomic_write_text(args.out / "gpu_pipeline.json", json.dumps({**timing, "parity": "not run"}, indent=2) + "\n")
    log("timings written; the CPU reference run follows")
    start = time.perf_counter()
    cpu_labels, cpu_results = segment_volume(volume, config, "cpu", {})
    cpu_s = time.perf_counter() - start
    log(f"cpu run: {cpu_s:.1f} s")
    sides = {}
    for side in ("left", "right"):
        g, c = gpu_results["sides"][side], cpu_results["sides"][side]
        entry = {"status_gpu": g["status"], "status_cpu": c["status"]}
        if g.get("head_center_mm") and c.get("head_center_mm"):
            entry["centre_diff_mm"] = float(np.linalg.norm(np.subtract(g["head_center_mm"], c["head_center_mm"])))
            entry["radius_diff_mm"] = abs(g["head_radius_mm"] - c["head_radius_mm"])
        sides[side] = entry
    differing = int(np.count_nonzero(gpu_labels != cpu_labels))
    result = {
        **timing, "cpu_s": round(cpu_s, 2), "labels_differing_voxels": differing,
        "labels_differing_fraction": differing / gpu_labels.size,
        "hip_voxels": int(np.count_nonzero((cpu_labels >= 1) & (cpu_labels <= 4))), "sides": sides,
    }
    atomic_write_text(args.out / "gpu_pipeline.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
