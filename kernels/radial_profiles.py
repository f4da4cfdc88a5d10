"""Radial intensity profiles around a point and a boundary response along each line.

Used by the acetabulum / femoral head segmentation stage (AFS): from an estimate of the femoral
head centre, sample the CT along many rays and find where each ray crosses the head surface.

Forms
-----
``radial_profiles``
    dispatcher: NumPy image -> CPU form, CuPy (or ``numba.cuda`` device) image -> CUDA form;
    results are of the same kind as ``image``.
``radial_profiles_cpu``
    ``numba.njit(parallel=True)``, ``prange`` over the lines.
``radial_profiles_cuda``
    ``numba.cuda`` kernels: one thread per (line, sample), three launches (sampling, smoothing,
    response).
``radial_profiles_reference``
    vectorised NumPy, for tests and benchmarks only.

The per-sample logic (``_sample_at``, ``_smooth_at``, ``_response_at``) is written once, as
untyped ``numba.njit`` functions. The CPU form calls them directly; the CUDA form compiles the
very same Python functions (``.py_func``) as CUDA device functions with
``cuda.jit(device=True)``. numba-cuda would also accept the ``njit`` dispatchers themselves
inside a kernel (it builds the same device function from ``py_func``), but its simulator
(``NUMBA_ENABLE_CUDASIM=1``, used by the tests) cannot pass its fake device arrays into a
CPU-compiled function, so the device twins are made explicitly.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ._common import (
    array_kind,
    device_array_from,
    empty_device,
    host_float64,
    host_vector,
    launch,
    positive_spacing,
)

__all__ = [
    "radial_profiles",
    "radial_profiles_cpu",
    "radial_profiles_cuda",
    "radial_profiles_reference",
    "gaussian_weights",
]

_NAN = float("nan")

# ``numba.cuda`` once a CUDA form has been used (see ``_cuda_kernels``). The kernels must find it
# as a module global: the simulator swaps module globals that hold ``numba.cuda`` for its fake
# per-thread module while a kernel runs.
cuda = None


# --------------------------------------------------------------------------------------------
# Shared per-sample logic (CPU: called from the njit loops; CUDA: compiled as device functions)
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _sample_at(image, cx, cy, cz, dx, dy, dz, sx, sy, sz, r):
    """Trilinear value of ``image`` at ``c + r * d / s`` (index units); NaN outside the volume."""
    x = cx + r * dx / sx
    y = cy + r * dy / sy
    z = cz + r * dz / sz
    nx = image.shape[0]
    ny = image.shape[1]
    nz = image.shape[2]
    if not (x >= 0.0 and x <= nx - 1.0 and y >= 0.0 and y <= ny - 1.0 and z >= 0.0 and z <= nz - 1.0):
        return _NAN  # also for NaN coordinates
    i0 = int(math.floor(x))
    if i0 > nx - 2:
        i0 = nx - 2
    if i0 < 0:
        i0 = 0
    i1 = i0 + 1 if i0 + 1 < nx else i0
    j0 = int(math.floor(y))
    if j0 > ny - 2:
        j0 = ny - 2
    if j0 < 0:
        j0 = 0
    j1 = j0 + 1 if j0 + 1 < ny else j0
    k0 = int(math.floor(z))
    if k0 > nz - 2:
        k0 = nz - 2
    if k0 < 0:
        k0 = 0
    k1 = k0 + 1 if k0 + 1 < nz else k0
    fx = x - i0
    fy = y - j0
    fz = z - k0
    c00 = float(image[i0, j0, k0]) * (1.0 - fx) + float(image[i1, j0, k0]) * fx
    c10 = float(image[i0, j1, k0]) * (1.0 - fx) + float(image[i1, j1, k0]) * fx
    c01 = float(image[i0, j0, k1]) * (1.0 - fx) + float(image[i1, j0, k1]) * fx
    c11 = float(image[i0, j1, k1]) * (1.0 - fx) + float(image[i1, j1, k1]) * fx
    c0 = c00 * (1.0 - fy) + c10 * fy
    c1 = c01 * (1.0 - fy) + c11 * fy
    return c0 * (1.0 - fz) + c1 * fz


@numba.njit(cache=True, nogil=True)
def _smooth_at(profiles, d, s, weights, half):
    """Gaussian-smoothed profile value at sample ``s`` of line ``d``.

    NaN where ``profiles[d, s]`` is NaN; otherwise the weighted mean of the non-NaN samples within
    ``half`` samples (weights renormalised over them).
    """
    if math.isnan(float(profiles[d, s])):
        return _NAN
    n_samples = profiles.shape[1]
    num = 0.0
    den = 0.0
    for k in range(-half, half + 1):
        t = s + k
        if t >= 0 and t < n_samples:
            v = float(profiles[d, t])
            if not math.isnan(v):
                w = weights[k + half]
                num += w * v
                den += w
    return num / den


@numba.njit(cache=True, nogil=True)
def _response_at(smoothed, d, s, radii, h):
    """Boundary response ``max(0, -g1) + max(0, g2) * h`` at sample ``s`` of line ``d``.

    ``g1``, ``g2`` are the central first and second differences of the smoothed profile with
    respect to the radius (mm), valid for non-uniform radii. NaN at the first and last sample and
    where a smoothed value of the stencil is NaN.
    """
    n_samples = smoothed.shape[1]
    if s < 1 or s > n_samples - 2:
        return _NAN
    qm = smoothed[d, s - 1]
    q0 = smoothed[d, s]
    qp = smoothed[d, s + 1]
    if math.isnan(qm) or math.isnan(q0) or math.isnan(qp):
        return _NAN
    rm = radii[s - 1]
    r0 = radii[s]
    rp = radii[s + 1]
    g1 = (qp - qm) / (rp - rm)
    g2 = 2.0 * ((qp - q0) / (rp - r0) - (q0 - qm) / (r0 - rm)) / (rp - rm)
    return max(0.0, -g1) + max(0.0, g2) * h


# --------------------------------------------------------------------------------------------
# CPU form
# --------------------------------------------------------------------------------------------

@numba.njit(parallel=True, cache=True, nogil=True)
def _radial_profiles_cpu_loop(image, cx, cy, cz, directions, radii, sx, sy, sz, weights, half, h,
                              profiles, smoothed, response):
    n_lines, n_samples = profiles.shape
    for d in numba.prange(n_lines):
        dx = directions[d, 0]
        dy = directions[d, 1]
        dz = directions[d, 2]
        for s in range(n_samples):
            profiles[d, s] = _sample_at(image, cx, cy, cz, dx, dy, dz, sx, sy, sz, radii[s])
        for s in range(n_samples):
            smoothed[d, s] = _smooth_at(profiles, d, s, weights, half)
        for s in range(n_samples):
            response[d, s] = _response_at(smoothed, d, s, radii, h)


# --------------------------------------------------------------------------------------------
# CUDA form
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _cuda_kernels():
    global cuda
    from numba import cuda as numba_cuda

    cuda = numba_cuda
    sample_at = cuda.jit(device=True)(_sample_at.py_func)
    smooth_at = cuda.jit(device=True)(_smooth_at.py_func)
    response_at = cuda.jit(device=True)(_response_at.py_func)

    @cuda.jit
    def sample_kernel(image, cx, cy, cz, directions, radii, sx, sy, sz, profiles):
        t = cuda.grid(1)
        n_lines, n_samples = profiles.shape
        if t < n_lines * n_samples:
            d = t // n_samples
            s = t - d * n_samples
            profiles[d, s] = sample_at(image, cx, cy, cz, directions[d, 0], directions[d, 1],
                                       directions[d, 2], sx, sy, sz, radii[s])

    @cuda.jit
    def smooth_kernel(profiles, weights, half, smoothed):
        t = cuda.grid(1)
        n_lines, n_samples = profiles.shape
        if t < n_lines * n_samples:
            d = t // n_samples
            s = t - d * n_samples
            smoothed[d, s] = smooth_at(profiles, d, s, weights, half)

    @cuda.jit
    def response_kernel(smoothed, radii, h, response):
        t = cuda.grid(1)
        n_lines, n_samples = smoothed.shape
        if t < n_lines * n_samples:
            d = t // n_samples
            s = t - d * n_samples
            response[d, s] = response_at(smoothed, d, s, radii, h)

    return sample_kernel, smooth_kernel, response_kernel


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

def gaussian_weights(sigma_samples: float) -> np.ndarray:
    """Unnormalised Gaussian weights ``exp(-k**2 / (2 sigma**2))`` for ``k = -w..w``.

    Parameters
    ----------
    sigma_samples : float
        Standard deviation in samples; ``0`` means no smoothing (a single weight 1).

    Returns
    -------
    numpy.ndarray
        Shape ``(2 w + 1,)``, float64, with ``w = int(3 * sigma + 0.5)`` (SciPy's truncation rule
        with ``truncate=3``).
    """
    sigma = float(sigma_samples)
    if not (sigma >= 0.0 and math.isfinite(sigma)):
        raise ValueError(f"sigma_samples must be finite and >= 0, got {sigma_samples!r}")
    if sigma == 0.0:
        return np.ones(1, dtype=np.float64)
    half = int(3.0 * sigma + 0.5)
    k = np.arange(-half, half + 1, dtype=np.float64)
    return np.exp(-0.5 * (k / sigma) ** 2)


def _prepare(image_shape, center, directions, radii_mm, spacing, sigma_samples):
    if len(image_shape) != 3:
        raise ValueError(f"image must be 3-D (X, Y, Z), got shape {tuple(image_shape)}")
    center = host_vector(center, 3, "center")
    directions = host_float64(directions, "(D, 3)", 2, 3, "directions")
    radii = host_float64(radii_mm, "(S,)", 1, None, "radii_mm")
    spacing = positive_spacing(spacing)
    if radii.shape[0] < 2 or not np.all(np.isfinite(radii)) or not np.all(np.diff(radii) > 0):
        raise ValueError("radii_mm must hold at least 2 finite, strictly increasing radii")
    if not np.all(np.isfinite(directions)):
        raise ValueError("directions must be finite")
    weights = gaussian_weights(sigma_samples)
    half = (weights.shape[0] - 1) // 2
    h = float((radii[-1] - radii[0]) / (radii.shape[0] - 1))
    return center, directions, radii, spacing, weights, half, h


_PARAMETERS_DOC = """
    Parameters
    ----------
    image : array, shape (X, Y, Z)
        The volume, indexed ``[i, j, k]``; converted to float32.
    center : array_like, shape (3,)
        Start of every line, in voxel index units (float).
    directions : array_like, shape (D, 3)
        Unit vectors in millimetre space; a step of ``r`` mm along ``d`` moves ``r * d / spacing``
        voxels. Not renormalised.
    radii_mm : array_like, shape (S,)
        Sample radii in mm, strictly increasing, ``S >= 2`` (float32 in practice).
    spacing : array_like, shape (3,)
        Voxel size in mm per axis.
    sigma_samples : float, optional
        Standard deviation, in samples, of the Gaussian that smooths each profile before
        differentiation; truncated at ``int(3 * sigma + 0.5)`` samples; ``0`` disables smoothing.
