"""Hough-style sphere voting from bone-surface points and their normals.

Used by the acetabulum / femoral head segmentation stage (AFS) to find the femoral head (a near
sphere): every surface point votes, for every candidate radius ``r``, for the voxel ``r`` mm away
along its normal; the true centre collects the votes of the whole head at the true radius.

Forms
-----
``sphere_votes``
    dispatcher: NumPy points -> CPU form, CuPy (or ``numba.cuda`` device array) points -> CUDA
    form; the accumulator is of the same kind as ``points``.
``sphere_votes_cpu``
    ``numba.njit(parallel=True)`` with ``prange`` over the radii: each radius owns its slice of the
    accumulator, so the loop is race-free and, because the points of a radius are added in order,
    deterministic (bit-identical to the reference, whatever the weights).
``sphere_votes_cuda``
    ``numba.cuda`` kernel, one thread per (point, radius), ``cuda.atomic.add`` into the
    accumulator. With unit weights the counts are exact; with other weights the float32 sums may
    differ from the CPU's in the last bits (the order of atomic additions is not fixed).
``sphere_votes_reference``
    vectorised NumPy (``np.add.at``), for tests and benchmarks only.
``best_sphere``
    the accumulator's maximum as (centre voxel, radius, votes); NumPy or CuPy.

The per-vote logic ``_vote_index`` (where a point's vote lands) is one untyped ``numba.njit``
function; the CUDA kernel calls a device function compiled from the same Python function
(``cuda.jit(device=True)(_vote_index.py_func)``; see :mod:`thagpu.kernels.radial_profiles`).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ._common import (
    array_kind,
    device_array_from,
    host_float64,
    is_cupy,
    positive_spacing,
    launch,
    to_host,
    zeros_device,
)

__all__ = ["sphere_votes", "sphere_votes_cpu", "sphere_votes_cuda", "sphere_votes_reference", "best_sphere"]

# ``numba.cuda`` once the CUDA form has been used (module global for the simulator's sake; see
# thagpu.kernels.radial_profiles).
cuda = None


@numba.njit(cache=True, nogil=True)
def _vote_index(px, py, pz, nx, ny, nz, r, sx, sy, sz, size_x, size_y, size_z):
    """Flat C-order index of the voxel nearest to ``p + r * n / s``; -1 outside the grid (or NaN).

    The voxel is ``floor(x + 0.5)`` per axis; ``0 <= floor(v) < size`` iff ``0 <= v < size``, so
    the bounds are checked before flooring (NaN fails the check, never reaching ``floor``).
    """
    x = px + r * nx / sx + 0.5
    y = py + r * ny / sy + 0.5
    z = pz + r * nz / sz + 0.5
    if not (x >= 0.0 and x < size_x and y >= 0.0 and y < size_y and z >= 0.0 and z < size_z):
        return -1
    return (int(math.floor(x)) * size_y + int(math.floor(y))) * size_z + int(math.floor(z))


@numba.njit(parallel=True, cache=True, nogil=True)
def _sphere_votes_cpu_loop(points, normals, radii, weights, sx, sy, sz, size_x, size_y, size_z, accumulator):
    n_radii = radii.shape[0]
    n_points = points.shape[0]
    for ri in numba.prange(n_radii):
        r = radii[ri]
        for n in range(n_points):
            index = _vote_index(points[n, 0], points[n, 1], points[n, 2], normals[n, 0], normals[n, 1],
                                normals[n, 2], r, sx, sy, sz, size_x, size_y, size_z)
            if index >= 0:
                accumulator[ri, index] += weights[n]


@functools.lru_cache(maxsize=1)
def _cuda_kernel():
    global cuda
    from numba import cuda as numba_cuda

    cuda = numba_cuda
    vote_index = cuda.jit(device=True)(_vote_index.py_func)

    @cuda.jit
    def vote_kernel(points, normals, radii, weights, sx, sy, sz, size_x, size_y, size_z, accumulator):
        t = cuda.grid(1)
        n_points = points.shape[0]
        if t < n_points * radii.shape[0]:
            ri = t // n_points
            n = t - ri * n_points
            index = vote_index(points[n, 0], points[n, 1], points[n, 2], normals[n, 0], normals[n, 1],
                               normals[n, 2], radii[ri], sx, sy, sz, size_x, size_y, size_z)
            if index >= 0:
                cuda.atomic.add(accumulator, (ri, index), weights[n])

    return vote_kernel


def _prepare(points_shape, normals, radii_mm, spacing, shape, weights):
    if len(points_shape) != 2 or points_shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(points_shape)}")
    n_points = points_shape[0]
    normals_shape = tuple(normals.shape) if hasattr(normals, "shape") else np.shape(normals)
    if normals_shape != (n_points, 3):
        raise ValueError(f"normals must have shape {(n_points, 3)}, got {normals_shape}")
    radii = host_float64(radii_mm, "(R,)", 1, None, "radii_mm")
    if not np.all(np.isfinite(radii)):
        raise ValueError("radii_mm must be finite")
    spacing = positive_spacing(spacing)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes (X, Y, Z), got {shape}")
    if weights is not None:
        weights_shape = tuple(weights.shape) if hasattr(weights, "shape") else np.shape(weights)
        if weights_shape != (n_points,):
            raise ValueError(f"weights must have shape {(n_points,)}, got {weights_shape}")
    return radii, spacing, shape


_DOC = """
    Parameters
    ----------
    points : array, shape (N, 3)
        Bone-surface points in voxel index units (float).
    normals : array, shape (N, 3)
        Unit vectors in millimetre space pointing from each point towards where the centre would
        be (the caller flips the image gradient as needed).
    radii_mm : array_like, shape (R,)
        Candidate radii in mm.
    spacing : array_like, shape (3,)
        Voxel size in mm per axis.
    shape : tuple of 3 int
        ``(X, Y, Z)``, the accumulator's spatial shape (normally the image's).
    weights : array, shape (N,), optional
        Vote weight per point (float32); 1 when omitted.

    Returns
    -------
    accumulator : array, shape (R, X, Y, Z), float32
        ``accumulator[r, i, j, k]`` is the summed weight of the votes that, for radius
        ``radii_mm[r]``, land on voxel ``(i, j, k)``: the voxel nearest to
        ``points[n] + radii_mm[r] * normals[n] / spacing``, rounding each coordinate as
        ``floor(x + 0.5)``. Votes outside the grid are dropped.
