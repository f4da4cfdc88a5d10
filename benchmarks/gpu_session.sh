#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there, minutes counted; each part keeps to a
# deadline, TOTAL below): install the carried wheels, run the gpu-marked tests, then the GPU
# benchmarks on 512 x 512 x 300 phantoms; logs and JSON come back packed in $OUT/gpu_session.tgz.
# Wheels (fetch them here with benchmarks/gpu_wheels.sh): .whl/ holds PyMaxflow, numpy<2.5 for
# numba-cuda and the Dask stack; .whl-dataset/ holds SimpleITK (the dataset build's I/O) and MONAI
# (the model benchmark), which do not fit in the same 64 MiB carry. So a session makes two calls,
# the second while the machine is still warm (it keeps /tmp/site from the first):
#   1. carry .whl:          OUT=$OUT bash benchmarks/gpu_session.sh          (BE, AFS, kernels)
#   2. carry .whl-dataset:  OUT=$OUT bash benchmarks/gpu_session.sh dataset  (dataset build with
#                           --scheduler cuda, then the six networks of the model benchmark)
# "all" runs both parts in one call, for a machine that has every package already.
# Time: a session has 15 minutes of device time in all, the machine's start (1-2 min) included, and a
# call may be cut short when less is left. The script keeps to its own deadline, TOTAL seconds
# (default 300), and packs after every step: pass TOTAL a little under each call's real limit
# (timeout_s, or the budget_left_s that status reports minus the start), e.g.
#   run(command="TOTAL=280 THAGPU_COMMIT=<hash> OUT=$OUT bash benchmarks/gpu_session.sh", timeout_s=300).
# SKIP="name ..." leaves steps out and GPU_TESTS="files" narrows the gpu-marked tests (a rerun after a
# fix, within what is left of the 15 minutes).
# THAGPU_COMMIT stamps the result files: the device receives the working tree without .git, so
# commit first and name that commit.
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-core}
case "$PART" in core|dataset|all) ;; *) echo "usage: gpu_session.sh [core|dataset|all]" >&2; exit 2;; esac
# On the device machine $OUT comes back, but at most 8 files: every log and JSON goes to $WORK, and
# $OUT/gpu_session.tgz, packed again after each step, carries them all (what a timeout leaves too).
# Without OUT (a local run), $WORK is benchmarks/results/gpu and nothing is packed.
if [ -n "${OUT:-}" ]; then WORK=${WORK:-/tmp/gpu_session}; mkdir -p "$OUT"; else WORK=benchmarks/results/gpu; fi
mkdir -p "$WORK"
pack() {
    [ -n "${OUT:-}" ] || return 0
    tar czf "$OUT/gpu_session.tgz.part" -C "$WORK" . && mv "$OUT/gpu_session.tgz.part" "$OUT/gpu_session.tgz"
}
for folder in .whl .whl-dataset; do
    if ls "$folder"/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$folder"/*.whl || exit 1
    fi
done
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site
# Run from the source tree: kernels/ is installed as thagpu.kernels by pip (package-dir); here a link
# stands in for that mapping (this tree is the machine's own copy).
[ -e thagpu/kernels ] || ln -s ../kernels thagpu/kernels
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
export PYTHONUNBUFFERED=1
# A second call that lands on a fresh machine lacks what the first installed: say so and stop.
if ! python3 -c "import maxflow, edt, cc3d, numba, cupy" 2>/dev/null; then
    echo "PyMaxflow, edt, cc3d, numba or CuPy does not import here: carry .whl (a fresh machine needs the core part first)" \
        | tee "$WORK/missing.txt"
    pack
    exit 1
