"""``thagpu run`` against the time to read its CT and write a label image of its size.

Run: ``.venv/bin/python -m benchmarks.bench_run_io [--quick]``; writes
``benchmarks/results/bench_run_io.json`` and ``.md``.

The target (issue 15): a ``thagpu run`` on the CPU at most 15 times the read-and-write time of its
volume, at sub-millimetre spacing too. Per volume (an ``anatomic`` phantom written as NIfTI):

* ``read_write_s``: a fresh process reads the CT (``load_ct``: decompression, header and value
  checks) and writes a uint8 label image of its size (``save_labels``, gzip), the least I/O a
  labelling tool must do; fastest of 3 processes;
* ``run_s``: the wall time of the command ``thagpu run CT --out DIR --device cpu`` as a user runs it
  (Python start-up and imports included), fastest of 2 (the first also fills the kernels' cache), with
  its own per-stage timings from ``measurements.json``;
* ``ratio``: ``run_s / read_write_s``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]
#: name -> (spacing in mm of the ``small`` anatomic phantom; its shape follows from its field of view)
VOLUMES = {
    "1 mm class (0.8 x 0.8 x 1 mm)": (0.8, 0.8, 1.0),
    "sub-millimetre (0.65 x 0.65 x 0.8 mm)": (0.65, 0.65, 0.8),
}
QUICK_VOLUMES = {"2 mm (quick)": (2.0, 2.0, 2.0)}
SEED = 7001
TARGET_RATIO = 15.0

_READ_WRITE = """
import sys, time
import numpy as np
from thagpu.io import load_ct, save_labels
from thagpu.memory import keep_freed_memory
keep_freed_memory()
start = time.perf_counter()
volume = load_ct(sys.argv[1])
save_labels(np.zeros(volume.shape, np.uint8), volume, sys.argv[2])
print(time.perf_counter() - start)
"""


def _thagpu() -> str:
    return str(Path(sys.executable).with_name("thagpu"))


def read_write_seconds(ct: Path, work: Path, repeats: int = 3) -> float:
    """Fastest of ``repeats`` fresh processes reading ``ct`` and writing a label image of its size."""
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _READ_WRITE, str(ct), str(work / "labels.nii.gz")],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return min(times)


def run_seconds(ct: Path, work: Path, repeats: int = 2) -> tuple:
    """Fastest wall time of ``thagpu run`` on ``ct`` and that run's ``timings_s``."""
    best, stages = float("inf"), None
    for _ in range(repeats):
        out = work / "run"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([_thagpu(), "run", str(ct), "--out", str(out), "--device", "cpu"], check=True,
                       capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        if wall < best:
            (measurements,) = out.glob("*/measurements.json")
            best, stages = wall, json.loads(measurements.read_text(encoding="utf-8"))["timings_s"]
    return best, stages


def measure(name: str, spacing, work: Path) -> dict:
    from thagpu.phantom import make_phantom, write_phantom

    case = make_phantom(SEED, size="small", preset="anatomic", spacing=spacing)
    ct = write_phantom(case, work / "in")["ct"]
    shape = list(case.to_volume().shape)
    read_write = read_write_seconds(ct, work)
    run, stages = run_seconds(ct, work)
    row = {"volume": name, "shape": shape, "voxels_m": round(math.prod(shape) / 1e6, 1),
           "spacing_mm": list(spacing), "read_write_s": round(read_write, 2), "run_s": round(run, 2),
           "ratio": round(run / read_write, 1), "target_ratio": TARGET_RATIO,
           "stages_s": {k: round(float(v), 2) for k, v in stages.items()}}
    row["target_met"] = row["ratio"] <= TARGET_RATIO
    print(f"{name} {shape}: read + write {row['read_write_s']} s, thagpu run {row['run_s']} s "
          f"({row['ratio']}x; stages {row['stages_s']})", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small 2 mm volume")
    args = parser.parse_args(argv)
    rows = []
    for name, spacing in (QUICK_VOLUMES if args.quick else VOLUMES).items():
        with tempfile.TemporaryDirectory(prefix="thagpu-run-io-") as tmp:
            rows.append(measure(name, spacing, Path(tmp)))
    table = "\n".join(["## `thagpu run` against reading the CT and writing its labels", "",
                       f"Target: run at most {TARGET_RATIO:g} x the read-and-write time.", "",
                       markdown_table(rows, ["volume", "shape", "voxels_m", "read_write_s", "run_s", "ratio",
                                             "target_met", "stages_s"])])
    write_results("bench_run_io", {"machine": machine(), "quick": args.quick, "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
