"""AFS kernels (thagpu.kernels): CPU forms vs NumPy references, synthetic checks, the CUDA forms
under numba-cuda's simulator (in a subprocess) and, marked ``gpu``, GPU parity with CuPy."""

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.special import erfc

from thagpu.kernels.line_nms import line_nms, line_nms_cpu, line_nms_reference
from thagpu.kernels.radial_profiles import (
    gaussian_weights,
    radial_profiles,
    radial_profiles_cpu,
    radial_profiles_reference,
)
from thagpu.kernels.sphere_voting import (
    best_sphere,
    sphere_votes,
    sphere_votes_cpu,
    sphere_votes_reference,
)

SPACING = (0.8, 0.8, 2.0)


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fibonacci_directions(n):
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * i
    return np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1)


def _ball(shape, center, radius_mm, spacing, edge_mm=0.7, value=1000.0):
    """A bright ball with a Gaussian-blurred edge (a CT-like partial-volume boundary)."""
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, center, spacing)]
    grid = np.meshgrid(*axes, indexing="ij")
    dist = np.sqrt(sum(g ** 2 for g in grid))
    return (value * 0.5 * erfc((dist - radius_mm) / (np.sqrt(2.0) * edge_mm))).astype(np.float32)


def _close(got, want, rtol):
    scale = float(np.nanmax(np.abs(want))) if np.any(np.isfinite(want)) else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, equal_nan=True)


# ------------------------------------------------------------------------------------------
# radial_profiles
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma,uniform", [(1.0, True), (0.0, True), (2.5, False)])
def test_radial_profiles_cpu_matches_reference(sigma, uniform):
    rng = np.random.default_rng(1)
    image = (rng.normal(size=(12, 10, 8)) * 100.0).astype(np.float32)
    center = np.array([5.3, 4.1, 3.7])
    directions = _unit(rng, 16)
    radii = (np.linspace(0.0, 8.0, 17) if uniform else np.cumsum(rng.uniform(0.2, 0.8, 17))).astype(np.float32)
    spacing = (0.8, 0.9, 1.5)
    got_p, got_r = radial_profiles_cpu(image, center, directions, radii, spacing, sigma_samples=sigma)
    want_p, want_r = radial_profiles_reference(image, center, directions, radii, spacing, sigma_samples=sigma)
    assert got_p.shape == got_r.shape == (16, 17) and got_p.dtype == got_r.dtype == np.float32
    assert np.isnan(want_p).any() and np.isfinite(want_p).any()  # some lines leave the volume
    assert np.isfinite(want_r).sum() > 50
    _close(got_p, want_p, 1e-6)
    _close(got_r, want_r, 1e-6)
    # The reference's trilinear sampling agrees with SciPy's on the samples inside the volume.
    pos = center + radii[None, :, None].astype(np.float64) * directions[:, None, :] / np.array(spacing)
    inside = np.isfinite(want_p)
    scipy_values = map_coordinates(image.astype(np.float64), pos[inside].T, order=1, mode="nearest")
    np.testing.assert_allclose(want_p[inside], scipy_values, rtol=1e-5, atol=1e-3)
    # Outside the volume: NaN profile, NaN response.
    assert np.all(np.isnan(got_r[~inside]))


def test_radial_response_definition_on_one_line():
    # A ramp along x (10 per voxel, 0.5 mm voxels: 20 per mm), sampled along +x from voxel 0.
    image = np.zeros((20, 3, 3), dtype=np.float32)
    image[:, :, :] = (10.0 * np.arange(20))[:, None, None]
    profiles, response = radial_profiles_cpu(image, (0.0, 1.0, 1.0), [[1.0, 0.0, 0.0]],
                                             np.arange(0.0, 5.01, 0.5), (0.5, 1.0, 1.0), sigma_samples=1.0)
    np.testing.assert_allclose(profiles[0], 10.0 * np.arange(11), rtol=1e-6)
    assert np.isnan(response[0, 0]) and np.isnan(response[0, -1])
    # Rising: g1 = +20 per mm, g2 = 0 where the smoothing windows are whole -> no response.
    np.testing.assert_allclose(response[0, 4:-4], 0.0, atol=1e-4)
    # Falling, unsmoothed: g1 = -20 per mm, g2 = 0 -> response 20 everywhere but the ends.
    _, response = radial_profiles_cpu(image[::-1].copy(), (0.0, 1.0, 1.0), [[1.0, 0.0, 0.0]],
                                      np.arange(0.0, 5.01, 0.5), (0.5, 1.0, 1.0), sigma_samples=0.0)
    np.testing.assert_allclose(response[0, 1:-1], 20.0, rtol=1e-5)  # 10 per voxel = 20 per mm