"""

_RETURNS_DOC = """
    Returns
    -------
    profiles : array, shape (D, S), float32
        Trilinear interpolation of ``image`` at ``center + radii_mm[s] * directions[d] / spacing``;
        NaN outside the volume (a coordinate below 0 or above ``n - 1`` on some axis).
    response : array, shape (D, S), float32
        Boundary response ``max(0, -g1) + max(0, g2) * h``, where ``g1`` and ``g2`` are the central
        first and second differences (per mm, non-uniform radii allowed) of the smoothed profile
        and ``h`` is the mean sample step in mm, so both terms are intensity per mm. NaN at the
        first and last sample and wherever a smoothed value of the 3-sample stencil is NaN.
"""


def _doc(summary: str) -> str:
    return summary + _PARAMETERS_DOC + _RETURNS_DOC


# --------------------------------------------------------------------------------------------
# Public forms
# --------------------------------------------------------------------------------------------

def radial_profiles(image, center, directions, radii_mm, spacing, *, sigma_samples=1.0):
    return _dispatch(image)(image, center, directions, radii_mm, spacing, sigma_samples=sigma_samples)


def _dispatch(image):
    return radial_profiles_cpu if array_kind(image) == "numpy" else radial_profiles_cuda


radial_profiles.__doc__ = _doc("""Sample ``D`` lines from ``center`` and compute a boundary response along each.

    Smoothing: each profile is convolved along the line with a Gaussian of ``sigma_samples``
    samples; at every sample the weights are renormalised over the non-NaN samples of the window,
    and the smoothed value is NaN where the profile itself is NaN (outside the volume).

    Rationale: going outward from the femoral head centre, the bright cortex of the head drops to
    the darker cartilage (a negative first derivative) and the joint space is a dark valley (a
    positive second derivative), so the response peaks at the head's surface / joint space.

    Dispatch: a NumPy ``image`` runs the CPU form (``numba.njit(parallel=True)``) and returns
    NumPy arrays; a CuPy image runs the CUDA form and returns CuPy arrays (a ``numba.cuda`` device
    array gives ``numba.cuda`` device arrays). The other arguments may be NumPy or CuPy.
