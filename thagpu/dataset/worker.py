"""The task a Dask worker runs for one case.

``process_case`` never raises for a bad case: it returns a small result dict
(status, one-line error, timings, outputs, a per-side summary) that the
client records in the ledger. Only the death of the worker process itself
reaches the client as an exception, and Dask then retries the case on
another worker.

Outputs are made in a private staging folder, ``DIR/.staging/<uuid>/``, and
the finished case folder is moved to ``DIR/cases/<case_id>`` with one
rename: a case folder is complete or absent, never half-written, even when a
worker dies mid-case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

from .._version import __version__
from ..config import Config, config_hash
from ..device import release_gpu_memory, resolve_device
from ..errors import ThagpuError, describe
from .inputs import content_hash

__all__ = ["process_case", "worker_device", "side_summary", "STAGING", "CASES", "LABELLED_SIDE_STATUSES"]

#: Sub-folders of a dataset folder.
STAGING = ".staging"
CASES = "cases"

#: Side statuses under which the side got hip labels (1-4).
LABELLED_SIDE_STATUSES = ("ok", "truncated", "low_confidence")


def side_summary(sides: dict) -> dict:
    """The per-side figures the ledger and the QC report show."""
    summary = {}
    for side, found in sides.items():
        joint = found.get("joint_space_mm") or {}
        summary[side] = {
            "status": found.get("status"),
            "confidence": found.get("confidence"),
            "head_radius_mm": found.get("head_radius_mm"),
            "joint_space_min_mm": joint.get("min"),
            "joint_space_mean_mm": joint.get("mean"),
            "message": found.get("message", ""),
        }
    return summary


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _publish(staged: Path, final: Path) -> None:
    """Move a finished case folder into place with renames only."""
    final.parent.mkdir(parents=True, exist_ok=True)
    previous = None
    if final.exists():  # an earlier build of a changed input
        previous = staged.parent / f"{final.name}.previous"
        os.replace(final, previous)
    try:
        os.replace(staged, final)
    except OSError:
        # Another execution of the same case (a retried task whose first worker was only slow)
        # published first; its folder is as complete as ours.
        if not final.is_dir():
            raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def use_thread_share() -> None:
    """Limit Numba's parallel kernels in this thread to the worker's share of the CPUs
    (``THAGPU_THREADS``, set by the cluster; nothing where it is unset).

    ``numba.set_num_threads`` at run time, never ``NUMBA_NUM_THREADS`` (see
    :data:`thagpu.dataset.cluster.WORKER_THREAD_VARIABLES`); the setting is per thread, so each case
    makes it on the thread that runs it.
    """
    import os

    share = os.environ.get("THAGPU_THREADS")
    if not share:
        return
    import numba
    numba.set_num_threads(max(1, min(int(share), numba.config.NUMBA_NUM_THREADS)))


def process_case(case_id: str, input_path: str, dataset_dir: str, config: Config, device: str,
                 cases_dir: str = CASES, previous: Optional[dict] = None) -> dict:
    """Segment one input into ``dataset_dir/<cases_dir>/<case_id>/`` and say how it went.

    Parameters
    ----------
    case_id : str
        The case's folder name under ``cases/``.
    input_path : str
        A CT file or DICOM series folder, as the worker sees it.
    dataset_dir : str
        The dataset folder (shared by the client and the workers).
    config : Config
    device : {"cpu", "gpu", "auto"}
    cases_dir : str
        The folder of case folders, relative to ``dataset_dir``: ``cases`` for a build's first
        generation, ``generations/<g>/cases`` for a regeneration (:mod:`thagpu.dataset.generations`).
    previous : dict, optional
        A regeneration's earlier outputs of the case (paths relative to ``dataset_dir``: ``labels``,
        ``measurements``, ``manual``): the result then carries ``changes``, the case's change record
        (:func:`thagpu.dataset.generations.compare_outputs`), computed here, beside the data.

    Returns
    -------
    dict
        ``status`` (``done``, ``skipped`` when no hip is in view, ``failed``),
        ``error`` (one line or None), ``input_hash``, ``timings_s``,
        ``total_s``, ``outputs`` (paths relative to ``dataset_dir``),
        ``sides`` (see :func:`side_summary`), ``worker``, ``version``,
        ``config_hash``, ``device`` (``cpu`` or ``gpu``: where it ran).
    """
    from ..memory import keep_freed_memory, release_freed_memory
    from ..pipeline import run_case

    keep_freed_memory()  # once per worker process (thagpu/memory.py); run_case hands it back per case
    start = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    result = {"case_id": case_id, "worker": _worker_name(), "version": __version__,
              "config_hash": config_hash(config), "error": None, "outputs": None, "sides": None,
              "timings_s": {}, "input_hash": None, "device": None}
    staging = dataset_dir / STAGING / uuid.uuid4().hex
    try:
        use_thread_share()
        device = result["device"] = resolve_device(device)
        result["input_hash"] = content_hash(input_path)
        case = run_case(input_path, staging, config=config, device=device, case_id=case_id,
                        input_hash=result["input_hash"])
        sides = case.measurements.get("sides", {})
        result["sides"] = side_summary(sides)
        result["timings_s"] = case.measurements["timings_s"]
        if sides and all(found.get("status") == "not_found" for found in sides.values()):
            result["status"] = "skipped"
            result["error"] = "no hip found: " + "; ".join(
                f"{side}: {found.get('message') or 'not found'}" for side, found in sorted(sides.items()))
        else:
            result["status"] = "done"
        _publish(staging / case_id, dataset_dir / cases_dir / case_id)
        result["outputs"] = {name: str(Path(cases_dir) / case_id / path.name) for name, path in case.outputs.items()}
        if previous is not None:
            result["changes"] = _changes(dataset_dir, previous, result["outputs"])
    except ThagpuError as error:
        result.update(status="failed", error=str(error))
    except MemoryError:
        result.update(status="failed", error="out of memory while processing this case")
    except OSError as error:  # unreadable input, full disk, permissions
        where = error.filename or input_path
        result.update(status="failed", error=f"{where}: {error.strerror or type(error).__name__}")
    except Exception as error:  # a bug: record it, the other cases go on
        result.update(status="failed", error=f"internal error: {describe(error)}")
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        release_gpu_memory()
        case = None  # the case's arrays go before the heap is trimmed
        release_freed_memory()  # a worker between cases holds no finished case's peak
    result["total_s"] = round(time.perf_counter() - start, 4)
    return result


def _changes(dataset_dir: Path, previous: dict, outputs: dict) -> dict:
    """The change record of a regenerated case; a comparison that fails does not fail the case."""
    from .generations import compare_outputs
    try:
        return compare_outputs(dataset_dir, previous, outputs)
    except Exception as error:  # an unreadable old label: the new one is still good
        return {"dice": {}, "min_dice": None, "sides": {}, "note": f"not compared: {describe(error)}"}


def worker_device(device: str) -> str:
    """The device this worker would run cases on for ``device`` (``cpu``/``gpu``), or ``error: ...``.

    Run on every worker by the client before a build (``Client.run``), so that a cluster whose
    workers would mix devices is refused before any case runs.
    """
    try:
        return resolve_device(device)
    except ThagpuError as error:
        return f"error: {error}"
