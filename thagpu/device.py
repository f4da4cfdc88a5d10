"""Choosing the compute device and moving arrays to and from it.

``auto`` takes the GPU when CuPy imports and sees one, else the CPU; asking
for ``gpu`` where there is none is an error, never a silent fallback.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import DeviceError, describe

__all__ = ["bincount", "resolve_device", "gpu_available", "gpu_count", "release_gpu_memory", "get_array_module", "to_device",
           "to_host", "is_cupy", "is_device_array", "array_kind"]

DEVICES = ("auto", "cpu", "gpu")


@functools.lru_cache(maxsize=1)
def _gpu_status() -> tuple:
    """(how many CUDA devices CuPy sees, why none where that is 0)."""
    try:
        import cupy
    except Exception as error:  # ImportError, or a broken CUDA install
        return 0, f"CuPy is not importable ({describe(error)})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as error:
        return 0, f"CuPy sees no CUDA device ({str(error).splitlines()[0]})"
    return count, f"{count} CUDA device(s)" if count else "CuPy sees no CUDA device"


def gpu_available() -> bool:
    """True when CuPy is installed and sees at least one CUDA device."""
    return _gpu_status()[0] > 0


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one, as a Dask worker's is)."""
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def gpu_count() -> int:
    """How many CUDA devices CuPy sees (0 without CuPy or a GPU)."""
    return _gpu_status()[0]


def release_gpu_memory() -> None:
    """Hand the blocks CuPy's memory pools cache back to the driver (between cases of a worker).

    The pools keep every freed block for reuse; a worker that meets a larger volume later would
    otherwise hold the peak of every case it has run. Does nothing where CuPy was never imported.
    """
    import sys
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return
    cupy.get_default_memory_pool().free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()


def resolve_device(device: str = "auto") -> str:
    """Turn ``auto``/``cpu``/``gpu`` into ``cpu`` or ``gpu``.

    Raises
    ------
    DeviceError
        ``gpu`` was asked for and no GPU is usable.
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    count, why = _gpu_status()
    ok = count > 0
    if device == "gpu" and not ok:
        raise DeviceError(f"--device gpu was asked for but no GPU is usable: {why}")
    if device == "auto":
        return "gpu" if ok else "cpu"
    return device


def is_cupy(array) -> bool:
    """True when ``array`` is a CuPy array (checked without importing CuPy)."""
    return type(array).__module__.startswith("cupy")


def _is_numba_device_array(array) -> bool:
    return not is_cupy(array) and not isinstance(array, np.ndarray) and hasattr(array, "copy_to_host")


def is_device_array(array) -> bool:
    """True for a CuPy array or a ``numba.cuda`` device array (real or simulated)."""
    return is_cupy(array) or _is_numba_device_array(array)


def array_kind(array) -> str:
    """``"cupy"``, ``"numba"`` (a ``numba.cuda`` device array, real or simulated) or ``"numpy"`` (anything else)."""
    if is_cupy(array):
        return "cupy"
    if _is_numba_device_array(array):
        return "numba"
    return "numpy"


def get_array_module(array):
    """``cupy`` for CuPy arrays, else ``numpy`` (works without CuPy installed)."""
    if is_cupy(array):
        import cupy
        return cupy
    return np


def to_device(array, device: str):
    """Move ``array`` to ``device`` (``cpu`` or ``gpu``); a no-op when it is already there."""
    if device == "gpu":
        import cupy
        return cupy.asarray(array)
    return to_host(array)


def to_host(array):
    """A NumPy array from a NumPy, CuPy or ``numba.cuda`` device array (copies from the device)."""
    if is_cupy(array):
        return array.get()
    if _is_numba_device_array(array):
        return array.copy_to_host()
    return np.asarray(array)


def bincount(x, weights=None, minlength: int = 0):
    """``bincount`` of a 1-D integer array on its device (NumPy or CuPy).

    An empty ``x`` gives ``minlength`` zeros on both: CuPy's own sizes its output by
    ``int(cupy.max(x))``, which raises on an empty array where NumPy's returns zeros.

    Parameters
    ----------
    x : 1-D int array
    weights : array like ``x``, optional
    minlength : int

    Returns
    -------
    1-D array of ``max(x.max() + 1, minlength)`` counts (float64 sums with ``weights``).
    """
    xp = get_array_module(x)
    if x.size == 0:
        return xp.zeros(int(minlength), dtype=xp.float64 if weights is not None else xp.intp)
    return xp.bincount(x, weights=weights, minlength=int(minlength))