"""


def sphere_votes(points, normals, radii_mm, spacing, shape, *, weights=None):
    if array_kind(points) == "numpy":
        return sphere_votes_cpu(points, normals, radii_mm, spacing, shape, weights=weights)
    return sphere_votes_cuda(points, normals, radii_mm, spacing, shape, weights=weights)


sphere_votes.__doc__ = """Accumulate sphere-centre votes per candidate radius.

    NumPy ``points`` run the CPU form and give a NumPy accumulator; CuPy points run the CUDA form
    and give a CuPy accumulator (``numba.cuda`` device arrays give a ``numba.cuda`` one). The
    accumulator holds ``R * X * Y * Z`` float32 values: keep ``R`` small for a full-size volume,
    or pass points and a shape for a region of interest.
""" + _DOC


def sphere_votes_cpu(points, normals, radii_mm, spacing, shape, *, weights=None):
    points = np.ascontiguousarray(to_host(points), dtype=np.float64)
    radii, spacing, shape = _prepare(points.shape, normals, radii_mm, spacing, shape, weights)
    normals = np.ascontiguousarray(to_host(normals), dtype=np.float64)
    n_points = points.shape[0]
    if weights is None:
        weights = np.ones(n_points, dtype=np.float32)
    weights = np.ascontiguousarray(to_host(weights), dtype=np.float32)
    accumulator = np.zeros((radii.shape[0], shape[0] * shape[1] * shape[2]), dtype=np.float32)
    if n_points and radii.shape[0]:
        _sphere_votes_cpu_loop(points, normals, radii, weights, spacing[0], spacing[1], spacing[2],
                               shape[0], shape[1], shape[2], accumulator)
    return accumulator.reshape((radii.shape[0],) + shape)


sphere_votes_cpu.__doc__ = """CPU form of :func:`sphere_votes`.

    ``numba.njit(parallel=True)`` with ``prange`` over radii.

    Deterministic: the votes of each radius are added in point order, as in the reference.
