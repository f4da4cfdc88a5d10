"""Helpers shared by the kernel modules: array-kind detection, argument checks, CUDA launches.

Nothing here imports CuPy or ``numba.cuda`` at module import time; both are imported inside the
functions that need them, so ``import thagpu.kernels`` works on a machine without CUDA.

The *kind* of an array decides which form of a kernel runs:

``"numpy"``
    a NumPy array (or anything ``np.asarray`` accepts): the CPU form.
``"cupy"``
    a CuPy array (detected by ``type(x).__module__``, without importing CuPy): the CUDA form,
    results are CuPy arrays.
``"numba"``
    a ``numba.cuda`` device array (or the simulator's fake one, which also has ``copy_to_host``):
    the CUDA form, results are ``numba.cuda`` device arrays.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# The array kinds are the device layer's (thagpu/device.py), the one backend module of the package.
from ..device import _is_numba_device_array, array_kind, is_cupy, is_device_array, to_host

__all__ = [
    "THREADS_PER_BLOCK",
    "array_kind",
    "is_cupy",
    "is_device_array",
    "to_host",
    "host_vector",
    "host_float64",
    "positive_spacing",
    "device_array_from",
    "empty_device",
    "zeros_device",
    "blocks_for",
    "launch",
]

#: CUDA threads per block for the 1-D launches of the kernel modules.
THREADS_PER_BLOCK = 128


def host_float64(array, shape_desc: str, ndim: int, last: int | None = None, name: str = "array") -> np.ndarray:
    """``array`` as a C-contiguous float64 NumPy array, checking its number of axes (and last axis length)."""
    out = np.ascontiguousarray(to_host(array), dtype=np.float64)
    if out.ndim != ndim or (last is not None and out.shape[-1] != last):
        raise ValueError(f"{name} must have shape {shape_desc}, got {out.shape}")
    return out


def host_vector(values, length: int, name: str) -> np.ndarray:
    """A float64 NumPy vector of exactly ``length`` finite values (e.g. a centre or a spacing)."""
    out = np.asarray(to_host(values), dtype=np.float64).reshape(-1)
    if out.shape != (length,) or not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be {length} finite numbers, got {values!r}")
    return out


def positive_spacing(spacing) -> np.ndarray:
    """The voxel spacing as three positive float64 values (mm per axis)."""
    out = host_vector(spacing, 3, "spacing")
    if not np.all(out > 0):
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    return out


def device_array_from(array, dtype, kind: str):
    """``array`` as a C-contiguous device array of ``dtype`` and of the given kind.

    A CuPy array is converted on its device; a NumPy array is copied to the device; a
    ``numba.cuda`` device array of another dtype or layout takes a round trip through the host
    (meant for small parameter arrays only; pass large inputs with the right dtype).
    """
    dtype = np.dtype(dtype)
    if kind == "cupy":
        import cupy

        return cupy.ascontiguousarray(cupy.asarray(array), dtype=dtype)
    from numba import cuda

    if _is_numba_device_array(array):
        if array.dtype == dtype and _c_contiguous(array):
            return array
        array = array.copy_to_host()
    return cuda.to_device(np.ascontiguousarray(to_host(array), dtype=dtype))


def _c_contiguous(array) -> bool:
    flags = getattr(array, "flags", None)
    if flags is None:
        return False
    try:
        return bool(flags["C_CONTIGUOUS"])
    except (KeyError, TypeError):
        return bool(getattr(flags, "c_contiguous", False))


def empty_device(shape, dtype, kind: str):
    """An uninitialised device array of the given kind."""
    if kind == "cupy":
        import cupy

        return cupy.empty(shape, dtype=dtype)
    from numba import cuda

    return cuda.device_array(shape, dtype=dtype)


def zeros_device(shape, dtype, kind: str):
    """A zero-filled device array of the given kind."""
    if kind == "cupy":
        import cupy

        return cupy.zeros(shape, dtype=dtype)
    from numba import cuda

    return cuda.to_device(np.zeros(shape, dtype=dtype))


def blocks_for(n: int, threads: int = THREADS_PER_BLOCK) -> int:
    """Number of blocks of ``threads`` threads that cover ``n`` work items (at least 1)."""
    return max(1, math.ceil(n / threads))


# numba-cuda warns on every launch of fewer than 128 blocks. Small grids are normal here (a few
# hundred lines), and its NumbaPerformanceWarning (numba.cuda.core.errors) is not a subclass of
# numba's own NumbaWarning, so a test session's "ignore::numba.core.errors.NumbaWarning" filter
# does not cover it.
_LOW_OCCUPANCY = r".*Grid size \d+ will likely result in GPU under-utilization"


def launch(kernel, n_items: int, *args) -> None:
    """Launch the 1-D ``kernel`` with at least ``n_items`` threads, without the low-occupancy warning.

    Parameters
    ----------
    kernel : numba.cuda dispatcher
        A ``@cuda.jit`` kernel whose threads check ``cuda.grid(1) < n_items`` themselves.
    n_items : int
        Number of work items (threads needed).
    *args
        The kernel's arguments.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LOW_OCCUPANCY)
        kernel[blocks_for(n_items), THREADS_PER_BLOCK](*args)
