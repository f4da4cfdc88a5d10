"""The local clusters of a build: process workers on CPU cores, or pinned to GPUs, by one code path."""

import os

import pytest

from thagpu.dataset.cluster import (DEFAULT_WORKERS_PER_GPU, LOOPBACK, THREAD_VARIABLES, WORKER_THREAD_VARIABLES,
                                    cpu_share, visible_gpu_ids, worker_specs)


def _options(spec):
    return spec["options"]


def test_cpu_workers_are_single_threaded_loopback_processes_sharing_memory():
    specs = worker_specs(2, memory_bytes=8 * 2**30)
    assert sorted(specs) == ["cpu-0", "cpu-1"]
    for spec in specs.values():
        assert spec["cls"].__name__ == "Nanny"  # a process per worker, restarted when it dies
        assert _options(spec)["nthreads"] == 1
        assert _options(spec)["host"] == LOOPBACK  # never reachable from the network
        # The host's memory divided among the workers, as LocalCluster does (a bare Nanny takes
        # the memory of one CPU core: 8 GiB of 128 on a 16-core machine).
        assert _options(spec)["memory_limit"] == 4 * 2**30
        assert "CUDA_VISIBLE_DEVICES" not in _options(spec)["env"]
        assert _options(spec)["env"]["THAGPU_THREADS"] == str(cpu_share(2))
        assert "NUMBA_NUM_THREADS" not in _options(spec)["env"]  # see the test below
    assert cpu_share(2, 8) == 4 and cpu_share(3, 2) == 1 and cpu_share(1, 2) == 2


