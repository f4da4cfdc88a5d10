"""A strict stand-in for CuPy, so that the GPU code path runs, and is checked, on a machine without a GPU.

The GPU path of BE and AFS is the CPU code run on CuPy arrays (``get_array_module``, ``ndimage_for``).
What breaks it is what CuPy refuses and NumPy allows: a NumPy array mixed with a device array in an
operation, a NumPy array handed to a ``cupyx.scipy.ndimage`` function (its weights or structure), or a
device array turned into a NumPy one implicitly (``np.asarray``). Such a bug shows only on a GPU, and
GPU time is scarce: the H200 session of 2026-12-04 lost its BE figures to one NumPy weight vector.

:func:`install` puts modules named ``cupy`` and ``cupyx.scipy.ndimage`` into ``sys.modules`` whose
arrays hold a NumPy array and refuse, as CuPy does, every one of those three mixes with a
``TypeError``; the arithmetic itself is NumPy's and SciPy's, so results equal the CPU path's wherever
the code takes the same steps. The compiled kernels (``thagpu.kernels``) are replaced by their CPU
forms for these arrays (their CUDA forms are checked on a GPU, ``tests/test_kernels.py``; the CUDA
simulator would take hours on a volume). Use it in a subprocess: it replaces CuPy for the whole process.

Lenient where CuPy is lenient or where its behaviour is not pinned down here: NumPy scalars mix
freely, and NumPy arrays may index or be assigned into a device array.
"""

from __future__ import annotations

import sys
import types

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
             "array explicitly.")


def _unwrap(value, where: str | None):
    """``value`` with device arrays replaced by their NumPy arrays. A NumPy array is refused, naming
    ``where``; with ``where=None`` it is let through (indices and assigned values)."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, np.ndarray) and where is not None:
        raise TypeError(f"Unsupported type {type(value)} in {where} (a NumPy array mixed with device arrays)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(item, where) for item in value)
    if isinstance(value, dict):
        return {key: _unwrap(item, where) for key, item in value.items()}
    return value


def _wrap(value):
    """NumPy results as device arrays (reductions give 0-d device arrays, as CuPy's do)."""
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    if isinstance(value, list):
        return [_wrap(item) for item in value]
    return value


class ndarray(NDArrayOperatorsMixin):
    """A device array: a NumPy array that does not mix with NumPy arrays."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray):
        self._array = array

    # CuPy refuses implicit conversion to the host.
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"{ufunc.__name__}.{method}"
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs, where), **_unwrap(kwargs, where)))

    def __array_function__(self, func, types, args, kwargs):
        where = f"numpy.{func.__name__}"
        return _wrap(func(*_unwrap(args, where), **_unwrap(kwargs, where)))

    def get(self, *args, **kwargs) -> np.ndarray:
        return self._array.copy()

    def __getitem__(self, key):
        return _wrap(self._array[_unwrap(key, None)])

    def __setitem__(self, key, value):
        self._array[_unwrap(key, None)] = _unwrap(value, None)

    def __len__(self):
        return len(self._array)

    def __iter__(self):
        return (_wrap(item) for item in self._array)

    def __bool__(self):
        return bool(self._array)

    def __float__(self):
        return float(self._array)

    def __int__(self):
        return int(self._array)

    def __index__(self):
        return self._array.__index__()

    def __repr__(self):
        return f"fake_cupy.{self._array!r}"

    @property
    def T(self):
        return ndarray(self._array.T)

    def __getattr__(self, name):
        if name.startswith("__"):  # __array_interface__, __array_struct__: NumPy would read the host data
            raise AttributeError(name)
        attribute = getattr(self._array, name)
        if not callable(attribute):
            return _wrap(attribute) if isinstance(attribute, np.ndarray) else attribute

        def method(*args, **kwargs):
            where = f"ndarray.{name}"
            return _wrap(attribute(*_unwrap(args, where), **_unwrap(kwargs, where)))
        return method


ndarray.__module__ = "cupy"  # thagpu.device.is_cupy reads the type's module


def _checked(function, where: str):
    def call(*args, **kwargs):
        return _wrap(function(*_unwrap(args, where), **_unwrap(kwargs, where)))
    call.__name__ = getattr(function, "__name__", where)
    return call


def asarray(array, dtype=None, order=None, *, blocking=False):
    """A device copy of a host or device array (as ``cupy.asarray``)."""
    host = array._array if isinstance(array, ndarray) else array
    out = np.asarray(host, dtype=dtype, order=order)
    if not isinstance(array, ndarray):
        out = out.copy()
    return ndarray(out)


def ascontiguousarray(array, dtype=None):
    """Only device arrays, as CuPy's (a NumPy array is refused)."""
    if not isinstance(array, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, got "
                        f"{type(array).__module__}.{type(array).__name__})")
    return ndarray(np.ascontiguousarray(array._array, dtype=dtype))


def asnumpy(array, *args, **kwargs):
    return array._array.copy() if isinstance(array, ndarray) else np.asarray(array)


def get_array_module(*arrays):
    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in arrays) else np