""" + _DOC


def sphere_votes_cuda(points, normals, radii_mm, spacing, shape, *, weights=None):
    kind = array_kind(points)
    if kind == "numpy":
        kind = "numba"
    radii, spacing, shape = _prepare(tuple(points.shape), normals, radii_mm, spacing, shape, weights)
    n_points = points.shape[0]
    n_radii = radii.shape[0]
    accumulator = zeros_device((n_radii, shape[0] * shape[1] * shape[2]), np.float32, kind)
    if n_points and n_radii:
        points_d = device_array_from(points, np.float64, kind)
        normals_d = device_array_from(normals, np.float64, kind)
        radii_d = device_array_from(radii, np.float64, kind)
        if weights is None:
            weights_d = device_array_from(np.ones(n_points, dtype=np.float32), np.float32, kind)
        else:
            weights_d = device_array_from(weights, np.float32, kind)
        sx, sy, sz = (float(v) for v in spacing)
        launch(_cuda_kernel(), n_points * n_radii, points_d, normals_d, radii_d, weights_d, sx, sy, sz,
               shape[0], shape[1], shape[2], accumulator)
    return accumulator.reshape((n_radii,) + shape)


sphere_votes_cuda.__doc__ = """CUDA form of :func:`sphere_votes`.

    ``numba.cuda``, one thread per (point, radius), ``cuda.atomic.add`` into the accumulator.

    ``points`` is a CuPy array (the accumulator is a CuPy array) or a ``numba.cuda`` device array
    (the accumulator is a ``numba.cuda`` device array; NumPy points are copied to the device and
    treated so). ``numba.cuda`` is imported on the first call.
""" + _DOC


def sphere_votes_reference(points, normals, radii_mm, spacing, shape, *, weights=None):
    points = np.asarray(to_host(points), dtype=np.float64)
    radii, spacing, shape = _prepare(points.shape, normals, radii_mm, spacing, shape, weights)
    normals = np.asarray(to_host(normals), dtype=np.float64)
    n_points = points.shape[0]
    weights = (np.ones(n_points, dtype=np.float32) if weights is None
               else np.asarray(to_host(weights), dtype=np.float32))
    target = np.floor(points[None, :, :] + radii[:, None, None] * normals[None, :, :] / spacing + 0.5)
    with np.errstate(invalid="ignore"):
        inside = np.all((target >= 0) & (target < np.array(shape)), axis=-1)  # (R, N); NaN -> False
    accumulator = np.zeros((radii.shape[0],) + shape, dtype=np.float32)
    r_index, n_index = np.nonzero(inside)  # row-major: radius by radius, points in order
    i, j, k = target[r_index, n_index].astype(np.int64).T
    np.add.at(accumulator, (r_index, i, j, k), weights[n_index])
    return accumulator


sphere_votes_reference.__doc__ = """Plain NumPy reference of :func:`sphere_votes` (tests and benchmarks only).
""" + _DOC


def best_sphere(accumulator, radii_mm):
    """The accumulator's maximum: the best centre voxel, its radius and its votes.

    Parameters
    ----------
    accumulator : array, shape (R, X, Y, Z)
        As returned by :func:`sphere_votes` (NumPy or CuPy).
    radii_mm : array_like, shape (R,)
        The candidate radii the accumulator was built with.

    Returns
    -------
    center_index : numpy.ndarray, shape (3,), int64
        ``(i, j, k)`` of the best voxel (on the host, also for a CuPy accumulator).
    radius_mm : float
        ``radii_mm`` of the best radius.
    votes : float
        The accumulator's value there.

    Notes
    -----
    Ties go to the first maximum in C order, i.e. the smallest radius first.
    """
    if accumulator.ndim != 4:
        raise ValueError(f"accumulator must have shape (R, X, Y, Z), got {tuple(accumulator.shape)}")
    radii = np.asarray(to_host(radii_mm), dtype=np.float64).reshape(-1)
    if radii.shape[0] != accumulator.shape[0]:
        raise ValueError(f"{radii.shape[0]} radii for an accumulator of {accumulator.shape[0]}")
    if accumulator.size == 0:
        raise ValueError("empty accumulator")
    if is_cupy(accumulator):
        import cupy as xp
    else:
        xp = np
        accumulator = np.asarray(to_host(accumulator))
    flat = int(xp.argmax(accumulator))
    r_index, i, j, k = np.unravel_index(flat, tuple(accumulator.shape))
    votes = float(accumulator.reshape(-1)[flat])
    return np.array([i, j, k], dtype=np.int64), float(radii[r_index]), votes