fi
nvidia-smi -L | tee "$WORK/gpu.txt"
python3 -c "import numpy, numba, cupy, scipy, skimage; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__, 'scipy', scipy.__version__, 'skimage', skimage.__version__)" | tee -a "$WORK/gpu.txt"
status=0
# One deadline for the whole script (a device command may run 600 s at most): each step gets at most
# what is left, and a step that no longer fits is skipped and says so.
TOTAL=${TOTAL:-300}
budget() {  # wanted seconds -> seconds this step may take (0: skip it)
    local left=$(( TOTAL - SECONDS - 10 ))
    if [ "$left" -lt 30 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
step() {  # name, timeout, command...: output kept in $WORK/name.log, its tail shown; returns its status
    local name=$1 limit rc; limit=$(budget "$2"); shift 2
    echo "== $name"
    case " ${SKIP:-} " in *" $name "*) echo "skipped: named in SKIP" | tee "$WORK/$name.log"; return 1;; esac
    if [ "$limit" -eq 0 ]; then echo "skipped: out of time" | tee "$WORK/$name.log"; status=1; return 1; fi
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1; rc=$?
    [ "$rc" -eq 0 ] || status=1
    tail -n 14 "$WORK/$name.log"
    pack
    return "$rc"
}
run() {  # as step; the command's last output line is its JSON, kept as $WORK/name.json
    if step "$@"; then tail -n 1 "$WORK/$1.log" > "$WORK/$1.json"; pack; fi
}
keep_new() {  # marker, files...: copy into $WORK the files written since the marker (not stale ones)
    local marker=$WORK/$1; shift
    for f in "$@"; do
        if [ "$f" -nt "$marker" ]; then cp "$f" "$WORK/"; else echo "$f was not written"; status=1; fi
    done
    pack
}
if [ "$PART" != dataset ]; then
    # First the headline: BE + AFS on 512 x 512 x 300 without file I/O (target <= 1.5 s), and CPU/GPU
    # label agreement, so that it is measured even if later steps run out of time.
    run gpu_pipeline 240 python3 -m benchmarks.gpu_pipeline --out "$WORK"
    # shellcheck disable=SC2086  # GPU_TESTS is a list of test files
    step gpu_tests 200 python3 -m pytest -q -m gpu -p no:cacheprovider ${GPU_TESTS:-tests/test_kernels.py tests/test_afs.py tests/test_gpu_parity.py}
    run bone_parity 60 python3 -m benchmarks.bone_parity 7 hard small
    run bone_gpu_speed 120 python3 -m benchmarks.bone_worker ours 2000 hard "$(python3 -c 'print(f"{380/300},{320/200},{230/160}")')" gpu
    step kernels_gpu 60 python3 -m benchmarks.bench_kernels --device gpu --out "$WORK"
    touch "$WORK/afs_gpu.start"
    step afs_gpu 120 python3 -m benchmarks.bench_accuracy --device gpu --quick
    keep_new afs_gpu.start benchmarks/results/bench_accuracy_gpu.json benchmarks/results/bench_accuracy_gpu.md
fi
if [ "$PART" != core ]; then
    # Dataset build with --scheduler cuda, I/O included (target >= 60 cases/min).
    if python3 -c "import SimpleITK, dask, distributed" 2>/dev/null; then
        step dataset_gpu 240 python3 -m benchmarks.bench_dataset --scheduler cuda --device gpu --workers 1 --workers-per-gpu 1,2 --cases 16 --out "$WORK"
    else
        echo "== dataset_gpu skipped: SimpleITK, dask or distributed is not importable here (carry .whl and .whl-dataset: benchmarks/gpu_wheels.sh)" | tee "$WORK/dataset_gpu.log"
    fi
    # The six networks at the "small" preset (30 epochs), trained on pseudo labels, tested on the truth.
    # Resumable per network: what finishes in time is kept (each network's result.json).
    if python3 -c "import SimpleITK, monai" 2>/dev/null; then
        touch "$WORK/models_gpu.start"
        step models_gpu 400 python3 -m benchmarks.bench_models --device gpu --work /tmp/bench-models
        mkdir -p "$WORK/models"
        (cd /tmp/bench-models && find . \( -name result.json -o -name 'results.*' \) -print0 | tar cf - --null -T -) \
            | tar xf - -C "$WORK/models" 2>/dev/null
        keep_new models_gpu.start benchmarks/results/bench_models_gpu.json benchmarks/results/bench_models_gpu.md
    else
        echo "== models_gpu skipped: SimpleITK or MONAI is not importable here (carry .whl-dataset)" | tee "$WORK/models_gpu.log"
    fi
fi
echo "== done in $SECONDS s (status $status)" | tee "$WORK/done.txt"
pack
exit $status