class _MemoryPool:
    def free_all_blocks(self):
        pass

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0


class _Device:
    def __init__(self, index: int = 0):
        self.id = index

    def use(self):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _numpy_attribute(name: str):
    attribute = getattr(np, name)
    if callable(attribute) and not isinstance(attribute, type):
        return _checked(attribute, f"cupy.{name}")
    if isinstance(attribute, types.ModuleType):  # cupy.linalg, cupy.random, ...
        module = types.ModuleType(f"cupy.{name}")
        module.__getattr__ = lambda inner: _checked(getattr(attribute, inner), f"cupy.{name}.{inner}")
        return module
    return attribute


def _ndimage_attribute(name: str):
    from scipy import ndimage
    function = getattr(ndimage, name)

    def call(*args, float64_distances=True, **kwargs):
        where = f"cupyx.scipy.ndimage.{name}"
        result = function(*_unwrap(args, where), **_unwrap(kwargs, where))
        if name == "distance_transform_edt" and not float64_distances:
            result = result.astype(np.float32)
        return _wrap(result)
    call.__name__ = name
    return call


_KERNELS = {  # module of thagpu that imported a kernel -> names it imported
    "thagpu.afs.cortex_model": ("radial_profiles",),
    "thagpu.afs.boundary": ("radial_profiles", "line_nms"),
    "thagpu.afs.candidates": ("sphere_votes",),
}


def _host_kernel(cpu_form):
    """A kernel for device arrays: the CPU form on the host arrays, its results as device arrays."""
    def call(first, *args, **kwargs):
        if not isinstance(first, ndarray):
            return cpu_form(first, *args, **kwargs)
        return _wrap(cpu_form(first._array, *_unwrap(args, None), **kwargs))
    return call


def _bincount(x, weights=None, minlength=None):
    """``cupy.bincount``: like NumPy's, but an empty ``x`` is refused (CuPy sizes its output by
    ``int(cupy.max(x))``, which raises on an empty array)."""
    if _unwrap(x, None).size == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity (cupy.bincount)")
    return _checked(np.bincount, "cupy.bincount")(x, weights, minlength=minlength or 0)


def install() -> None:
    """Replace CuPy in this process by the strict stand-in, and the kernels by their CPU forms for it."""
    cupy = types.ModuleType("cupy")
    cupy.__getattr__ = _numpy_attribute
    cupy.ndarray = ndarray
    cupy.asarray = asarray
    cupy.array = asarray
    cupy.ascontiguousarray = ascontiguousarray
    cupy.asnumpy = asnumpy
    cupy.get_array_module = get_array_module
    cupy.bincount = _bincount
    pool, pinned = _MemoryPool(), _MemoryPool()
    cupy.get_default_memory_pool = lambda: pool
    cupy.get_default_pinned_memory_pool = lambda: pinned
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, deviceSynchronize=lambda: None), Device=_Device)
    cupyx = types.ModuleType("cupyx")
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    ndimage = types.ModuleType("cupyx.scipy.ndimage")
    ndimage.__getattr__ = _ndimage_attribute
    cupyx.scipy = cupyx_scipy
    cupyx_scipy.ndimage = ndimage
    sys.modules.update({"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx_scipy, "cupyx.scipy.ndimage": ndimage})
    for name in [n for n in sys.modules if n == "cucim" or n.startswith("cucim.")]:
        del sys.modules[name]
    sys.modules["cucim"] = None  # cuCIM's transforms: the cupyx fallback is taken

    import importlib
    from thagpu.kernels import line_nms, radial_profiles, sphere_voting
    cpu_forms = {"radial_profiles": radial_profiles.radial_profiles_cpu, "line_nms": line_nms.line_nms_cpu,
                 "sphere_votes": sphere_voting.sphere_votes_cpu}
    for module_name, names in _KERNELS.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, _host_kernel(cpu_forms[name]))