""")


def radial_profiles_cpu(image, center, directions, radii_mm, spacing, *, sigma_samples=1.0):
    image = np.ascontiguousarray(image, dtype=np.float32)
    center, directions, radii, spacing, weights, half, h = _prepare(
        image.shape, center, directions, radii_mm, spacing, sigma_samples)
    shape = (directions.shape[0], radii.shape[0])
    profiles = np.empty(shape, dtype=np.float32)
    response = np.empty(shape, dtype=np.float32)
    smoothed = np.empty(shape, dtype=np.float64)
    if profiles.size:
        _radial_profiles_cpu_loop(image, center[0], center[1], center[2], directions, radii,
                                  spacing[0], spacing[1], spacing[2], weights, half, h,
                                  profiles, smoothed, response)
    return profiles, response


radial_profiles_cpu.__doc__ = _doc("""CPU form of :func:`radial_profiles`.

    ``numba.njit(parallel=True)``, ``prange`` over lines.

    ``image`` must be a NumPy array (or convertible to one); results are NumPy arrays.
""")


def radial_profiles_cuda(image, center, directions, radii_mm, spacing, *, sigma_samples=1.0):
    kind = array_kind(image)
    if kind == "numpy":
        kind = "numba"  # a host image is copied to the device once; results stay there
    center, directions, radii, spacing, weights, half, h = _prepare(
        image.shape, center, directions, radii_mm, spacing, sigma_samples)
    image_d = device_array_from(image, np.float32, kind)
    shape = (directions.shape[0], radii.shape[0])
    profiles = empty_device(shape, np.float32, kind)
    response = empty_device(shape, np.float32, kind)
    n = shape[0] * shape[1]
    if n == 0:
        return profiles, response
    directions_d = device_array_from(directions, np.float64, kind)
    radii_d = device_array_from(radii, np.float64, kind)
    weights_d = device_array_from(weights, np.float64, kind)
    smoothed = empty_device(shape, np.float64, kind)
    sample_kernel, smooth_kernel, response_kernel = _cuda_kernels()
    cx, cy, cz = (float(v) for v in center)
    sx, sy, sz = (float(v) for v in spacing)
    launch(sample_kernel, n, image_d, cx, cy, cz, directions_d, radii_d, sx, sy, sz, profiles)
    launch(smooth_kernel, n, profiles, weights_d, int(half), smoothed)
    launch(response_kernel, n, smoothed, radii_d, float(h), response)
    return profiles, response


radial_profiles_cuda.__doc__ = _doc("""CUDA form of :func:`radial_profiles`.

    ``numba.cuda``, one thread per (line, sample), three launches.

    ``image`` is a CuPy array (results are CuPy arrays) or a ``numba.cuda`` device array (results
    are ``numba.cuda`` device arrays; a NumPy image is copied to the device and treated so).
    ``numba.cuda`` is imported on the first call.
