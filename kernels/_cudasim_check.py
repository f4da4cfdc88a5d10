"""Check every CUDA form of ``thagpu.kernels`` against its NumPy reference, on tiny inputs.

Run as::

    NUMBA_ENABLE_CUDASIM=1 python -m thagpu.kernels._cudasim_check

under numba-cuda's simulator (no GPU needed; the variable must be set before ``numba.cuda`` is
first imported, hence a separate process), or without the variable on a machine with a CUDA GPU.
Inputs go in as ``numba.cuda`` device arrays, so CuPy is not needed. Prints one line per check
and exits with status 0 when all pass, 1 (with the mismatch) otherwise, 2 when there is neither
the simulator nor a GPU.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np

from .line_nms import line_nms, line_nms_cuda, line_nms_reference
from .radial_profiles import radial_profiles, radial_profiles_cuda, radial_profiles_reference
from .sphere_voting import sphere_votes, sphere_votes_cuda, sphere_votes_reference


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _close(name, got, want, rtol=1e-6):
    scale = float(np.nanmax(np.abs(want))) if np.any(np.isfinite(want)) else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=name)


def check_radial_profiles(cuda, rng):
    image = (rng.normal(size=(9, 8, 7)) * 100.0).astype(np.float32)
    center = np.array([4.2, 3.7, 3.1])
    directions = _unit(rng, 8)
    radii = np.linspace(0.0, 7.5, 16).astype(np.float32)
    spacing = (0.8, 0.9, 1.6)
    want_p, want_r = radial_profiles_reference(image, center, directions, radii, spacing, sigma_samples=1.0)
    assert np.isnan(want_p).any() and np.isfinite(want_p).any()  # lines leave the volume
    got_p, got_r = radial_profiles_cuda(cuda.to_device(image), center, directions, radii, spacing,
                                        sigma_samples=1.0)
    _close("radial_profiles_cuda profiles", got_p.copy_to_host(), want_p)
    _close("radial_profiles_cuda response", got_r.copy_to_host(), want_r)
    got_p, got_r = radial_profiles(cuda.to_device(image), center, directions, radii, spacing)
    assert hasattr(got_p, "copy_to_host"), "dispatcher must return device arrays for device input"
    _close("radial_profiles (dispatch) response", got_r.copy_to_host(), want_r)


def check_line_nms(cuda, rng):
    response = rng.integers(0, 4, size=(8, 16)).astype(np.float32)  # many ties
    response[rng.random(response.shape) < 0.15] = np.nan
    for radius, min_response in [(1, 0.0), (2, 1.0), (3, -1.0)]:
        want_keep, want_best = line_nms_reference(response, min_response=min_response, radius=radius)
        got_keep, got_best = line_nms_cuda(cuda.to_device(response), min_response=min_response, radius=radius)
        np.testing.assert_array_equal(got_keep.copy_to_host(), want_keep, err_msg=f"keep, radius={radius}")
        np.testing.assert_array_equal(got_best.copy_to_host(), want_best, err_msg=f"best, radius={radius}")
    got_keep, got_best = line_nms(cuda.to_device(response))
    want_keep, want_best = line_nms_reference(response)
    np.testing.assert_array_equal(got_best.copy_to_host(), want_best, err_msg="best (dispatch)")


def check_sphere_votes(cuda, rng):
    shape = (12, 12, 12)
    points = rng.uniform(0.0, 11.0, size=(30, 3))
    normals = _unit(rng, 30)
    radii = np.array([1.0, 2.5, 4.0], dtype=np.float32)
    spacing = (0.8, 0.8, 2.0)
    want = sphere_votes_reference(points, normals, radii, spacing, shape)
    assert want.sum() > 0
    got = sphere_votes_cuda(cuda.to_device(points), cuda.to_device(normals), radii, spacing, shape)
    np.testing.assert_array_equal(got.copy_to_host(), want, err_msg="sphere_votes_cuda counts")
    # All 30 votes for radius 4 mm collide on one voxel (exercises the atomic adds).
    directions = _unit(rng, 30)
    center = np.array([5.6, 6.2, 5.9])
    sphere_points = center + 4.0 * directions / np.array(spacing)
    want = sphere_votes_reference(sphere_points, -directions, radii, spacing, shape)
    assert want[2, 6, 6, 6] == 30
    got = sphere_votes_cuda(cuda.to_device(sphere_points), cuda.to_device(-directions), radii, spacing, shape)
    np.testing.assert_array_equal(got.copy_to_host(), want, err_msg="sphere_votes_cuda colliding votes")
    weights = rng.uniform(0.5, 2.0, size=30).astype(np.float32)
    want = sphere_votes_reference(points, normals, radii, spacing, shape, weights=weights)
    got = sphere_votes(cuda.to_device(points), normals, radii, spacing, shape, weights=weights)
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-6, err_msg="sphere_votes (dispatch) weighted")


CHECKS = [check_radial_profiles, check_line_nms, check_sphere_votes]


def main() -> int:
    from numba import config, cuda

    simulated = bool(config.ENABLE_CUDASIM)
    if not simulated and not cuda.is_available():
        print("neither NUMBA_ENABLE_CUDASIM=1 nor a CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    print(f"CUDA forms on {'the numba-cuda simulator' if simulated else 'the GPU'}")
    failed = 0
    for check in CHECKS:
        try:
            check(cuda, np.random.default_rng(7))
        except Exception:  # report every check, then fail
            failed += 1
            print(f"FAIL {check.__name__}", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"ok   {check.__name__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