def test_gpu_workers_see_only_their_gpu_several_per_gpu():
    specs = worker_specs(0, gpu_ids=["0", "3"], workers_per_gpu=2, memory_bytes=16 * 2**30)
    assert len(specs) == 4
    assert sorted(_options(s)["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()) == ["0", "0", "3", "3"]
    assert {_options(s)["memory_limit"] for s in specs.values()} == {4 * 2**30}
    with pytest.raises(ValueError, match="workers_per_gpu must be at least 1"):
        worker_specs(0, gpu_ids=["0"], workers_per_gpu=0)
    with pytest.raises(ValueError, match="no GPU"):
        worker_specs(0, gpu_ids=[])
    with pytest.raises(ValueError, match="n_workers must be at least 1"):
        worker_specs(0)


def test_gpus_handed_out_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu_ids(2) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,GPU-8a1b")
    assert visible_gpu_ids(3) == ["2", "5", "GPU-8a1b"]


def test_the_cli_default_of_processes_per_gpu_is_the_library_s():
    from thagpu import cli
    assert cli._WORKERS_PER_GPU.default == DEFAULT_WORKERS_PER_GPU


def _worker_facts(variables, dask_worker=None):
    """Run in a worker (``client.run`` passes it as ``dask_worker``): what its process sees."""
    import os as os_
    from thagpu.morphology import _threads
    worker = dask_worker
    return {"gpu": os_.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os_.getpid(), "edt_threads": _threads(),
            **{v: os_.environ.get(v) for v in variables},
            "memory_limit": worker.memory_manager.memory_limit, "address": worker.address}


def test_a_cuda_cluster_starts_pinned_processes(monkeypatch):
    """``--scheduler cuda`` on a machine with one GPU (its count faked here: the workers only start,
    no kernel runs), through the engine's client path, the same as ``local``'s: two single-threaded
    processes, each seeing GPU 0 only, each with its share of the CPUs in its thread pools from the
    start and half of the host's memory, on the loopback interface."""
    import thagpu.device
    from distributed.system import MEMORY_LIMIT
    from thagpu.dataset.engine import _start_client
    monkeypatch.setattr(thagpu.device, "gpu_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for variable in THREAD_VARIABLES:  # the parent's own settings would win over the share
        monkeypatch.delenv(variable, raising=False)
    client, cluster = _start_client("cuda", None, None, 2)
    try:
        # Numba's and thagpu's thread counts are the workers' alone: Numba in this process refuses a
        # NUMBA_NUM_THREADS that changes after its threads were launched (kernels then fail to compile).
        assert all(v not in os.environ for v in WORKER_THREAD_VARIABLES)
        client.wait_for_workers(2, timeout=60)
        assert sorted(client.nthreads().values()) == [1, 1]
        assert client.scheduler.address.startswith(f"tcp://{LOOPBACK}:")
        facts = list(client.run(_worker_facts, list(THREAD_VARIABLES)).values())
        share = str(cpu_share(2))
        assert [f["gpu"] for f in facts] == ["0", "0"]
        assert len({f["pid"] for f in facts}) == 2  # two processes, not two threads of one
        assert all(f[v] == share for f in facts for v in THREAD_VARIABLES)
        assert all(f["edt_threads"] == int(share) for f in facts)
        assert all(f["memory_limit"] == MEMORY_LIMIT // 2 for f in facts)
        assert all(f["address"].startswith(f"tcp://{LOOPBACK}:") for f in facts)
    finally:
        client.close()
        cluster.close()


def _compile_after_a_parallel_kernel_ran():
    """In a worker: run a parallel kernel with the worker's share, then compile anew (Numba reads its
    environment again then); the threads each used."""
    import numba
    import numpy as np_

    from thagpu.kernels.line_nms import line_nms
    from thagpu.dataset.worker import use_thread_share
    use_thread_share()
    line_nms(np_.random.default_rng(0).normal(size=(8, 16)).astype(np_.float32))
    numba.core.config.reload_config()  # what every compilation does
    return numba.get_num_threads()


def test_worker_processes_limit_numba_by_its_api_not_its_environment():
    """A worker process imports Numba before its Nanny's environment is applied; with
    NUMBA_NUM_THREADS in that environment, the next compilation after a parallel kernel ran raised
    "Cannot set NUMBA_NUM_THREADS to a different value once the threads have been launched", and
    every case of the dataset build inside ``refine simulate`` failed so."""
    from distributed import Client

    from thagpu.dataset.cluster import start_local_cluster
    with start_local_cluster(n_workers=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        threads = list(client.run(_compile_after_a_parallel_kernel_ran).values())
    assert threads == [cpu_share(2)] * 2


def _faults_of_large_temporaries_on_a_task_thread():
    """Minor page faults of ten 200 MB temporaries made on a task's thread, after keep_freed_memory."""
    import resource
    import threading

    import numpy as np

    from thagpu.memory import keep_freed_memory
    keep_freed_memory()
    out = {}

    def work():
        np.ones(50_000_000, np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            np.ones(50_000_000, np.float32)
        out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return out["faults"]


def test_worker_processes_reuse_freed_memory_on_their_task_threads():
    """Dask runs cases on pool threads, and glibc gave each its own arena that maps every large block
    afresh whatever keep_freed_memory asked (2,840 faults for ten 200 MB arrays); the workers are
    spawned with one arena, so the blocks are reused."""
    from distributed import Client

    from thagpu.dataset.cluster import start_local_cluster
    from thagpu.memory import _glibc
    with start_local_cluster(n_workers=1) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        environment = list(client.run(lambda: __import__("os").environ.get("MALLOC_ARENA_MAX")).values())
        faults = list(client.run(_faults_of_large_temporaries_on_a_task_thread).values())
    assert environment == ["1"]
    if _glibc() is not None:
        assert faults[0] < 500, faults


def test_workers_keep_their_scratch_in_a_folder_removed_with_the_cluster(tmp_path, monkeypatch):
    """Dask's default scratch folder (dask-scratch-space in the system's temporary folder) stayed
    behind after every build; the cluster now makes its own, and it goes with the cluster."""
    import tempfile

    from distributed import Client

    from thagpu.dataset.cluster import start_local_cluster
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what mkdtemp and Dask's default use
    with start_local_cluster(n_workers=1) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        folders = list(client.run(lambda dask_worker: dask_worker.local_directory).values())
        scratch = [p for p in tmp_path.iterdir() if p.name.startswith("thagpu-dask-")]
    assert len(scratch) == 1 and folders[0].startswith(str(scratch[0]))
    assert list(tmp_path.iterdir()) == []  # removed on closing
    # Arguments refused before any folder is made.
    for bad in ({"n_workers": 0}, {"gpu_ids": []}, {"gpu_ids": ["0"], "workers_per_gpu": 0}):
        with pytest.raises(ValueError):
            start_local_cluster(**bad)
    assert list(tmp_path.iterdir()) == []