""")


def radial_profiles_reference(image, center, directions, radii_mm, spacing, *, sigma_samples=1.0):
    image = np.ascontiguousarray(image, dtype=np.float32)
    center, directions, radii, spacing, weights, half, h = _prepare(
        image.shape, center, directions, radii_mm, spacing, sigma_samples)
    n_lines, n_samples = directions.shape[0], radii.shape[0]

    # Sampling: the same arithmetic, in the same order, as _sample_at.
    pos = center + radii[None, :, None] * directions[:, None, :] / spacing  # (D, S, 3)
    dims = np.array(image.shape)
    inside = np.all((pos >= 0.0) & (pos <= dims - 1.0), axis=-1)
    safe = np.where(inside[..., None], pos, 0.0)
    lo = np.clip(np.floor(safe).astype(np.int64), 0, np.maximum(dims - 2, 0))
    hi = np.minimum(lo + 1, dims - 1)
    f = safe - lo
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]

    def at(ix, iy, iz):
        return image[ix[..., 0], iy[..., 1], iz[..., 2]].astype(np.float64)

    c00 = at(lo, lo, lo) * (1.0 - fx) + at(hi, lo, lo) * fx
    c10 = at(lo, hi, lo) * (1.0 - fx) + at(hi, hi, lo) * fx
    c01 = at(lo, lo, hi) * (1.0 - fx) + at(hi, lo, hi) * fx
    c11 = at(lo, hi, hi) * (1.0 - fx) + at(hi, hi, hi) * fx
    c0 = c00 * (1.0 - fy) + c10 * fy
    c1 = c01 * (1.0 - fy) + c11 * fy
    values = c0 * (1.0 - fz) + c1 * fz
    profiles = np.where(inside, values, np.nan).astype(np.float32)

    # Smoothing with weights renormalised over the valid samples of each window.
    p = profiles.astype(np.float64)
    padded = np.full((n_lines, n_samples + 2 * half), np.nan)
    padded[:, half:half + n_samples] = p
    num = np.zeros((n_lines, n_samples))
    den = np.zeros((n_lines, n_samples))
    for k in range(-half, half + 1):
        window = padded[:, half + k:half + k + n_samples]
        valid = ~np.isnan(window)
        num += np.where(valid, weights[k + half] * np.where(valid, window, 0.0), 0.0)
        den += np.where(valid, weights[k + half], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = np.where(np.isnan(p), np.nan, num / den)

    # Central differences in mm, then the response.
    response = np.full((n_lines, n_samples), np.nan)
    if n_samples >= 3:
        qm, q0, qp = smoothed[:, :-2], smoothed[:, 1:-1], smoothed[:, 2:]
        rm, r0, rp = radii[:-2], radii[1:-1], radii[2:]
        g1 = (qp - qm) / (rp - rm)
        g2 = 2.0 * ((qp - q0) / (rp - r0) - (q0 - qm) / (r0 - rm)) / (rp - rm)
        response[:, 1:-1] = np.maximum(0.0, -g1) + np.maximum(0.0, g2) * h  # NaN propagates
    return profiles, response.astype(np.float32)


radial_profiles_reference.__doc__ = _doc("""Plain NumPy reference of :func:`radial_profiles` (tests, benchmarks).

    Vectorised over lines and samples; same arithmetic as the kernels.
""")
