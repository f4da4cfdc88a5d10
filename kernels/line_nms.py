"""Non-maximum suppression along lines (the rows of a (D, S) response array).

Used by the acetabulum / femoral head segmentation stage (AFS) after
:func:`thagpu.kernels.radial_profiles.radial_profiles`: keep the local maxima of the boundary
response on each ray and pick the strongest one as the ray's boundary sample.

Rule: sample ``s`` of line ``d`` is kept iff it is finite, ``>= min_response``, strictly greater
than every finite sample among the ``radius`` samples before it and ``>=`` every finite sample
among the ``radius`` samples after it. Of a run of equal maxima the first one wins. NaN samples are
never kept and never suppress a neighbour; nor are infinite ones.

Forms
-----
``line_nms``
    dispatcher: NumPy -> CPU form, CuPy (or ``numba.cuda`` device array) -> CUDA form; results are
    of the same kind as ``response``.
``line_nms_cpu``
    ``numba.njit(parallel=True)``, ``prange`` over lines.
``line_nms_cuda``
    ``numba.cuda`` kernel, one thread per line.
``line_nms_reference``
    vectorised NumPy, for tests and benchmarks only.

The per-line logic ``_nms_line`` is one untyped ``numba.njit`` function: the CPU loop calls it,
and the CUDA kernel calls a device function compiled from the same Python function
(``cuda.jit(device=True)(_nms_line.py_func)``; see :mod:`thagpu.kernels.radial_profiles` for why
the twin is explicit).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ._common import array_kind, device_array_from, empty_device, launch, to_host

__all__ = ["line_nms", "line_nms_cpu", "line_nms_cuda", "line_nms_reference"]

# ``numba.cuda`` once the CUDA form has been used (module global for the simulator's sake; see
# thagpu.kernels.radial_profiles).
cuda = None


@numba.njit(cache=True, nogil=True)
def _nms_line(response, d, min_response, radius, keep):
    """Fill ``keep[d, :]`` for line ``d`` and return the index of its largest kept sample (or -1)."""
    n_samples = response.shape[1]
    best = -1
    best_value = 0.0
    for s in range(n_samples):
        v = float(response[d, s])
        ok = math.isfinite(v) and v >= min_response
        if ok:
            lo = s - radius if s - radius > 0 else 0
            for t in range(lo, s):
                u = float(response[d, t])
                if math.isfinite(u) and u >= v:
                    ok = False
                    break
        if ok:
            hi = s + radius if s + radius < n_samples - 1 else n_samples - 1
            for t in range(s + 1, hi + 1):
                u = float(response[d, t])
                if math.isfinite(u) and u > v:
                    ok = False
                    break
        keep[d, s] = ok
        if ok and (best < 0 or v > best_value):
            best = s
            best_value = v
    return best


@numba.njit(parallel=True, cache=True, nogil=True)
def _line_nms_cpu_loop(response, min_response, radius, keep, best):
    n_lines = response.shape[0]
    for d in numba.prange(n_lines):
        best[d] = _nms_line(response, d, min_response, radius, keep)


@functools.lru_cache(maxsize=1)
def _cuda_kernel():
    global cuda
    from numba import cuda as numba_cuda

    cuda = numba_cuda
    nms_line = cuda.jit(device=True)(_nms_line.py_func)

    @cuda.jit
    def nms_kernel(response, min_response, radius, keep, best):
        d = cuda.grid(1)
        if d < response.shape[0]:
            best[d] = nms_line(response, d, min_response, radius, keep)

    return nms_kernel


def _check(response_shape, min_response, radius):
    if len(response_shape) != 2:
        raise ValueError(f"response must have shape (D, S), got {tuple(response_shape)}")
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    min_response = float(min_response)
    if math.isnan(min_response):
        raise ValueError("min_response must not be NaN")
    return min_response, radius


_DOC = """
    Parameters
    ----------
    response : array, shape (D, S)
        Response per line and sample (float32; NaN = invalid sample).
    min_response : float, optional
        Samples below this value are never kept.
    radius : int, optional
        Half-width, in samples, of the suppression window.

    Returns
    -------
    keep : array, shape (D, S), bool
        True at the kept local maxima (see the module docstring for the exact rule).
    best : array, shape (D,), int32
        Index of the largest kept sample of each line (the first of equal ones), -1 where none.
"""


def line_nms(response, *, min_response=0.0, radius=2):
    if array_kind(response) == "numpy":
        return line_nms_cpu(response, min_response=min_response, radius=radius)
    return line_nms_cuda(response, min_response=min_response, radius=radius)


line_nms.__doc__ = """Line-based non-maximum suppression of ``response`` (one line per row).

    A NumPy ``response`` runs the CPU form and returns NumPy arrays; a CuPy one runs the CUDA form
    and returns CuPy arrays (a ``numba.cuda`` device array gives ``numba.cuda`` device arrays).
""" + _DOC


def line_nms_cpu(response, *, min_response=0.0, radius=2):
    response = np.ascontiguousarray(to_host(response), dtype=np.float32)
    min_response, radius = _check(response.shape, min_response, radius)
    keep = np.zeros(response.shape, dtype=np.bool_)
    best = np.full(response.shape[0], -1, dtype=np.int32)
    if response.size:
        _line_nms_cpu_loop(response, min_response, radius, keep, best)
    return keep, best


line_nms_cpu.__doc__ = """CPU form of :func:`line_nms` (``numba.njit(parallel=True)``, ``prange`` over lines).
""" + _DOC


def line_nms_cuda(response, *, min_response=0.0, radius=2):
    kind = array_kind(response)
    if kind == "numpy":
        kind = "numba"
    min_response, radius = _check(response.shape, min_response, radius)
    response_d = device_array_from(response, np.float32, kind)
    n_lines = response.shape[0]
    keep = empty_device(response.shape, np.bool_, kind)
    best = empty_device((n_lines,), np.int32, kind)
    if n_lines and response.shape[1]:
        launch(_cuda_kernel(), n_lines, response_d, min_response, radius, keep, best)
    elif n_lines:  # S == 0: nothing to keep
        best = device_array_from(np.full(n_lines, -1, dtype=np.int32), np.int32, kind)
    return keep, best


line_nms_cuda.__doc__ = """CUDA form of :func:`line_nms` (``numba.cuda``, one thread per line).

    ``response`` is a CuPy array (results are CuPy arrays) or a ``numba.cuda`` device array (results
    are ``numba.cuda`` device arrays; a NumPy array is copied to the device and treated so).
    ``numba.cuda`` is imported on the first call.
""" + _DOC


def line_nms_reference(response, *, min_response=0.0, radius=2):
    response = np.asarray(to_host(response), dtype=np.float32).astype(np.float64)
    min_response, radius = _check(response.shape, min_response, radius)
    n_lines, n_samples = response.shape
    padded = np.full((n_lines, n_samples + 2 * radius), np.nan)
    padded[:, radius:radius + n_samples] = response
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(response) & (response >= min_response)
        for k in range(1, radius + 1):
            before = padded[:, radius - k:radius - k + n_samples]
            after = padded[:, radius + k:radius + k + n_samples]
            keep &= ~np.isfinite(before) | (response > before)
            keep &= ~np.isfinite(after) | (response >= after)
    masked = np.where(keep, response, -np.inf)
    best = np.where(keep.any(axis=1), np.argmax(masked, axis=1), -1).astype(np.int32)
    return keep, best


line_nms_reference.__doc__ = """Plain NumPy reference of :func:`line_nms` (tests and benchmarks only).
""" + _DOC
