#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there, minutes counted; the whole script is
# planned for under 10 minutes): install the carried wheels (.whl/: PyMaxflow, and numpy<2.5 for
# numba-cuda; SimpleITK is not needed by the in-memory benchmarks, thagpu imports it lazily), run the
# gpu-marked tests, then the GPU benchmarks on 512 x 512 x 300 phantoms, JSON into $OUT.
# The dataset build with --scheduler cuda (I/O included) runs only where SimpleITK, dask, distributed
# and dask-cuda import: carry their wheels (SimpleITK's is about 50 MB, so in a run without the numpy
# wheel, or in a second call); the step says so when they are missing.
# Usage there: OUT=/some/folder bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
# Run from the source tree: kernels/ is installed as thagpu.kernels by pip (package-dir); here a link
# stands in for that mapping (this tree is the machine's own copy).
[ -e thagpu/kernels ] || ln -s ../kernels thagpu/kernels
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import numpy, numba, cupy, scipy, skimage; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__, 'scipy', scipy.__version__, 'skimage', skimage.__version__)" | tee -a "$OUT/gpu.txt"
status=0
# One deadline for the whole script (a device command may run 600 s at most): each step gets at most
# what is left, and a step that no longer fits is skipped and says so.
TOTAL=${TOTAL:-540}
budget() {  # wanted seconds -> seconds this step may take (0: skip it)
    local left=$(( TOTAL - SECONDS - 10 ))
    if [ "$left" -lt 30 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
run() {  # name, timeout, command...: stdout's last line is the JSON
    local name=$1 limit; limit=$(budget "$2"); shift 2
    echo "== $name"
    if [ "$limit" -eq 0 ]; then echo "skipped: out of time" | tee "$OUT/$name.log"; status=1; return; fi
    if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"; cat "$OUT/$name.json"
    else status=1; tail -n 30 "$OUT/$name.log"; fi
}
step() {  # name, timeout, command...: output kept in $OUT/name.log, its tail shown
    local name=$1 limit; limit=$(budget "$2"); shift 2
    echo "== $name"
    if [ "$limit" -eq 0 ]; then echo "skipped: out of time" | tee "$OUT/$name.log"; status=1; return; fi
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || status=1
    tail -n 14 "$OUT/$name.log"
}
step gpu_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py tests/test_afs.py
run bone_parity 60 python3 -m benchmarks.bone_parity 7 hard small
run bone_gpu_speed 60 python3 -m benchmarks.bone_worker ours 2000 hard "$(python3 -c 'print(f"{380/300},{320/200},{230/160}")')" gpu
# BE + AFS on 512 x 512 x 300 without file I/O (target <= 1.5 s), and CPU/GPU label agreement.
run gpu_pipeline 120 python3 -m benchmarks.gpu_pipeline --out "$OUT"
step kernels_gpu 60 python3 -m benchmarks.bench_kernels --device gpu --out "$OUT"
step afs_gpu 120 python3 -m benchmarks.bench_accuracy --device gpu --quick
cp benchmarks/results/bench_accuracy_gpu.json benchmarks/results/bench_accuracy_gpu.md "$OUT/" 2>/dev/null || status=1
# Dataset build with --scheduler cuda, I/O included (target >= 60 cases/min).
if python3 -c "import SimpleITK, dask, distributed, dask_cuda" 2>/dev/null; then
    step dataset_gpu 120 python3 -m benchmarks.bench_dataset --scheduler cuda --device gpu --workers 1 --cases 16 --out "$OUT"
else
    echo "== dataset_gpu skipped: SimpleITK, dask, distributed or dask-cuda is not importable here (carry their wheels)" | tee "$OUT/dataset_gpu.log"
fi
echo "== done in $SECONDS s (status $status)"
exit $status
