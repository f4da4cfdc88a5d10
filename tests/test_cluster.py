"""The local clusters of a build: process workers on CPU cores, or pinned to GPUs, by one code path."""

import os

import pytest

from thagpu.dataset.cluster import THREAD_VARIABLES, visible_gpu_ids, worker_specs


def _env(spec):
    return spec["options"]["env"]


def test_cpu_workers_are_single_threaded_processes_sharing_the_cores():
    specs = worker_specs(2, cpu_count=8)
    assert sorted(specs) == ["cpu-0", "cpu-1"]
    for spec in specs.values():
        assert spec["cls"].__name__ == "Nanny"  # a process per worker, restarted when it dies
        assert spec["options"]["nthreads"] == 1
        assert "CUDA_VISIBLE_DEVICES" not in _env(spec)
        assert all(_env(spec)[v] == "4" for v in THREAD_VARIABLES)
    assert all(_env(s)["NUMBA_NUM_THREADS"] == "1" for s in worker_specs(3, cpu_count=2).values())


def test_gpu_workers_see_only_their_gpu_several_per_gpu():
    specs = worker_specs(0, gpu_ids=["0", "3"], workers_per_gpu=2, cpu_count=16)
    assert len(specs) == 4
    seen = sorted(_env(s)["CUDA_VISIBLE_DEVICES"] for s in specs.values())
    assert seen == ["0", "0", "3", "3"]
    assert all(_env(s)["NUMBA_NUM_THREADS"] == "4" for s in specs.values())
    with pytest.raises(ValueError, match="workers_per_gpu must be at least 1"):
        worker_specs(0, gpu_ids=["0"], workers_per_gpu=0)
    with pytest.raises(ValueError, match="no GPU"):
        worker_specs(0, gpu_ids=[])
    with pytest.raises(ValueError, match="n_workers must be at least 1"):
        worker_specs(0)


def test_gpus_handed_out_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu_ids(2) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,7")
    assert visible_gpu_ids(2) == ["2", "5"]


def test_a_cuda_cluster_starts_pinned_processes(monkeypatch):
    """``--scheduler cuda`` on a machine with one GPU (its count faked here: the workers only start,
    no kernel runs): two single-threaded processes, each seeing GPU 0 only, each with its share of
    the cores; the engine's client path, the same as ``local``'s."""
    import thagpu.device
    from thagpu.dataset.engine import _start_client
    monkeypatch.setattr(thagpu.device, "gpu_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    client, cluster = _start_client("cuda", None, None, 2)
    try:
        client.wait_for_workers(2, timeout=60)
        assert sorted(client.nthreads().values()) == [1, 1]
        env = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("NUMBA_NUM_THREADS"),
                                  os.getpid()))
        assert sorted(e[0] for e in env.values()) == ["0", "0"]
        assert {e[1] for e in env.values()} == {str(max(1, (os.cpu_count() or 1) // 2))}
        assert len({e[2] for e in env.values()}) == 2  # two processes, not two threads of one
    finally:
        client.close()
        cluster.close()
