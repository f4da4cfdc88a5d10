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
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, markdown_table, write_results


def _timed(function, repeats: int = 5, sync=None) -> tuple:
    """(median seconds over ``repeats`` runs, the result) after one warm-up run (compilation)."""
    result = function()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


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

    # The same calls on either device: the dispatchers pick the njit or the CUDA form by array type.
    if args.device == "gpu":
        import cupy
        from cupyx.scipy import ndimage as nd
        xp, sync, host, compiled, library = cupy, cupy.cuda.Device().synchronize, cupy.asnumpy, "numba-cuda", "cupyx"
    else:
        from scipy import ndimage as nd
        xp, sync, host, compiled, library = np, None, np.asarray, "numba njit (CPU)", "scipy"
    image_d, response_d, points_d, normals_d = (xp.asarray(a) for a in (image, response, points, normals))
    coords = xp.asarray((centre[:, None, None] + directions.T[:, :, None] * radii[None, None, :]).reshape(3, -1))

    def library_profiles():
        samples = nd.map_coordinates(image_d, coords, order=1, mode="nearest").reshape(400, 161)
        smooth = nd.gaussian_filter1d(samples, 2.0, axis=1)
        return xp.gradient(xp.gradient(smooth, axis=1), axis=1)

    # kernel: NumPy reference (and its runs), the kernel on the device, the part compared, library equivalent
    kernels = [
        ("radial_profiles",
         lambda: radial_profiles.radial_profiles_reference(image, centre, directions, radii, spacing), 3,
         lambda: radial_profiles.radial_profiles(image_d, centre, directions, radii, spacing), lambda out: out[-1],
         (f"{library} map_coordinates + gaussian_filter1d", library_profiles)),
        ("line_nms", lambda: line_nms.line_nms_reference(response, min_response=0.5, radius=2), 5,
         lambda: line_nms.line_nms(response_d, min_response=0.5, radius=2), lambda out: out[0],
         (f"{library} maximum_filter1d peaks",
          lambda: (nd.maximum_filter1d(response_d, 5, axis=1) == response_d) & (response_d >= 0.5))),
        ("sphere_votes", lambda: sphere_voting.sphere_votes_reference(points, normals, vote_radii, spacing, shape), 3,
         lambda: sphere_voting.sphere_votes(points_d, normals_d, vote_radii, spacing, shape), lambda out: out, None),
    ]
    for kernel, reference, reference_runs, form, pick, equivalent in kernels:
        seconds, expected = _timed(reference, repeats=reference_runs)
        add(kernel, "numpy reference", seconds)
        seconds, out = _timed(form, sync=sync)
        add(kernel, compiled, seconds, pick(expected), host(pick(out)))
        if equivalent is not None:
            add(kernel, equivalent[0], _timed(equivalent[1], sync=sync)[0])
    table = "## Kernels (median ms; 5 runs, 3 for NumPy references)\n\n" + markdown_table(rows, ["kernel", "form", "median_ms", "max_abs_diff"])
    name = "bench_kernels_gpu" if args.device == "gpu" else "bench_kernels"
    payload = {"machine": machine(), "device": args.device, "rows": rows}
    write_results(name, payload, table, folder=args.out)
    print(table)


if __name__ == "__main__":
    main()
