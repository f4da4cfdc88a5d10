"""Building a dataset: inputs -> Dask tasks (one per case) -> ledger and outputs.

The client process plans the work from the ledger, submits one task per case
to a Dask cluster, keeps a bounded number of cases in flight, and records
every result in the ledger as it arrives. Workers only read inputs and write
their own case folders (see :mod:`thagpu.dataset.worker`).

Schedulers (the two local ones are one kind of cluster, :mod:`thagpu.dataset.cluster`):

* ``local``: worker processes on the CPU cores, one thread each, their kernels
  thread pools sharing the cores.
* ``cuda``: worker processes pinned to the GPUs, ``workers_per_gpu`` (2) on
  each, so that one case's host stages (decoding, fits, watershed, QC picture,
  writing) run while another's kernels keep the GPU busy.
* an address (``tcp://host:port`` or ``tls://...``): an existing scheduler,
  with TLS files through :class:`distributed.security.Security`.

A worker that dies takes its case with it; the scheduler hands the case to
another worker, up to ``distributed.scheduler.allowed-failures`` times (Dask's
setting, 3 by default; :data:`LOCAL_ALLOWED_FAILURES` for the clusters made
here), after which the case is recorded ``failed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .._version import __version__
from ..config import Config, config_hash
from ..device import available_cpus
from ..errors import DeviceError, InputError, ThagpuError, describe
from .cluster import DEFAULT_WORKERS_PER_GPU, MAX_LOCAL_WORKERS, start_local_cluster, visible_gpu_ids
from .generations import GENERATIONS, GenerationLedger, generation_summary
from .inputs import content_hash, discover_inputs, unique_case_ids
from .ledger import Ledger, lock_dataset
from .report import write_report
from .worker import CASES, STAGING, process_case, worker_device

__all__ = ["BuildSummary", "TLSFiles", "build_dataset", "LEDGER_NAME", "LOCAL_ALLOWED_FAILURES"]

log = logging.getLogger("thagpu.dataset")

LEDGER_NAME = "ledger.sqlite"
#: Retries of a case whose worker died, on the clusters this module starts.
LOCAL_ALLOWED_FAILURES = 2
#: Cases queued per worker thread beyond the one it runs (keeps workers busy, memory bounded).
PREFETCH_PER_THREAD = 1


@dataclass(frozen=True)
class TLSFiles:
    """Certificates for a ``tls://`` scheduler (PEM files)."""

    ca_file: Optional[Path] = None
    cert: Optional[Path] = None
    key: Optional[Path] = None

    def security(self):
        from distributed.security import Security
        for name, path in (("--tls-ca-file", self.ca_file), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if path is None:
                raise InputError(name, "is needed for a tls:// scheduler")
            if not Path(path).is_file():
                raise InputError(path, f"({name}) is not a readable file")
        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


@dataclass
class BuildSummary:
    """What one ``dataset build`` did."""

    inputs: int
    processed: int
    counts: dict  # status -> cases in the whole ledger after the build
    finished_now: dict = field(default_factory=dict)  # status -> cases finished by this build
    elapsed_s: float = 0.0
    report: Optional[Path] = None
    #: ``cluster_start_s`` (starting or reaching the cluster) and ``processing_s`` (first submit to last result).
    timings: dict = field(default_factory=dict)

    @property
    def cases_per_min(self) -> float:
        return 60.0 * self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _plan(ledger: Ledger, inputs, resume: bool) -> list:
    """Add new inputs to the ledger and return the case ids to process now."""
    known = ledger.by_input()
    if known and not resume:
        raise InputError(ledger.path.parent, f"already holds a dataset ({len(known)} cases); "
                                             "add --resume to continue it, or choose an empty --out")
    todo, new = [], []
    for item in inputs:
        row = known.get(str(item.path))
        if row is None:
            new.append(item)
        elif row["status"] in ("done", "skipped"):
            if row["input_signature"] == item.signature:
                continue
            if item.signature == "missing":
                # An unmounted share must not turn finished cases into failures: keep them.
                log.warning("%s: input missing; its finished case %s is kept", item.path, row["case_id"])
                continue
            # Touched or rewritten: only a different content counts as a change.
            try:
                current = content_hash(item.path)
            except OSError as error:
                raise InputError(item.path, f"cannot be read ({error.strerror or error})") from None
            ledger.set_input(row["case_id"], item.signature, current if current == row["input_hash"] else None)
            if current == row["input_hash"]:
                continue
            ledger.mark_pending([row["case_id"]], "input changed since it was processed")
            todo.append(row["case_id"])
        else:  # pending, failed, or running when an earlier build stopped
            if row["status"] == "running":
                ledger.mark_pending([row["case_id"]], "an earlier build stopped before this case finished")
            todo.append(row["case_id"])
    ids = unique_case_ids([item.path for item in new], taken={row["case_id"] for row in known.values()})
    for case_id, item in zip(ids, new):
        ledger.add(case_id, str(item.path), item.signature)
        todo.append(case_id)
    return todo


def scheduler_device(scheduler: str, device: str) -> str:
    """The device a build or regeneration asks its workers for: ``--scheduler cuda`` implies ``gpu``
    and refuses ``--device cpu`` (one-line :class:`InputError`); otherwise ``device`` as given."""
    if scheduler != "cuda":
        return device
    if device == "cpu":
        raise InputError("--scheduler cuda", "runs its workers on GPUs; it cannot build with --device cpu "
                                             "(use --scheduler local)")
    return "gpu"


def _start_client(scheduler: str, workers: Optional[int], tls: Optional[TLSFiles],
                  workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU):
    """A connected ``distributed.Client`` and the cluster it owns (None for an address)."""
    import dask
    from distributed import Client

    if not logging.getLogger().isEnabledFor(logging.INFO):
        # distributed logs every connection at INFO in this process; show only its warnings.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler != "cuda" and workers_per_gpu != DEFAULT_WORKERS_PER_GPU:
        log.warning("--workers-per-gpu is ignored without --scheduler cuda")
    if scheduler in ("local", "cuda"):
        if scheduler == "cuda":
            from ..device import gpu_count
            visible = gpu_count()
            if workers and workers > visible:
                raise DeviceError(f"--workers {workers} with --scheduler cuda, but {visible} GPU(s) are visible: "
                                  "--workers counts the GPUs to use (--workers-per-gpu the processes on each)")
            options = {"gpu_ids": visible_gpu_ids(workers or visible), "workers_per_gpu": workers_per_gpu}
        else:
            options = {"n_workers": workers or max(1, min(available_cpus(), MAX_LOCAL_WORKERS))}
        with dask.config.set({"distributed.scheduler.allowed-failures": LOCAL_ALLOWED_FAILURES}):
            cluster = start_local_cluster(**options)
        try:
            return Client(cluster), cluster
        except BaseException:
            cluster.close()  # no client: nobody else would stop its processes
            raise
    if not scheduler.startswith(("tcp://", "tls://")):
        raise InputError(scheduler, "--scheduler must be local, cuda, or a tcp:// or tls:// address")
    if workers:
        log.warning("--workers is ignored with a scheduler address: the cluster has its own workers")
    if scheduler.startswith("tcp://") and tls is not None and any((tls.ca_file, tls.cert, tls.key)):
        raise InputError(scheduler, "--tls-* files were given for a tcp:// address; use tls://")
    security = (tls or TLSFiles()).security() if scheduler.startswith("tls://") else None
    try:
        client = Client(scheduler, security=security, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise InputError(scheduler, f"cannot reach the scheduler ({describe(error)})") from None
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        client.close()
        raise InputError(scheduler, "the scheduler has no worker (waited 60 s)") from None
    return client, None


def build_dataset(source, dataset_dir, *, scheduler: str = "local", workers: Optional[int] = None,
                  device: str = "auto", resume: bool = False, config: Optional[Config] = None,
                  tls: Optional[TLSFiles] = None, workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU,
                  progress: Optional[Callable[[int, int, str, str], None]] = None) -> BuildSummary:
    """Process every input of ``source`` into ``dataset_dir``, recording each case in the ledger.

    Parameters
    ----------
    source : str or Path
        A folder searched recursively, or a CSV/JSON manifest (see
        :func:`thagpu.dataset.inputs.discover_inputs`).
    dataset_dir : str or Path
        Outputs: ``cases/<case_id>/``, ``ledger.sqlite``, ``report.html``.
    scheduler : str
        ``local``, ``cuda`` or a ``tcp://``/``tls://`` scheduler address.
    workers : int, optional
        Worker processes of a ``local`` cluster (default: CPU cores, at most 4), or the GPUs a
        ``cuda`` cluster uses (default: every visible one); ignored for an address.
    device : {"auto", "cpu", "gpu"}
        Where each worker runs the pipeline; ``cuda`` implies ``gpu``.
    resume : bool
        Continue a dataset: process only cases not ``done``/``skipped``, and
        inputs whose content changed. Without it, a folder that already holds
        a dataset is refused.
    config : Config, optional
        Must be the configuration the dataset was started with.
    tls : TLSFiles, optional
        Certificates for a ``tls://`` address.
    workers_per_gpu : int
        Worker processes on each GPU of a ``cuda`` cluster (:mod:`thagpu.dataset.cluster`).
    progress : callable, optional
        Called as ``progress(finished, total, case_id, status)`` after each case
        (and once with ``(0, total, "", "")`` before the first).

    Returns
    -------
    BuildSummary

    Raises
    ------
    InputError
        Unusable source, scheduler address or TLS files; a dataset folder
        that already holds a dataset (without ``resume``), was built with
        another configuration, or is being built by another client.
    DeviceError
        ``device="gpu"`` or ``scheduler="cuda"`` where that is not available.
    """
    from ..device import resolve_device

    config = config or Config()
    dataset_dir = Path(dataset_dir).resolve()
    device = scheduler_device(scheduler, device)
    if scheduler in ("local", "cuda"):
        device = resolve_device(device)  # fail here, not in every worker
    inputs = discover_inputs(source)
    start = time.perf_counter()
    # One client per dataset folder (the lock's file closes with the block): the ledger has one writer.
    with lock_dataset(dataset_dir), GenerationLedger(dataset_dir / LEDGER_NAME) as ledger:
        regenerating = ledger.get_meta("regenerating")
        if regenerating is not None:
            raise InputError(dataset_dir, f"its regeneration (generation {regenerating}) is unfinished: finish it "
                                          "with 'thagpu dataset regenerate', or drop it with --discard")
        wanted = config_hash(config)
        built_with = ledger.get_meta("config_hash")
        if built_with is not None and built_with != wanted and ledger.rows():
            raise InputError(dataset_dir, f"was built with config {built_with}, this config is {wanted}: "
                                          "use the same config, or a new --out")
        todo = _plan(ledger, inputs, resume)
        ledger.set_meta("config_hash", wanted)
        ledger.set_meta("version", __version__)
        shutil.rmtree(dataset_dir / STAGING, ignore_errors=True)  # leftovers of workers that died
        finished_now: dict = {}
        timings: dict = {}
        if progress:
            progress(0, len(todo), "", "")
        try:
            if todo:
                _run(todo, _BuildSink(ledger), dataset_dir, scheduler, workers, device, config, tls, progress,
                     finished_now, timings, workers_per_gpu=workers_per_gpu)
        finally:
            report = write_report(dataset_dir, ledger.rows(), generations=generation_summary(ledger))
            with contextlib.suppress(OSError):
                (dataset_dir / STAGING).rmdir()  # only when empty: a zombie worker may still write
        return BuildSummary(inputs=len(inputs), processed=len(todo), counts=ledger.counts(),
                            finished_now=finished_now, elapsed_s=time.perf_counter() - start, report=report,
                            timings=timings)


def check_worker_devices(devices: dict, recorded: Optional[str], dataset_dir,
                         hint: str = "a new --out") -> str:
    """The one device all workers run on, refused in one line where they differ or differ from ``recorded``.

    Parameters
    ----------
    devices : dict
        Worker address -> :func:`thagpu.dataset.worker.worker_device` (``cpu``, ``gpu`` or ``error: ...``).
    recorded : str or None
        The device the dataset's cases were built on so far.
    dataset_dir : Path
        For the message.
    hint : str
        The way out named in the message when the device differs from ``recorded``.

    Raises
    ------
    DeviceError
        A worker cannot run on the device asked for.
    InputError
        The workers would run on different devices, or on another device than the dataset's.
    """
    if not devices:
        raise InputError(dataset_dir, "the cluster has no worker")
    for address, found in sorted(devices.items()):
        if found.startswith("error:"):
            raise DeviceError(f"worker {address}: {found[len('error:'):].strip()}")
    kinds = sorted(set(devices.values()))
    if len(kinds) > 1:
        counts = ", ".join(f"{sum(v == k for v in devices.values())} on {k}" for k in kinds)
        raise InputError(dataset_dir, f"the workers would run on different devices ({counts}): a dataset is "
                                      "built on one device; pass --device or use one kind of worker")
    if recorded and recorded != kinds[0]:
        raise InputError(dataset_dir, f"was built on {recorded}, these workers run on {kinds[0]}: "
                                      f"use --device {recorded}, or {hint}")
    return kinds[0]


class _BuildSink:
    """Where :func:`_run` records a build's cases: the ledger's ``cases`` rows.

    A regeneration records into its generation instead
    (:class:`thagpu.dataset.generations._GenerationSink`, the same methods).
    """

    resume_hint = "run the build with --resume"
    device_hint = "a new --out"

    def __init__(self, ledger: GenerationLedger):
        self.ledger = ledger
        self.rows = {row["case_id"]: row for row in ledger.rows()}
        # Once a dataset has generations, a build writes into a folder of its own under the current
        # generation: it never replaces files that a restorable generation points at.
        self.cases_dir = (f"{GENERATIONS}/{ledger.current_generation()}/build-{uuid.uuid4().hex[:8]}"
                          if ledger.generations() else CASES)

    def input_path(self, case_id: str) -> str:
        return self.rows[case_id]["input_path"]

    def recorded_device(self) -> Optional[str]:
        return self.ledger.get_meta("device")

    def set_device(self, device: str) -> None:
        self.ledger.set_meta("device", device)

    def task_options(self, case_id: str) -> dict:
        return {"cases_dir": self.cases_dir}

    def mark_running(self, case_id: str) -> None:
        self.ledger.mark_running(case_id)

    def record(self, case_id: str, result: dict) -> None:
        self.ledger.record(case_id, result)

    def reset_running(self, case_ids, reason: str) -> None:
        self.ledger.reset_running(case_ids, reason)


def _run(todo, sink, dataset_dir, scheduler, workers, device, config, tls, progress, finished_now,
         timings, *, workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU) -> None:
    """Submit the cases with a bounded window and record each result in ``sink`` as it arrives."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed

    started = time.perf_counter()
    client, cluster = _start_client(scheduler, workers, tls, workers_per_gpu)
    timings["cluster_start_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    in_flight = {}
    try:
        # Every worker, local or remote, says where it would run; one dataset is built on one device.
        device = check_worker_devices(client.run(worker_device, device), sink.recorded_device(), dataset_dir,
                                      sink.device_hint)
        sink.set_device(device)
        threads = sum(client.nthreads().values()) or 1
        window = threads * (1 + PREFETCH_PER_THREAD)
        queue = list(todo)
        completed = as_completed()

        def submit_next():
            case_id = queue[0]
            future = client.submit(process_case, case_id, sink.input_path(case_id), str(dataset_dir),
                                   config, device, key=f"thagpu-case-{case_id}-{uuid.uuid4().hex[:8]}",
                                   pure=False, retries=0, **sink.task_options(case_id))
            # Tracked before the ledger says "running", so an interrupt in between still resets it.
            in_flight[future] = case_id
            queue.pop(0)
            sink.mark_running(case_id)
            completed.add(future)

        while queue and len(in_flight) < window:
            submit_next()
        finished = 0
        for future in completed:
            case_id = in_flight[future]
            try:
                result = future.result()
            except KilledWorker:
                result = {"status": "failed", "error": "the workers running this case died "
                                                       "(retried the allowed number of times)"}
            except CancelledError:
                raise ThagpuError(f"lost the scheduler while {len(in_flight)} case(s) ran; they are pending "
                                  f"again: {sink.resume_hint}") from None
            except Exception as error:  # e.g. the task could not be unpickled on the worker
                result = {"status": "failed", "error": f"task error: {describe(error)}"}
            sink.record(case_id, result)
            del in_flight[future]  # only once recorded: an interrupt before leaves it to be reset
            finished += 1
            finished_now[result["status"]] = finished_now.get(result["status"], 0) + 1
            if progress:
                progress(finished, len(todo), case_id, result["status"])
            if queue:
                submit_next()
        timings["processing_s"] = round(time.perf_counter() - started, 3)
    except BaseException:
        # Ctrl-C, or the client lost its scheduler: nothing in flight is left "running".
        for future in list(in_flight):
            future.cancel()
        sink.reset_running(list(in_flight.values()), "interrupted before this case finished")
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()