def test_gaussian_weights_truncate_at_three_sigma():
    assert gaussian_weights(0.0).tolist() == [1.0]
    w = gaussian_weights(1.0)
    assert w.shape == (7,) and w[3] == 1.0 and np.isclose(w[0], np.exp(-4.5))
    assert gaussian_weights(2.5).shape == (2 * 8 + 1,)
    with pytest.raises(ValueError):
        gaussian_weights(-1.0)


def test_radial_profiles_rejects_bad_arguments():
    image = np.zeros((4, 4, 4), dtype=np.float32)
    ok = dict(center=(1, 1, 1), directions=[[1.0, 0, 0]], radii_mm=[0.0, 1.0, 2.0], spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="radii_mm"):
        radial_profiles(image, **{**ok, "radii_mm": [0.0, 2.0, 1.0]})
    with pytest.raises(ValueError, match="directions"):
        radial_profiles(image, **{**ok, "directions": [1.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="spacing"):
        radial_profiles(image, **{**ok, "spacing": (1, 0, 1)})
    with pytest.raises(ValueError, match="3-D"):
        radial_profiles(image[0], **ok)


def test_radial_profiles_of_a_ball_find_its_surface():
    """Bright ball, radius 10 mm, anisotropic voxels: every line's best NMS sample is on the surface."""
    shape = (41, 41, 17)
    center = (np.array(shape) - 1) / 2.0 + np.array([0.3, -0.2, 0.25])
    image = _ball(shape, center, 10.0, SPACING)
    directions = _fibonacci_directions(64)
    radii = np.arange(0.0, 15.0 + 1e-9, 0.5).astype(np.float32)
    profiles, response = radial_profiles(image, center, directions, radii, SPACING, sigma_samples=1.0)
    assert isinstance(profiles, np.ndarray) and isinstance(response, np.ndarray)
    assert np.all(np.isfinite(profiles))  # the lines stay inside the volume
    assert np.all(profiles[:, 0] > 990.0) and np.all(profiles[:, -1] < 10.0)
    keep, best = line_nms(response, min_response=1.0, radius=2)
    assert np.all(best >= 0)
    assert np.all(keep[np.arange(64), best])
    assert np.max(np.abs(radii[best] - 10.0)) <= 1.0


# ------------------------------------------------------------------------------------------
# line_nms
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("radius,min_response", [(1, 0.0), (2, 1.5), (3, -np.inf), (0, 2.0)])
def test_line_nms_cpu_matches_reference(radius, min_response):
    rng = np.random.default_rng(radius)
    response = rng.integers(0, 5, size=(20, 30)).astype(np.float32)  # many ties
    response[rng.random(response.shape) < 0.15] = np.nan
    response[0, :] = np.nan  # a line without any valid sample
    response[1, 5] = np.inf  # never kept, never suppresses
    got_keep, got_best = line_nms_cpu(response, min_response=min_response, radius=radius)
    want_keep, want_best = line_nms_reference(response, min_response=min_response, radius=radius)
    assert got_keep.dtype == np.bool_ and got_best.dtype == np.int32
    np.testing.assert_array_equal(got_keep, want_keep)
    np.testing.assert_array_equal(got_best, want_best)
    assert got_best[0] == -1 and not got_keep[1, 5]


def test_line_nms_rule_by_hand():
    response = np.array([[1, 3, 3, 2, np.nan, 5, 0, 4, 4, 4],
                         [np.nan] * 10,
                         [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]], dtype=np.float32)
    keep, best = line_nms(response, radius=1)
    # First of equal maxima wins; NaN does not suppress; later equal plateau keeps its first.
    assert np.flatnonzero(keep[0]).tolist() == [1, 5, 7]
    assert np.flatnonzero(keep[2]).tolist() == [0]
    assert best.tolist() == [5, -1, 0]
    keep, best = line_nms(response, radius=1, min_response=4.5)
    assert np.flatnonzero(keep[0]).tolist() == [5] and best.tolist() == [5, -1, -1]
    keep, best = line_nms(response, radius=3)
    # The 4s at 7..9 now see the 5 within 3 samples before them; the 3 at 1 sees no larger value.
    assert np.flatnonzero(keep[0]).tolist() == [1, 5] and best.tolist() == [5, -1, 0]


# ------------------------------------------------------------------------------------------
# sphere voting
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True])
def test_sphere_votes_cpu_matches_reference(weighted):
    rng = np.random.default_rng(3)
    shape = (10, 11, 12)
    points = rng.uniform(-1.0, 12.0, size=(40, 3))
    normals = _unit(rng, 40)
    points[0] = np.nan  # dropped
    radii = np.array([1.0, 2.5, 4.0], dtype=np.float32)
    weights = rng.uniform(0.5, 2.0, size=40).astype(np.float32) if weighted else None
    got = sphere_votes_cpu(points, normals, radii, SPACING, shape, weights=weights)
    want = sphere_votes_reference(points, normals, radii, SPACING, shape, weights=weights)
    assert got.shape == (3,) + shape and got.dtype == np.float32
    assert 0 < want.sum() < 3 * 40  # some votes land outside and are dropped
    np.testing.assert_array_equal(got, want)  # same order of float32 additions: bit-identical


