"""The custom kernels side by side with their NumPy reference and the nearest library equivalent.

Run: ``.venv/bin/python -m benchmarks.bench_kernels [--device cpu|gpu] [--out DIR]``; writes
``bench_kernels.json`` and ``.md`` (``bench_kernels_gpu.*`` with ``--device gpu``). Median of 5 timed
runs (3 for the slower NumPy references) after one warm-up (JIT compilation excluded), on AFS-sized
inputs:

* ``radial_profiles``: 400 lines x 161 samples (0-40 mm every 0.25 mm) through a 160^3 CT. Library
  equivalent: trilinear sampling with ``scipy.ndimage.map_coordinates`` (``cupyx`` on the GPU), then
  ``gaussian_filter1d`` and ``np.gradient`` along the lines (no NaN-aware smoothing: timing only).
* ``line_nms``: 8000 lines x 161 samples (20 head candidates). Library equivalent: a
  ``maximum_filter1d`` peak test along the lines (keeps every plateau sample; timing only).
* ``sphere_votes``: 20 000 surface points, 7 radii, a 100^3 accumulator. No library does 3-D sphere
  voting (scikit-image's ``hough_circle`` is 2-D): reference only.

``max_abs_diff`` compares each form with the NumPy reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, markdown_table, write_results
from thagpu._atomic import atomic_write_text


def _timed(function, repeats: int = 5, sync=None) -> float:
    function()  # warm-up (compilation)
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(rng):
    x, y, z = np.meshgrid(*[np.arange(160)] * 3, indexing="ij")
    distance = np.sqrt((x - 80.0) ** 2 + (y - 80.0) ** 2 + (z - 80.0) ** 2)
    image = np.where(distance < 50, 900.0, 40.0).astype(np.float32) + rng.normal(0, 20, (160,) * 3).astype(np.float32)
    golden = np.pi * (3.0 - np.sqrt(5.0))
    k = np.arange(400) + 0.5
    zc = 1 - 2 * k / 400
    directions = np.stack([np.sqrt(1 - zc ** 2) * np.cos(golden * k), np.sqrt(1 - zc ** 2) * np.sin(golden * k), zc], 1)
    radii = np.arange(161) * 0.25
    response = rng.random((8000, 161)).astype(np.float32)
    normals = rng.normal(size=(20000, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = 50 + 25 * normals + rng.normal(0, 0.5, (20000, 3))
    return image, directions, radii, response, points, -normals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from scipy import ndimage

    from thagpu.kernels import line_nms, radial_profiles, sphere_voting

    rng = np.random.default_rng(0)
    image, directions, radii, response, points, normals = _inputs(rng)
    centre, spacing = np.array([80.0, 80.0, 80.0]), (1.0, 1.0, 1.0)
    vote_radii, shape = np.arange(22.0, 29.0), (100, 100, 100)
    rows = []

    def add(kernel, form, seconds, reference=None, result=None):
        diff = None
        if reference is not None and result is not None:
            a, b = np.asarray(reference, dtype=np.float64), np.asarray(result, dtype=np.float64)
            both = np.isfinite(a) & np.isfinite(b)
            diff = float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0
        rows.append({"kernel": kernel, "form": form, "median_ms": round(seconds * 1000, 3), "max_abs_diff": diff})

    # radial profiles
    ref = radial_profiles.radial_profiles_reference(image, centre, directions, radii, spacing)
    add("radial_profiles", "numpy reference", _timed(lambda: radial_profiles.radial_profiles_reference(
        image, centre, directions, radii, spacing), repeats=3))
    if args.device == "cpu":
        out = radial_profiles.radial_profiles_cpu(image, centre, directions, radii, spacing)
        add("radial_profiles", "numba njit (CPU)", _timed(lambda: radial_profiles.radial_profiles_cpu(
            image, centre, directions, radii, spacing)), ref[-1], out[-1])
    coords = (centre[:, None, None] + directions.T[:, :, None] * radii[None, None, :]).reshape(3, -1)

    def library_profiles(nd, arr, xp):
        samples = nd.map_coordinates(arr, xp.asarray(coords), order=1, mode="nearest").reshape(400, 161)
        smooth = nd.gaussian_filter1d(samples, 2.0, axis=1)
        return xp.gradient(xp.gradient(smooth, axis=1), axis=1)

    if args.device == "cpu":
        add("radial_profiles", "scipy map_coordinates + gaussian_filter1d", _timed(lambda: library_profiles(ndimage, image, np)))
    # line NMS
    ref = line_nms.line_nms_reference(response, min_response=0.5, radius=2)
    add("line_nms", "numpy reference", _timed(lambda: line_nms.line_nms_reference(response, min_response=0.5, radius=2)))
    if args.device == "cpu":
        out = line_nms.line_nms_cpu(response, min_response=0.5, radius=2)
        add("line_nms", "numba njit (CPU)", _timed(lambda: line_nms.line_nms_cpu(response, min_response=0.5, radius=2)),
            ref[0], out[0])
        add("line_nms", "scipy maximum_filter1d peaks", _timed(
            lambda: (ndimage.maximum_filter1d(response, 5, axis=1) == response) & (response >= 0.5)))
    # sphere voting
    ref = sphere_voting.sphere_votes_reference(points, normals, vote_radii, spacing, shape)
    add("sphere_votes", "numpy reference", _timed(lambda: sphere_voting.sphere_votes_reference(
        points, normals, vote_radii, spacing, shape), repeats=3))
    if args.device == "cpu":
        out = sphere_voting.sphere_votes_cpu(points, normals, vote_radii, spacing, shape)
        add("sphere_votes", "numba njit (CPU)", _timed(lambda: sphere_voting.sphere_votes_cpu(
            points, normals, vote_radii, spacing, shape)), ref, out)
    if args.device == "gpu":
        import cupy
        from cupyx.scipy import ndimage as cundimage
        sync = cupy.cuda.Device().synchronize
        image_d, response_d, points_d, normals_d = (cupy.asarray(a) for a in (image, response, points, normals))
        ref_profiles = radial_profiles.radial_profiles_reference(image, centre, directions, radii, spacing)
        out = radial_profiles.radial_profiles_cuda(image_d, centre, directions, radii, spacing)
        add("radial_profiles", "numba-cuda", _timed(lambda: radial_profiles.radial_profiles_cuda(
            image_d, centre, directions, radii, spacing), sync=sync), ref_profiles[-1], cupy.asnumpy(out[-1]))
        add("radial_profiles", "cupyx map_coordinates + gaussian_filter1d",
            _timed(lambda: library_profiles(cundimage, image_d, cupy), sync=sync))
        ref_nms = line_nms.line_nms_reference(response, min_response=0.5, radius=2)
        out = line_nms.line_nms_cuda(response_d, min_response=0.5, radius=2)
        add("line_nms", "numba-cuda", _timed(lambda: line_nms.line_nms_cuda(response_d, min_response=0.5, radius=2),
                                             sync=sync), ref_nms[0], cupy.asnumpy(out[0]))
        add("line_nms", "cupyx maximum_filter1d peaks", _timed(
            lambda: (cundimage.maximum_filter1d(response_d, 5, axis=1) == response_d) & (response_d >= 0.5), sync=sync))
        out = sphere_voting.sphere_votes_cuda(points_d, normals_d, vote_radii, spacing, shape)
        add("sphere_votes", "numba-cuda", _timed(lambda: sphere_voting.sphere_votes_cuda(
            points_d, normals_d, vote_radii, spacing, shape), sync=sync), ref, cupy.asnumpy(out))
    table = "## Kernels (median ms; 5 runs, 3 for NumPy references)\n\n" + markdown_table(rows, ["kernel", "form", "median_ms", "max_abs_diff"])
    name = "bench_kernels_gpu" if args.device == "gpu" else "bench_kernels"
    payload = {"machine": machine(), "device": args.device, "rows": rows}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"{name}.json", json.dumps(payload, indent=2) + "\n")
        atomic_write_text(args.out / f"{name}.md", table + "\n")
    else:
        write_results(name, payload, table)
    print(table)


if __name__ == "__main__":
    main()
