"""Host memory: keep freed arrays' memory in the process while a case runs, hand it back after.

glibc serves every allocation above 32 MB (its largest ``mmap`` threshold) with a fresh ``mmap`` and
unmaps it on ``free``. A CT stage allocates and frees arrays of the volume's size dozens of times, so
on a 500 x 500 x 300 volume each temporary of 300 MB was new memory that the kernel had to fault in
and zero: on a 91 M-voxel volume BE spent 28-34 s of its 69-75 s in the kernel (``ru_stime``).
:func:`keep_freed_memory` makes glibc serve large blocks from its heap and never trim it, so a freed
temporary is reused by the next one (BE 69 s -> 46 s there, peak memory 5.26 -> 5.74 GB;
docs/architecture.md); :func:`release_freed_memory` hands the free memory back to the operating
system, which ``thagpu run`` and the dataset workers do after each case, so a long-lived worker does
not hold a finished case's peak (Dask's nanny reads that as the worker's memory).

It also stops NumPy from asking for transparent huge pages (``madvise(MADV_HUGEPAGE)`` on every array
of 4 MB or more). On a heap that is kept, the pages are faulted in once, so huge pages save little; but
under the common kernel setting ``/sys/kernel/mm/transparent_hugepage/defrag = madvise`` a fault in a
region so marked waits for the kernel to compact memory into a free 2 MB page, and on a machine whose
memory is fragmented that stall dominates (numpy/numpy#31590). On our 2-core machine ``thagpu run`` of
a 48 M-voxel volume spent 5-12 s in the kernel with the advice and 0.8-0.9 s without it (16.5-25 s ->
13.2-13.8 s of wall time; reading the CT and writing its labels 2.9-5.5 s -> 0.82 s). A user who set
``NUMPY_MADVISE_HUGEPAGE`` keeps their choice.

On systems without glibc (macOS, musl) the heap settings are not made. ``THAGPU_KEEP_FREED_MEMORY=0``
turns :func:`keep_freed_memory` off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

__all__ = ["keep_freed_memory", "no_numpy_huge_pages", "release_freed_memory"]

log = logging.getLogger("thagpu.memory")

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def _glibc():
    """glibc's handle, or None where the C library is another (or has no ``mallopt``)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Serve large allocations from glibc's heap and keep freed memory for reuse (once per process).

    Returns whether the setting is in force. It holds for the main thread's allocations, and for other
    threads' only in a process started with ``MALLOC_ARENA_MAX=1``: glibc gives another thread an arena
    of its own, which maps blocks too large for it (64 MB) afresh whatever this asks. The dataset
    engine's worker processes, whose cases run on a pool thread, are spawned so
    (:func:`thagpu.dataset.cluster.start_local_cluster`).
    """
    if os.environ.get("THAGPU_KEEP_FREED_MEMORY", "1") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    # No mmap'd blocks (each would be faulted in afresh), and no trimming of the heap's top: a
    # threshold of -1 reads as the largest size_t.
    done = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    log.debug("keep freed memory: %s", done)
    if done:
        no_numpy_huge_pages()
    return done


def no_numpy_huge_pages() -> bool:
    """Stop NumPy advising huge pages for its large arrays, unless ``NUMPY_MADVISE_HUGEPAGE`` is set.

    Returns whether NumPy's advice is off now. NumPy reads that variable once, at import; its
    run-time switch is the private ``_set_madvise_hugepage`` of ``numpy._core.multiarray``
    (``numpy.core.multiarray`` before NumPy 2; both >= 1.20), used only where it exists.
    """
    import numpy as np

    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return os.environ["NUMPY_MADVISE_HUGEPAGE"].strip() == "0"
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # NumPy 2 names it _core, 1.x core
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None:
        return False
    setter(False)
    return True


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the operating system (``malloc_trim``); cheap when there is none."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
