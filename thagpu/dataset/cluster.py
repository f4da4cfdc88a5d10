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

Every process limits its own thread pools (Numba, OpenMP, BLAS) to its share of the CPU cores,
so that the processes of one machine do not oversubscribe it. A remote cluster
(``tcp://``/``tls://``) brings its own workers; the same worker task runs there.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

__all__ = ["worker_specs", "start_local_cluster", "visible_gpu_ids", "DEFAULT_WORKERS_PER_GPU",
           "MAX_LOCAL_WORKERS"]

#: Worker processes per GPU for ``--scheduler cuda``: one in its host stages while the other's kernels run.
DEFAULT_WORKERS_PER_GPU = 2
#: Default number of ``--scheduler local`` workers: the CPU cores, at most this.
MAX_LOCAL_WORKERS = 4
#: Thread-pool variables set in every worker process to its share of the cores.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def visible_gpu_ids(count: int) -> list:
    """The CUDA device ids this process may hand to workers: the first ``count`` of
    ``CUDA_VISIBLE_DEVICES`` where it is set (ids or UUIDs), else ``0 .. count - 1``."""
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if listed:
        return listed[:count]
    return [str(i) for i in range(count)]


def worker_specs(n_workers: int, *, gpu_ids: Optional[list] = None, workers_per_gpu: int = 1,
                 cpu_count: Optional[int] = None) -> dict:
    """Worker specifications of a local cluster (for :class:`~distributed.deploy.spec.SpecCluster`).

    Parameters
    ----------
    n_workers : int
        Worker processes of a CPU cluster; ignored when ``gpu_ids`` is given.
    gpu_ids : list of str, optional
        The GPUs to use: ``workers_per_gpu`` processes each, each seeing only its GPU.
    workers_per_gpu : int
        Processes per GPU.
    cpu_count : int, optional
        CPU cores to share among the processes (default: this machine's).

    Returns
    -------
    dict
        Worker name -> ``{"cls": Nanny, "options": {...}}``: one thread, its environment.
    """
    from distributed import Nanny

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
    threads = str(max(1, (cpu_count or os.cpu_count() or 1) // len(pinned)))
    specs = {}
    for name, env in pinned:
        env = {**env, **{variable: threads for variable in THREAD_VARIABLES}}
        specs[name] = {"cls": Nanny, "options": {"nthreads": 1, "env": env, "silence_logs": logging.ERROR}}
    return specs


def start_local_cluster(*, n_workers: int = 0, gpu_ids: Optional[list] = None,
                        workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU):
    """Start a local cluster of :func:`worker_specs` and its scheduler (dashboard on a free port).

    Returns
    -------
    distributed.deploy.spec.SpecCluster
        Close it when done (``with`` or ``.close()``).
    """
    from distributed import Scheduler
    from distributed.deploy.spec import SpecCluster

    specs = worker_specs(n_workers, gpu_ids=gpu_ids, workers_per_gpu=workers_per_gpu)
    # ":0": the scheduler's HTTP server on a free port. The default 8787 made a second build (or
    # any Dask cluster) on the machine fail with "Port 8787 is already in use".
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR,
                       name="thagpu-cuda" if gpu_ids is not None else "thagpu-local")
