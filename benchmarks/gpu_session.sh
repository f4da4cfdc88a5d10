#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there, minutes counted): install the carried
# wheels (.whl/, see docs/architecture.md), then GPU benchmarks and CPU/GPU parity, JSON into $OUT.
# Usage there: OUT=/some/folder bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
status=0
run() {  # name, command...: stdout's last line is the JSON
    local name=$1; shift
    echo "== $name"
    if timeout 240 "$@" > "$OUT/$name.log" 2>&1; then tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"; cat "$OUT/$name.json"
    else status=1; tail -n 30 "$OUT/$name.log"; fi
}
run bone_parity python3 -m benchmarks.bone_parity 7 hard small
run bone_gpu_speed python3 -m benchmarks.bone_worker ours 2000 hard "$(python3 -c 'print(f"{380/300},{320/200},{230/160}")')" gpu
run bone_gpu_full python3 -m benchmarks.bone_worker ours 2100 hard full gpu
exit $status