def test_sphere_votes_rounding_and_bounds_by_hand():
    points = np.array([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    normals = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    # Radius 0.5 mm: x 2 + 0.5 = 2.5 -> floor(3.0) = 3; z 2 + 0.5 / 2 = 2.25 -> floor(2.75) = 2;
    # x 0 - 0.5 = -0.5 -> floor(0.0) = 0, kept (round half up).
    # Radius 1.5 mm: x 3.5 -> 4, outside; z 2.75 -> 3; x -1.5 -> -1, outside.
    acc = sphere_votes(points, normals, [0.5, 1.5], (1.0, 1.0, 2.0), (4, 4, 4))
    assert acc[0, 3, 2, 2] == 1 and acc[0, 2, 2, 2] == 1 and acc[0, 0, 0, 0] == 1 and acc[0].sum() == 3
    assert acc[1, 2, 2, 3] == 1 and acc[1].sum() == 1


def test_sphere_votes_find_a_ball_from_its_gradient():
    """Edge voxels of a blurred ball (radius 10 mm, anisotropic voxels) with inward gradient
    normals vote for the true centre at the true radius."""
    shape = (41, 41, 17)
    center = (np.array(shape) - 1) / 2.0 + np.array([0.3, -0.4, 0.2])
    image = _ball(shape, center, 10.0, SPACING)
    grad = np.stack(np.gradient(image.astype(np.float64), *SPACING), axis=-1)  # per mm; inward here
    edge = (image > 200.0) & (image < 800.0)
    points = np.argwhere(edge).astype(np.float64)
    normals = grad[edge] / np.linalg.norm(grad[edge], axis=1, keepdims=True)
    radii = np.array([8.0, 9.0, 10.0, 11.0, 12.0], dtype=np.float32)
    acc = sphere_votes(points, normals, radii, SPACING, shape)
    center_index, radius, votes = best_sphere(acc, radii)
    assert radius == 10.0
    assert np.all(np.abs(center_index - center) <= 1.0)
    assert votes > 2 * acc[[0, 1, 3, 4]].max()  # a clear peak
    # Exact points and normals: every vote at the true radius lands on the same voxel.
    directions = _fibonacci_directions(50)
    exact_points = center + 10.0 * directions / np.array(SPACING)
    acc = sphere_votes(exact_points, -directions, radii, SPACING, shape)
    center_index, radius, votes = best_sphere(acc, radii)
    assert radius == 10.0 and votes == 50 and center_index.tolist() == np.floor(center + 0.5).astype(int).tolist()


def test_best_sphere_ties_and_checks():
    acc = np.zeros((2, 3, 3, 3), dtype=np.float32)
    acc[1, 0, 0, 0] = acc[0, 2, 2, 2] = 5.0
    center_index, radius, votes = best_sphere(acc, [4.0, 6.0])
    assert center_index.tolist() == [2, 2, 2] and radius == 4.0 and votes == 5.0
    with pytest.raises(ValueError):
        best_sphere(acc, [4.0])


# ------------------------------------------------------------------------------------------
# Packaging rules, and the CUDA forms under the simulator
# ------------------------------------------------------------------------------------------

def _run(code_or_module, env_extra=None, module=False):
    env = {**os.environ, **(env_extra or {})}
    args = [sys.executable, "-m", code_or_module] if module else [sys.executable, "-c", code_or_module]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def test_importing_the_kernels_needs_neither_numba_cuda_nor_cupy():
    result = _run(
        "import sys\n"
        "import thagpu.kernels.radial_profiles, thagpu.kernels.line_nms, thagpu.kernels.sphere_voting\n"
        "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda', 'cupy'))]\n"
        "assert not loaded, loaded\n")
    assert result.returncode == 0, result.stdout + result.stderr


def test_cuda_forms_match_references_under_the_simulator():
    env = {"NUMBA_ENABLE_CUDASIM": "1"}
    result = _run("thagpu.kernels._cudasim_check", env, module=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "simulator" in result.stdout and result.stdout.count("ok   ") == 3, result.stdout


# ------------------------------------------------------------------------------------------
# GPU parity (CuPy on a real GPU)
# ------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_forms_match_references_on_the_gpu_with_numba_device_arrays():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-m", "thagpu.kernels._cudasim_check"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the GPU" in result.stdout, result.stdout


@pytest.mark.gpu
def test_radial_profiles_and_line_nms_gpu_match_cpu():
    import cupy

    rng = np.random.default_rng(11)
    shape = (64, 64, 40)
    center = (np.array(shape) - 1) / 2.0 + 0.37
    image = _ball(shape, center, 18.0, SPACING) + rng.normal(0.0, 20.0, size=shape).astype(np.float32)
    directions = _unit(rng, 500)
    radii = np.arange(0.0, 45.0, 0.5).astype(np.float32)  # the longest lines leave the volume
    p_cpu, r_cpu = radial_profiles(image, center, directions, radii, SPACING, sigma_samples=1.5)
    p_gpu, r_gpu = radial_profiles(cupy.asarray(image), cupy.asarray(center), cupy.asarray(directions),
                                   cupy.asarray(radii), SPACING, sigma_samples=1.5)
    assert isinstance(p_gpu, cupy.ndarray) and isinstance(r_gpu, cupy.ndarray)
    assert np.isnan(p_cpu).any()
    _close(cupy.asnumpy(p_gpu), p_cpu, 1e-4)
    _close(cupy.asnumpy(r_gpu), r_cpu, 1e-4)
    for radius, min_response in [(2, 0.0), (4, 5.0)]:
        keep_cpu, best_cpu = line_nms(r_cpu, min_response=min_response, radius=radius)
        keep_gpu, best_gpu = line_nms(cupy.asarray(r_cpu), min_response=min_response, radius=radius)
        assert isinstance(keep_gpu, cupy.ndarray) and isinstance(best_gpu, cupy.ndarray)
        np.testing.assert_array_equal(cupy.asnumpy(keep_gpu), keep_cpu)
        np.testing.assert_array_equal(cupy.asnumpy(best_gpu), best_cpu)


@pytest.mark.gpu
def test_sphere_votes_gpu_match_cpu():
    import cupy

    rng = np.random.default_rng(12)
    shape = (48, 48, 24)
    points = rng.uniform(0.0, 47.0, size=(20000, 3)) * np.array([1.0, 1.0, 0.5])
    normals = _unit(rng, 20000)
    radii = np.arange(6.0, 16.0, 1.0).astype(np.float32)
    acc_cpu = sphere_votes(points, normals, radii, SPACING, shape)
    acc_gpu = sphere_votes(cupy.asarray(points), cupy.asarray(normals), radii, SPACING, shape)
    assert isinstance(acc_gpu, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(acc_gpu), acc_cpu)  # unit weights: exact counts
    weights = rng.uniform(0.5, 2.0, size=20000).astype(np.float32)
    acc_cpu = sphere_votes(points, normals, radii, SPACING, shape, weights=weights)
    acc_gpu = sphere_votes(cupy.asarray(points), cupy.asarray(normals), radii, SPACING, shape,
                           weights=cupy.asarray(weights))
    np.testing.assert_allclose(cupy.asnumpy(acc_gpu), acc_cpu, rtol=1e-4, atol=1e-4 * float(acc_cpu.max()))
    acc_gpu = sphere_votes(cupy.asarray(points), cupy.asarray(normals), radii, SPACING, shape)
    center_gpu, radius_gpu, votes_gpu = best_sphere(acc_gpu, radii)  # exact counts: same argmax
    center_cpu, radius_cpu, votes_cpu = best_sphere(sphere_votes(points, normals, radii, SPACING, shape), radii)
    assert (center_gpu.tolist(), radius_gpu, votes_gpu) == (center_cpu.tolist(), radius_cpu, votes_cpu)
