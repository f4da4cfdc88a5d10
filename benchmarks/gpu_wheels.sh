#!/usr/bin/env bash
# Fetch, on a machine with the package registries, the wheels a lent H200 lacks (it has no network;
# its image has CUDA 13, PyTorch, CuPy, numba-cuda, SciPy and scikit-image, see docs/benchmarks.md):
#   .whl/          PyMaxflow (bone graph cut), edt and cc3d (CPU distance transform, labelling), numpy<2.5 (numba 0.68 there needs it), and the Dask
#                  stack for --scheduler cuda (dask, distributed and what the image lacks
#                  of their needs): about 21 MB, carried by the first device call;
#   .whl-dataset/  SimpleITK (image I/O of the dataset build and export) and MONAI (the model
#                  benchmark's networks): about 54 MB, carried by a second call, since both folders
#                  together pass the 64 MiB a call may carry.
# Both folders are ignored by git (.git/info/exclude). Usage: bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
download() {  # folder, requirement...
    local folder=$1; shift
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
        -d "$folder" "$@"
}
exclude=$(git rev-parse --git-path info/exclude)  # also right in a worktree
mkdir -p "$(dirname "$exclude")"
for folder in .whl .whl-dataset; do
    grep -qx "/$folder/" "$exclude" 2>/dev/null || echo "/$folder/" >> "$exclude"
done
download .whl PyMaxflow==1.3.2 numpy==2.4.6 edt==3.1.2 connected-components-3d==4.1.1 \
    dask==2026.8.0 distributed==2026.8.0 \
    tornado==6.6.1 zict==3.0.0 tblib==3.2.2 partd==1.4.2 locket==1.0.0
download .whl-dataset SimpleITK==2.5.3 monai==1.6.1
du -sh .whl .whl-dataset
