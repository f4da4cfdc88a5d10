"""The clusters a build makes on its own machine: process workers, on CPU cores or pinned to GPUs.

``--scheduler local`` and ``--scheduler cuda`` start the same kind of cluster, a Dask
:class:`~distributed.deploy.spec.SpecCluster` of nanny-managed worker *processes* with one thread
each, and differ only in each worker's environment:

* ``local``: ``--workers`` processes (default: the CPU cores, at most 4);
* ``cuda``: ``--workers-per-gpu`` processes (default 2) for each GPU used (``--workers``
  of them, default every visible one), each process seeing only its GPU
  (``CUDA_VISIBLE_DEVICES``).

Why processes, and several per GPU: a case is about one second of GPU kernels between host
stages of similar length (reading and decoding the CT, the sphere fits and the watershed of
AFS, the QC picture, writing), and the compiled fits and matplotlib hold the GIL, so two threads
of one process mostly take turns. Two processes on one GPU interleave instead: while one runs
its host stages, or reads its next case, the other's kernels run. Each process costs its own
CUDA context (a few hundred MB of GPU memory) and its own CuPy memory pool, which the worker
releases after every case (:func:`thagpu.device.release_gpu_memory`).

Every process limits its own thread pools (Numba, OpenMP, BLAS, the distance transform's) to its
share of the CPUs, so that the processes of one machine do not oversubscribe it, and gets its share
of the host's memory (Dask's limit, past which a worker is paused and then restarted). The
cluster listens on the loopback interface only. A remote cluster
(``tcp://``/``tls://``) brings its own workers; the same worker task runs there.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from typing import Optional

__all__ = ["cpu_share", "worker_specs", "start_local_cluster", "visible_gpu_ids", "DEFAULT_WORKERS_PER_GPU",
           "MAX_LOCAL_WORKERS", "THREAD_VARIABLES", "SPAWN_THREAD_VARIABLES",
           "WORKER_THREAD_VARIABLES"]

#: Worker processes per GPU for ``--scheduler cuda``: one in its host stages while the other's kernels run.
DEFAULT_WORKERS_PER_GPU = 2
#: Default number of ``--scheduler local`` workers: the CPU cores, at most this.
MAX_LOCAL_WORKERS = 4
#: Thread-pool variables of every worker process, set to its share of the CPUs. OpenMP and BLAS read
#: theirs when NumPy loads, which the worker process does before it runs anything: they are set before
#: it is spawned (Dask's ``pre-spawn-environ``, which Dask also writes into this process's environment,
#: with 1 by default).
SPAWN_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: thagpu's own thread count (the exact distance transform; Numba's parallel kernels through
#: ``numba.set_num_threads`` at the start of each case, :func:`thagpu.dataset.worker.use_thread_share`):
#: set in the worker alone once it starts. Never ``NUMBA_NUM_THREADS``: a worker process imports Numba
#: before its Nanny's environment is applied, Numba reads the variable again at each compilation, and
#: it refuses a value other than the one its threads were launched with (every case of the dataset
#: build inside ``refine simulate`` failed so: "Cannot set NUMBA_NUM_THREADS to a different value once
#: the threads have been launched").
WORKER_THREAD_VARIABLES = ("THAGPU_THREADS",)
THREAD_VARIABLES = SPAWN_THREAD_VARIABLES + WORKER_THREAD_VARIABLES
#: Where the local clusters listen.
LOOPBACK = "127.0.0.1"


def visible_gpu_ids(count: int) -> list:
    """The CUDA device ids this process may hand to workers: the first ``count`` of
    ``CUDA_VISIBLE_DEVICES`` where it is set (ids or UUIDs), else ``0 .. count - 1``."""
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if listed:
        return listed[:count]
    return [str(i) for i in range(count)]


def cpu_share(n_processes: int, cpu_count: Optional[int] = None) -> int:
    """Threads each of ``n_processes`` may use: this process's CPUs (its affinity) divided among them."""
    from ..device import available_cpus
    return max(1, (cpu_count or available_cpus()) // max(1, n_processes))


def worker_specs(n_workers: int, *, gpu_ids: Optional[list] = None,
                 workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU, memory_bytes: Optional[int] = None) -> dict:
    """Worker specifications of a local cluster (for :class:`~distributed.deploy.spec.SpecCluster`).

    Parameters
    ----------
    n_workers : int
        Worker processes of a CPU cluster; ignored when ``gpu_ids`` is given.
    gpu_ids : list of str, optional
        The GPUs to use: ``workers_per_gpu`` processes each, each seeing only its GPU.
    workers_per_gpu : int
        Processes per GPU.
    memory_bytes : int, optional
        Host memory to share among the processes (default: this machine's, as Dask reads it).

    Returns
    -------
    dict
        Worker name -> ``{"cls": Nanny, "options": {...}}``: one thread, its share of the host's
        memory (as :class:`distributed.LocalCluster` gives it; a Nanny on its own would take the
        memory of one CPU core), listening on the loopback interface only, and for a GPU worker
        its ``CUDA_VISIBLE_DEVICES``.
    """
    from distributed import Nanny
    from distributed.system import MEMORY_LIMIT

    if gpu_ids is not None:
        if workers_per_gpu < 1:
            raise ValueError(f"workers_per_gpu must be at least 1, not {workers_per_gpu}")
        if not gpu_ids:
            raise ValueError("gpu_ids is empty: no GPU to run on")
        pinned = [(f"gpu{gpu}-{k}", {"CUDA_VISIBLE_DEVICES": str(gpu)})
                  for gpu in gpu_ids for k in range(workers_per_gpu)]
    else:
        if n_workers < 1:
            raise ValueError(f"n_workers must be at least 1, not {n_workers}")
        pinned = [(f"cpu-{k}", {}) for k in range(n_workers)]
    memory = int((memory_bytes or MEMORY_LIMIT) // len(pinned))
    threads = {variable: str(cpu_share(len(pinned))) for variable in WORKER_THREAD_VARIABLES}
    return {name: {"cls": Nanny, "options": {"nthreads": 1, "env": {**env, **threads}, "memory_limit": memory,
                                             "host": LOOPBACK, "silence_logs": logging.ERROR}}
            for name, env in pinned}


def start_local_cluster(*, n_workers: int = 0, gpu_ids: Optional[list] = None,
                        workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU):
    """Start a local cluster of :func:`worker_specs` and its scheduler, on the loopback interface.

    Each worker process gets its share of the CPUs in :data:`THREAD_VARIABLES`
    (:data:`SPAWN_THREAD_VARIABLES` before it is spawned, as those pools read them when NumPy loads).

    The workers' and the scheduler's scratch folders go into a temporary folder of this cluster's
    own, removed when the cluster closes (Dask's default, ``dask-scratch-space`` in the temporary
    folder, stayed behind after every build). A process killed before it closes its cluster
    leaves the folder (``thagpu-dask-*``).

    Returns
    -------
    distributed.deploy.spec.SpecCluster
        Close it when done (``with`` or ``.close()``).
    """
    import dask
    from distributed import Scheduler

    specs = worker_specs(n_workers, gpu_ids=gpu_ids, workers_per_gpu=workers_per_gpu)  # checks the arguments
    # In Dask's own temporary folder (``temporary-directory``: where a user sends the spill), else the system's.
    scratch = tempfile.mkdtemp(prefix="thagpu-dask-", dir=dask.config.get("temporary-directory", None))
    for spec in specs.values():
        spec["options"]["local_directory"] = scratch
    threads = next(iter(specs.values()))["options"]["env"]["THAGPU_THREADS"]  # every worker's share
    # ":0": the scheduler's HTTP server on a free port. The default 8787 made a second build (or
    # any Dask cluster) on the machine fail with "Port 8787 is already in use". Loopback only, as
    # LocalCluster: a worker runs the functions it is sent, and must not be reachable from the network.
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0", "host": LOOPBACK}}
    # The nannies read this when they are made (here) and set it before spawning their process.
    # MALLOC_ARENA_MAX=1: Dask runs each case on a thread of its pool, and glibc gives such a thread an
    # arena of its own that maps every large block afresh, whatever thagpu.memory.keep_freed_memory
    # asks; with one arena the case's temporaries are reused (0 page faults against 2,840 for ten
    # 200 MB arrays on a thread, tests/test_memory.py).
    environ = {**{v: threads for v in SPAWN_THREAD_VARIABLES}, "MALLOC_ARENA_MAX": "1"}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, "temporary-directory": scratch}):
            return _cluster_class()(scratch, workers=specs, scheduler=scheduler, silence_logs=logging.ERROR,
                                    name="thagpu-cuda" if gpu_ids is not None else "thagpu-local")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


@functools.cache
def _cluster_class():
    """The SpecCluster subclass of :func:`start_local_cluster` (made on first use: Dask is imported late)."""
    from distributed.deploy.spec import SpecCluster

    class ClusterWithScratch(SpecCluster):
        """A SpecCluster that removes its scratch folder once it has closed (its workers gone)."""

        def __init__(self, scratch: str, **kwargs):
            self.scratch = scratch
            super().__init__(**kwargs)

        async def _close(self):
            try:
                await super()._close()
            finally:
                shutil.rmtree(self.scratch, ignore_errors=True)

    return ClusterWithScratch

