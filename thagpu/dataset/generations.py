"""Generations of a dataset's pseudo labels: regenerate, compare, restore, prune.

The method improves, or a user tunes the configuration, and hundreds of cases must be relabelled
without losing what people corrected. ``thagpu dataset regenerate DIR`` runs BE and AFS again for the
cases whose input, thagpu version or configuration differ from what made their current pseudo label
(``--only failed`` or ``all`` chooses otherwise), through the build's Dask engine, and records the run
as a numbered *generation* of the ledger:

* Generation 1 is what ``dataset build`` made (``DIR/cases/``); generation ``g`` writes its case
  folders to ``DIR/generations/<g>/cases/`` beside the old ones, and records each finished case in
  table ``generation_cases``, not in ``cases``. Only when every case of the generation has finished
  does one transaction make it current (the ``cases`` rows take the new outputs, statuses and
  measurements; the ``meta`` configuration, version and device follow). An interrupted regeneration
  leaves the dataset as it was, and running the command again resumes it.
* Every generation keeps a snapshot of every case's row, so ``thagpu dataset restore DIR N`` gives
  back generation ``N``'s labels byte for byte (its files are never touched) until
  ``thagpu dataset prune DIR`` deletes the files no current row points at.
* Human work is kept: manual and model-refined labels (table ``refine_labels``, :mod:`thagpu.aar.store`)
  stay the cases' current labels, and the AAR rounds, scores and queue are not touched. A case with a
  manual label whose new pseudo label agrees with it much less than the old one did
  (:data:`REVIEW_DICE_DROP`) is listed for review.
* Each regenerated case gets a change record, computed by the worker beside its case: old vs new
  pseudo label Dice per class, per-side status changes and measurement shifts (head centre and
  radius, inclination, anteversion, centre-edge angle). ``dataset status`` and ``report.html`` show
  the totals and the worst changes first.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import labels as schema
from .._version import __version__
from ..config import Config, config_hash
from ..errors import InputError
from .cluster import DEFAULT_WORKERS_PER_GPU
from .inputs import content_hash, input_signature
from .ledger import Ledger, lock_dataset

__all__ = ["GENERATIONS", "ONLY", "REVIEW_DICE_DROP", "GenerationLedger", "RegenerateSummary", "generation_cases_dir",
           "regenerate_dataset", "restore_generation", "prune_generations", "compare_outputs",
           "change_rank", "largest_changes", "describe_change"]

log = logging.getLogger("thagpu.dataset")

#: Sub-folder of a dataset folder holding the case folders of generations 2, 3, ...
GENERATIONS = "generations"
#: What ``--only`` selects: cases whose input, version or configuration changed; failed cases; all.
ONLY = ("changed", "failed", "all")
#: A case with a manual label is listed for review when the mean hip-label Dice between its new
#: pseudo label and the manual label is this much below the old pseudo label's.
REVIEW_DICE_DROP = 0.05
#: Measurement shifts of a side in the change record: (key in measurements.json, name, kind).
_SHIFTS = (("head_radius_mm", "head_radius_change_mm"), ("inclination_deg", "inclination_change_deg"),
           ("anteversion_deg", "anteversion_change_deg"), ("center_edge_angle_deg", "center_edge_change_deg"))
#: Columns of ``cases`` a generation snapshot keeps (and a restore or switch writes back).
_ROW_COLUMNS = ("status", "error", "worker", "input_signature", "input_hash", "t_load", "t_bone", "t_afs",
                "t_write", "t_total", "outputs", "sides", "version", "config_hash", "device", "started_at",
                "finished_at")
_HIP_CLASSES = (schema.FEMORAL_HEAD_LEFT, schema.ACETABULUM_LEFT, schema.FEMORAL_HEAD_RIGHT,
                schema.ACETABULUM_RIGHT)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    generation  INTEGER PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('running', 'current', 'previous', 'pruned')),
    version     TEXT,
    config_hash TEXT,
    device      TEXT,
    only        TEXT,
    started_at  REAL,
    finished_at REAL,
    counts      TEXT
);
CREATE TABLE IF NOT EXISTS generation_cases (
    generation INTEGER NOT NULL,
    case_id    TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'running', 'finished', 'kept')),
    row        TEXT,
    changes    TEXT,
    PRIMARY KEY (generation, case_id)
);
"""


def generation_cases_dir(generation: int) -> str:
    """The folder (relative to the dataset folder) holding ``generation``'s case folders."""
    from .worker import CASES
    return CASES if generation == 1 else f"{GENERATIONS}/{generation}/{CASES}"


class GenerationLedger(Ledger):
    """A dataset's ledger with its generation tables (created when missing).

    Generation 1 is recorded lazily, from the ``cases`` rows, the first time a regeneration starts;
    a dataset that was never regenerated has no rows in these tables and is generation 1.
    """

    def __init__(self, path):
        super().__init__(path)
        self._db.executescript(_SCHEMA)

    # -- reading ---------------------------------------------------------------------------
    def generations(self) -> list:
        """Every generation as a dict (``counts`` decoded), oldest first."""
        out = []
        for row in self._db.execute("SELECT * FROM generations ORDER BY generation"):
            item = dict(row)
            item["counts"] = json.loads(item["counts"]) if item["counts"] else {}
            out.append(item)
        return out

    def current_generation(self) -> int:
        """The number of the generation the ``cases`` rows show (1 for a dataset never regenerated)."""
        value = self.get_meta("generation")
        return int(value) if value is not None else 1

    def unfinished(self) -> dict | None:
        """The generation a stopped regeneration left running, or None."""
        row = self._db.execute("SELECT * FROM generations WHERE state = 'running'").fetchone()
        return dict(row) if row is not None else None

    def case_states(self, generation: int) -> dict:
        """case_id -> state of the cases recorded for ``generation``."""
        return {row["case_id"]: row["state"] for row in self._db.execute(
            "SELECT case_id, state FROM generation_cases WHERE generation = ?", (generation,))}

    def snapshot_rows(self, generation: int) -> dict:
        """case_id -> the ``cases`` row (decoded) that ``generation`` holds for it."""
        out = {}
        for row in self._db.execute("SELECT case_id, row FROM generation_cases WHERE generation = ? AND row IS NOT NULL",
                                    (generation,)):
            out[row["case_id"]] = json.loads(row["row"])
        return out

    def changes(self, generation: int) -> dict:
        """case_id -> change record of the cases regenerated in ``generation``."""
        return {row["case_id"]: json.loads(row["changes"]) for row in self._db.execute(
            "SELECT case_id, changes FROM generation_cases WHERE generation = ? AND changes IS NOT NULL",
            (generation,))}

    # -- generation life cycle -------------------------------------------------------------
    def ensure_first_generation(self) -> None:
        """Record generation 1 (the build) from the ``cases`` rows, once."""
        if self._db.execute("SELECT 1 FROM generations").fetchone() is not None:
            return
        rows = self.rows()
        with self._transaction() as db:
            db.execute("INSERT INTO generations (generation, state, version, config_hash, device, only, started_at, "
                       "finished_at, counts) VALUES (1, 'current', ?, ?, ?, 'build', ?, ?, ?)",
                       (self._meta(db, "version"), self._meta(db, "config_hash"), self._meta(db, "device"),
                        min((r["started_at"] for r in rows if r["started_at"]), default=None),
                        max((r["finished_at"] for r in rows if r["finished_at"]), default=None),
                        json.dumps(_status_counts(rows))))
            self._snapshot(db, 1, rows, state="finished")
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', '1')")

    def start_generation(self, todo: list, config_hash_: str, device: Optional[str], only: str) -> int:
        """A new ``running`` generation with ``todo`` pending; returns its number."""
        with self._transaction() as db:
            last = db.execute("SELECT MAX(generation) AS g FROM generations").fetchone()["g"] or 1
            number = last + 1
            db.execute("INSERT INTO generations (generation, state, version, config_hash, device, only, started_at) "
                       "VALUES (?, 'running', ?, ?, ?, ?, ?)",
                       (number, __version__, config_hash_, device, only, time.time()))
            db.executemany("INSERT INTO generation_cases (generation, case_id, state) VALUES (?, ?, 'pending')",
                           [(number, case_id) for case_id in todo])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('regenerating', ?)", (str(number),))
        return number

    def set_generation_device(self, generation: int, device: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE generations SET device = ? WHERE generation = ?", (device, generation))

    def mark_case(self, generation: int, case_id: str, state: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE generation_cases SET state = ? WHERE generation = ? AND case_id = ?",
                       (state, generation, case_id))

    def reset_cases(self, generation: int, case_ids) -> None:
        """Cases of ``generation`` still ``running`` go back to ``pending`` (an interrupted run)."""
        with self._transaction() as db:
            db.executemany("UPDATE generation_cases SET state = 'pending' WHERE generation = ? AND case_id = ? "
                           "AND state = 'running'", [(generation, case_id) for case_id in case_ids])

    def record_case(self, generation: int, case_id: str, row: dict, changes: Optional[dict]) -> None:
        with self._transaction() as db:
            db.execute("UPDATE generation_cases SET state = 'finished', row = ?, changes = ? "
                       "WHERE generation = ? AND case_id = ?",
                       (json.dumps(row), json.dumps(changes) if changes is not None else None, generation, case_id))

    def switch_to(self, generation: int) -> dict:
        """Make a finished ``running`` generation current, in one transaction; returns its counts.

        Cases it regenerated take its rows; every other case keeps its row, which the generation's
        snapshot records (``kept``), so that restoring it later gives back exactly this state.
        """
        with self._transaction() as db:
            states = {r["case_id"]: r["state"] for r in db.execute(
                "SELECT case_id, state FROM generation_cases WHERE generation = ?", (generation,))}
            if any(state in ("pending", "running") for state in states.values()):
                raise InputError(self.path.parent, f"generation {generation} has unfinished cases")
            current = int(self._meta(db, "generation") or 1)
            rows = self._all_rows(db)
            self._snapshot(db, current, rows, state="kept")  # what a build --resume changed since
            new_rows = {r["case_id"]: json.loads(r["row"]) for r in db.execute(
                "SELECT case_id, row FROM generation_cases WHERE generation = ? AND state = 'finished'", (generation,))}
            self._write_rows(db, new_rows)
            self._snapshot(db, generation, [r for r in rows if r["case_id"] not in new_rows], state="kept")
            counts = _status_counts(self._all_rows(db))
            counts["regenerated"] = len(new_rows)
            entry = db.execute("SELECT * FROM generations WHERE generation = ?", (generation,)).fetchone()
            db.execute("UPDATE generations SET state = 'previous' WHERE state = 'current'")
            db.execute("UPDATE generations SET state = 'current', finished_at = ?, counts = ? WHERE generation = ?",
                       (time.time(), json.dumps(counts), generation))
            self._set_current_meta(db, generation, entry["config_hash"], entry["version"], entry["device"])
            db.execute("DELETE FROM meta WHERE key = 'regenerating'")
        return counts

    def restore(self, generation: int) -> None:
        """Make an earlier generation current again (its rows back in ``cases``), in one transaction."""
        with self._transaction() as db:
            entry = db.execute("SELECT * FROM generations WHERE generation = ?", (generation,)).fetchone()
            if entry is None:
                raise InputError(self.path.parent, f"has no generation {generation}")
            if entry["state"] != "previous":
                raise InputError(self.path.parent, f"generation {generation} is {entry['state']}; only a "
                                                   "previous generation that was not pruned can be restored")
            if self._meta(db, "regenerating"):
                raise InputError(self.path.parent, "a regeneration is unfinished: finish it (dataset regenerate) "
                                                   "or drop it (dataset regenerate --discard) first")
            current = int(self._meta(db, "generation") or 1)
            self._snapshot(db, current, self._all_rows(db), state="kept")
            rows = {r["case_id"]: json.loads(r["row"]) for r in db.execute(
                "SELECT case_id, row FROM generation_cases WHERE generation = ? AND row IS NOT NULL", (generation,))}
            self._write_rows(db, rows)  # cases added after that generation keep their rows
            db.execute("UPDATE generations SET state = 'previous' WHERE state = 'current'")
            db.execute("UPDATE generations SET state = 'current' WHERE generation = ?", (generation,))
            self._set_current_meta(db, generation, entry["config_hash"], entry["version"], entry["device"])

    def discard_unfinished(self) -> Optional[int]:
        """Forget a running generation (its rows; the caller deletes its files); returns its number."""
        entry = self.unfinished()
        if entry is None:
            return None
        with self._transaction() as db:
            db.execute("DELETE FROM generation_cases WHERE generation = ?", (entry["generation"],))
            db.execute("DELETE FROM generations WHERE generation = ?", (entry["generation"],))
            db.execute("DELETE FROM meta WHERE key = 'regenerating'")
        return entry["generation"]

    def mark_pruned(self, generations) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE generations SET state = 'pruned' WHERE generation = ?", [(g,) for g in generations])

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _meta(db, key: str):
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def _all_rows(self, db) -> list:
        return [self._decode(row) for row in db.execute("SELECT * FROM cases ORDER BY case_id")]

    @staticmethod
    def _snapshot(db, generation: int, rows: list, state: str) -> None:
        """Record ``rows`` as ``generation``'s (a known case keeps its state: regenerated or kept)."""
        for row in rows:
            db.execute("INSERT INTO generation_cases (generation, case_id, state, row) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(generation, case_id) DO UPDATE SET row = excluded.row",
                       (generation, row["case_id"], state, json.dumps({k: row[k] for k in _ROW_COLUMNS})))

    @staticmethod
    def _write_rows(db, rows: dict) -> None:
        for case_id, row in rows.items():
            values = [json.dumps(row[k]) if k in ("outputs", "sides") and row[k] is not None else row[k]
                      for k in _ROW_COLUMNS]
            db.execute(f"UPDATE cases SET {', '.join(f'{k} = ?' for k in _ROW_COLUMNS)} WHERE case_id = ?",
                       (*values, case_id))

    @staticmethod
    def _set_current_meta(db, generation: int, config_hash_, version, device) -> None:
        for key, value in (("generation", str(generation)), ("config_hash", config_hash_), ("version", version),
                           ("device", device)):
            if value is not None:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _status_counts(rows: list) -> dict:
    counts: dict = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def _row_from_result(result: dict, signature: Optional[str], started_at: Optional[float]) -> dict:
    """The ``cases`` columns a worker's result gives (as :meth:`Ledger.record` stores them)."""
    timings = result.get("timings_s") or {}
    error = result.get("error")
    if error:
        error = " ".join(str(error).split())[:500]
    return {"status": result["status"], "error": error, "worker": result.get("worker"),
            "input_signature": signature, "input_hash": result.get("input_hash"),
            "t_load": timings.get("load"), "t_bone": timings.get("bone"), "t_afs": timings.get("afs"),
            "t_write": timings.get("write"), "t_total": result.get("total_s"), "outputs": result.get("outputs"),
            "sides": result.get("sides"), "version": result.get("version"), "config_hash": result.get("config_hash"),
            "device": result.get("device"), "started_at": started_at, "finished_at": time.time()}


# -- the change record of one case (computed by the worker) ---------------------------------------

def _read_stored(path: Path) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _dice(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else round(2.0 * int(np.logical_and(a, b).sum()) / total, 4)


def _mean_hip_dice(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    values = [d for d in (_dice(a == c, b == c) for c in _HIP_CLASSES) if d is not None]
    return round(float(np.mean(values)), 4) if values else None


def compare_outputs(dataset_dir, previous: dict, outputs: dict) -> dict:
    """The change record of one regenerated case: old vs new pseudo label and measurements.

    Parameters
    ----------
    dataset_dir : str or Path
        The dataset folder; the paths below are relative to it.
    previous : dict
        The case's outputs before (``labels``, ``measurements``; either may be missing for a case
        that had failed), and ``manual``: its manual label, or None.
    outputs : dict
        The new outputs (``labels``, ``measurements``).

    Returns
    -------
    dict
        ``dice``: class name -> Dice of old and new pseudo label (None where the class is in
        neither); ``min_dice``: the lowest of them (None when nothing could be compared);
        ``sides``: per side ``status`` [old, new], ``head_center_shift_mm`` and the changes of
        head radius and angles (None where a side has no value); ``manual`` (cases with a manual
        label): the mean hip-label Dice of the old and of the new pseudo label against it and
        ``review`` (True when the new one is :data:`REVIEW_DICE_DROP` or more below the old);
        ``note``: why something could not be compared.
    """
    dataset_dir = Path(dataset_dir)
    record: dict = {"dice": {}, "min_dice": None, "sides": {}, "note": None}
    new = _read_stored(dataset_dir / outputs["labels"]) if outputs and outputs.get("labels") else None
    old_path = (previous or {}).get("labels")
    old = _read_stored(dataset_dir / old_path) if old_path and (dataset_dir / old_path).is_file() else None
    if new is None or old is None:
        record["note"] = "no earlier pseudo label" if old is None else "no new pseudo label"
    elif old.shape != new.shape:
        record["note"] = "the input's grid changed"
        old = None
    else:
        for value, name in schema.LABEL_NAMES.items():
            if value != schema.BACKGROUND:
                record["dice"][name] = _dice(old == value, new == value)
        present = [d for d in record["dice"].values() if d is not None]
        record["min_dice"] = min(present) if present else None
    manual_path = (previous or {}).get("manual")
    if manual_path and new is not None:
        manual = _read_stored(dataset_dir / manual_path)
        if manual.shape == new.shape:
            before = _mean_hip_dice(old, manual) if old is not None else None
            after = _mean_hip_dice(new, manual)
            record["manual"] = {"dice_previous": before, "dice_new": after,
                                "review": bool(after is not None and before is not None
                                               and after <= before - REVIEW_DICE_DROP)}
    old_sides = _sides(dataset_dir, (previous or {}).get("measurements"))
    new_sides = _sides(dataset_dir, (outputs or {}).get("measurements"))
    for side in sorted(set(old_sides) | set(new_sides)):
        before, after = old_sides.get(side) or {}, new_sides.get(side) or {}
        entry = {"status": [before.get("status"), after.get("status")], "head_center_shift_mm": None}
        if before.get("head_center_mm") and after.get("head_center_mm"):
            entry["head_center_shift_mm"] = round(float(np.linalg.norm(
                np.subtract(after["head_center_mm"], before["head_center_mm"]))), 3)
        for key, name in _SHIFTS:
            entry[name] = (round(after[key] - before[key], 3)
                           if before.get(key) is not None and after.get(key) is not None else None)
        record["sides"][side] = entry
    return record


def _sides(dataset_dir: Path, path) -> dict:
    if not path or not (dataset_dir / path).is_file():
        return {}
    return json.loads((dataset_dir / path).read_text(encoding="utf-8")).get("sides") or {}


def change_rank(record: Optional[dict]) -> tuple:
    """Sort key of a change record, largest change first: review, status changes, lowest Dice, shift."""
    if not record:
        return (1, 1, 1.0, 0.0)
    review = bool((record.get("manual") or {}).get("review"))
    status_changed = (any(s["status"][0] != s["status"][1] for s in record.get("sides", {}).values())
                      or len(set(record.get("case_status") or ())) > 1)
    shifts = [s.get("head_center_shift_mm") or 0.0 for s in record.get("sides", {}).values()]
    lowest = record.get("min_dice")
    return (0 if review else 1, 0 if status_changed else 1, 1.0 if lowest is None else lowest,
            -max(shifts, default=0.0))


def largest_changes(changes: dict) -> list:
    """(case_id, record) pairs of a generation's change records, largest change first."""
    return sorted(changes.items(), key=lambda kv: (change_rank(kv[1]), kv[0]))


def describe_change(record: dict) -> tuple:
    """(case status, sides) of a change record as text: ``done to failed``; ``left ok to
    low_confidence, centre 1.20 mm, radius 0.30 mm; right ok`` (one value where nothing changed)."""
    def moved(values) -> str:
        return " to ".join(str(v) for v in dict.fromkeys(values or ()))

    sides = []
    for side, entry in sorted(record.get("sides", {}).items()):
        text = f"{side} {moved(entry['status'])}"
        for key, name in (("head_center_shift_mm", "centre"), ("head_radius_change_mm", "radius")):
            if entry.get(key) is not None:
                text += f", {name} {entry[key]:.2f} mm"
        sides.append(text)
    return moved(record.get("case_status")), "; ".join(sides)


# -- regenerate, restore, prune --------------------------------------------------------------------

class _GenerationSink:
    """What the build engine's case loop writes to during a regeneration (see ``engine._run``)."""

    #: How to continue after the client lost its scheduler, and what to do when the workers' device
    #: differs from the dataset's (the engine's one-line errors).
    resume_hint = "run 'thagpu dataset regenerate' again"
    device_hint = "--only all"

    def __init__(self, ledger: GenerationLedger, generation: int, rows: dict, signatures: dict,
                 manual: dict, recorded_device: Optional[str]):
        self.ledger, self.generation, self.rows = ledger, generation, rows
        self.signatures, self.manual, self._recorded = signatures, manual, recorded_device
        self.started: dict = {}

    def input_path(self, case_id: str) -> str:
        return self.rows[case_id]["input_path"]

    def recorded_device(self) -> Optional[str]:
        return self._recorded

    def set_device(self, device: str) -> None:
        self.ledger.set_generation_device(self.generation, device)

    def task_options(self, case_id: str) -> dict:
        row = self.rows[case_id]
        outputs = row.get("outputs") or {}
        return {"cases_dir": generation_cases_dir(self.generation),
                "previous": {"labels": outputs.get("labels"), "measurements": outputs.get("measurements"),
                             "manual": self.manual.get(case_id)}}

    def mark_running(self, case_id: str) -> None:
        self.started[case_id] = time.time()
        self.ledger.mark_case(self.generation, case_id, "running")

    def record(self, case_id: str, result: dict) -> None:
        row = _row_from_result(result, self.signatures.get(case_id), self.started.get(case_id))
        old = self.rows[case_id]
        changes = result.get("changes") or {"dice": {}, "min_dice": None, "sides": {},
                                            "note": f"{result['status']}: {row['error'] or ''}".rstrip(": ")}
        changes["case_status"] = [old["status"], result["status"]]
        if result["status"] != "done" and old["status"] == "done":
            # An unmounted share or a dying worker must not take a good label away (from exports,
            # from AAR): the case keeps its earlier pseudo label and configuration, so the next
            # `--only changed` tries it again; the change record says what happened.
            changes["note"] = f"kept the earlier pseudo label: this generation's run {changes['note']}"
            row = {key: old[key] for key in _ROW_COLUMNS}
        self.ledger.record_case(self.generation, case_id, row, changes)

    def reset_running(self, case_ids, reason: str) -> None:
        self.ledger.reset_cases(self.generation, case_ids)


@dataclass
class RegenerateSummary:
    """What one ``dataset regenerate`` did."""

    generation: Optional[int]  # the generation made or resumed (None: nothing to regenerate)
    processed: int  # cases run now
    counts: dict  # status -> cases in the whole ledger afterwards
    finished_now: dict = field(default_factory=dict)  # status -> cases finished by this run
    elapsed_s: float = 0.0
    report: Optional[Path] = None
    review: list = field(default_factory=list)  # cases with a manual label to look at again
    resumed: bool = False
    timings: dict = field(default_factory=dict)

    @property
    def cases_per_min(self) -> float:
        return 60.0 * self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _select(rows: dict, only: str, wanted: str) -> tuple:
    """(case ids to regenerate, their input signatures now, {case id: signature} of inputs touched
    but not changed) for ``--only``.

    ``changed`` hashes an input only when its size or modification time changed, so a
    regeneration where nothing changed reads no image and finishes in seconds; the touched ones
    get their new signature recorded, so the next run does not hash them again. A missing input
    (an unmounted share) is never regenerated: its case keeps its label, with a warning.
    """
    todo, signatures, touched = [], {}, {}
    for case_id, row in rows.items():
        signature = _signature_or_none(row["input_path"])
        if signature is None:
            log.warning("%s: input missing; case %s is kept as it is", row["input_path"], case_id)
            continue
        signatures[case_id] = signature
        if only == "all" or (only == "failed" and row["status"] == "failed"):
            todo.append(case_id)
        elif only == "changed":
            if row["version"] != __version__ or row["config_hash"] != wanted:
                todo.append(case_id)
            elif signature != row["input_signature"]:
                try:
                    changed = content_hash(row["input_path"]) != row["input_hash"]
                except OSError as error:
                    raise InputError(row["input_path"], f"cannot be read ({error.strerror or error})") from None
                if changed:
                    todo.append(case_id)
                else:
                    touched[case_id] = signature
    return todo, {case_id: signatures[case_id] for case_id in todo}, touched


def regenerate_dataset(dataset_dir, *, config: Optional[Config] = None, only: str = "changed",
                       scheduler: str = "local", workers: Optional[int] = None, device: str = "auto",
                       discard: bool = False, tls=None, workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU,
                       progress: Optional[Callable[[int, int, str, str], None]] = None) -> RegenerateSummary:
    """Run BE and AFS again for a dataset's cases as a new generation (see the module doc).

    Parameters
    ----------
    dataset_dir : str or Path
        A folder made by :func:`thagpu.dataset.build_dataset`.
    config : Config, optional
        The configuration of the new generation (default: thagpu's defaults).
    only : {"changed", "failed", "all"}
        ``changed``: cases whose input content, thagpu version or configuration differ from what
        made their current pseudo label; ``failed``: the failed cases; ``all``: every case.
    scheduler, workers, device, tls, workers_per_gpu
        As for :func:`thagpu.dataset.build_dataset`. The device must be the dataset's, except with
        ``only="all"``, which remakes every case and may move the dataset to another device.
    discard : bool
        Drop an unfinished generation (its files too) instead of resuming it, then stop.
    progress : callable, optional
        ``progress(finished, total, case_id, status)``, as for a build.

    Returns
    -------
    RegenerateSummary
        ``generation`` is None when nothing needed regenerating (no generation is made).

    Raises
    ------
    InputError
        Not a dataset folder; an unfinished build; an unfinished generation under another
        configuration; an unknown ``only``.
    """
    from ..device import resolve_device
    from .engine import LEDGER_NAME, _run, scheduler_device
    from .report import write_report
    from .worker import STAGING

    if only not in ONLY:
        raise InputError(only, f"--only must be one of {', '.join(ONLY)}")
    config = config or Config()
    dataset_dir = Path(dataset_dir).resolve()
    if not (dataset_dir / LEDGER_NAME).is_file():
        raise InputError(dataset_dir, "is not a dataset folder (no ledger.sqlite); run 'thagpu dataset build' first")
    device = scheduler_device(scheduler, device)
    start = time.perf_counter()
    with lock_dataset(dataset_dir), GenerationLedger(dataset_dir / LEDGER_NAME) as ledger:
        unfinished = ledger.unfinished()
        if discard:
            number = ledger.discard_unfinished()
            if number is not None:
                shutil.rmtree(dataset_dir / GENERATIONS / str(number), ignore_errors=True)
            return RegenerateSummary(number, 0, ledger.counts(), elapsed_s=time.perf_counter() - start)
        wanted = config_hash(config)
        rows = {row["case_id"]: row for row in ledger.rows()}
        if not rows:
            raise InputError(dataset_dir, "holds no case to regenerate")
        busy = [case_id for case_id, row in rows.items() if row["status"] in ("pending", "running")]
        if busy and unfinished is None:
            raise InputError(dataset_dir, f"its build is unfinished ({len(busy)} case(s) pending or running): "
                                          "finish it with 'thagpu dataset build --resume' first")
        if scheduler in ("local", "cuda"):
            device = resolve_device(device)  # before anything is recorded: a wrong flag changes nothing
        if unfinished is not None:
            if unfinished["config_hash"] != wanted or unfinished["version"] != __version__:
                raise InputError(dataset_dir, f"generation {unfinished['generation']} is unfinished under thagpu "
                                              f"{unfinished['version']}, config {unfinished['config_hash']} (this is "
                                              f"{__version__}, config {wanted}): resume it with the same version and "
                                              "--config, or drop it with --discard")
            generation, only, resumed = unfinished["generation"], unfinished["only"], True
            states = ledger.case_states(generation)
            todo = [case_id for case_id, state in sorted(states.items()) if state in ("pending", "running")]
            signatures = {case_id: _signature_or_none(rows[case_id]["input_path"]) for case_id in todo}
            # The device its first run recorded (an --only all run may have moved the dataset).
            recorded = unfinished["device"] or (None if only == "all" else ledger.get_meta("device"))
        else:
            if only == "failed" and ledger.get_meta("config_hash") not in (None, wanted):
                raise InputError(dataset_dir, f"was built with config {ledger.get_meta('config_hash')}, this config is "
                                              f"{wanted}: --only failed keeps one configuration for the dataset; "
                                              "use --only changed to remake every case under the new one")
            ledger.ensure_first_generation()
            todo, signatures, touched = _select(rows, only, wanted)
            for case_id, signature in touched.items():
                ledger.set_input(case_id, signature, rows[case_id]["input_hash"])
            if not todo:
                return RegenerateSummary(None, 0, ledger.counts(), elapsed_s=time.perf_counter() - start)
            generation, resumed = ledger.start_generation(todo, wanted, None, only), False
            recorded = None if only == "all" else ledger.get_meta("device")
        manual = {case_id: str(path.relative_to(dataset_dir))
                  for case_id, (source, path) in ledger.label_sources().items() if source == "manual"}
        sink = _GenerationSink(ledger, generation, rows, signatures, manual, recorded)
        shutil.rmtree(dataset_dir / STAGING, ignore_errors=True)
        finished_now: dict = {}
        timings: dict = {}
        if progress:
            progress(0, len(todo), "", "")
        report = None
        try:
            try:
                if todo:
                    _run(todo, sink, dataset_dir, scheduler, workers, device, config, tls, progress, finished_now,
                         timings, workers_per_gpu=workers_per_gpu)
            except BaseException:
                if not resumed and "finished" not in ledger.case_states(generation).values():
                    # Nothing ran (the cluster could not be reached, its workers' device differs):
                    # forget the generation, so the dataset is not left waiting for it.
                    ledger.discard_unfinished()
                    shutil.rmtree(dataset_dir / GENERATIONS / str(generation), ignore_errors=True)
                raise
            counts = ledger.switch_to(generation)
        finally:
            report = write_report(dataset_dir, ledger.rows(), generations=generation_summary(ledger))
        changes = ledger.changes(generation)
        review = sorted(case_id for case_id, record in changes.items() if (record.get("manual") or {}).get("review"))
        return RegenerateSummary(generation, len(todo), counts, finished_now, time.perf_counter() - start, report,
                                 review, resumed, timings)


def _signature_or_none(path) -> Optional[str]:
    try:
        return input_signature(path)
    except OSError:
        return None


def generation_summary(ledger: GenerationLedger) -> Optional[dict]:
    """The current generation, its change records and totals, for ``status`` and the report.

    None for a dataset never regenerated.
    """
    entries = ledger.generations()
    if not entries:
        return None
    current = ledger.current_generation()
    changes = ledger.changes(current)
    status_changes = sum(1 for record in changes.values()
                         for side in record.get("sides", {}).values() if side["status"][0] != side["status"][1])
    lowest = [r["min_dice"] for r in changes.values() if r.get("min_dice") is not None]
    return {"current": current, "generations": entries, "changes": changes,
            "totals": {"regenerated": len(changes), "side_status_changes": status_changes,
                       "review": sorted(c for c, r in changes.items() if (r.get("manual") or {}).get("review")),
                       "median_min_dice": round(float(np.median(lowest)), 4) if lowest else None},
            "unfinished": ledger.unfinished()}


def restore_generation(dataset_dir, generation: int) -> None:
    """Make an earlier, unpruned generation current again (``thagpu dataset restore DIR N``)."""
    from .engine import LEDGER_NAME
    from .report import write_report

    dataset_dir = Path(dataset_dir).resolve()
    if not (dataset_dir / LEDGER_NAME).is_file():
        raise InputError(dataset_dir, "is not a dataset folder (no ledger.sqlite)")
    with lock_dataset(dataset_dir), GenerationLedger(dataset_dir / LEDGER_NAME) as ledger:
        entries = {entry["generation"]: entry for entry in ledger.generations()}
        if not entries:
            raise InputError(dataset_dir, "was never regenerated: it has only generation 1")
        if generation in entries and entries[generation]["state"] != "previous":
            ledger.restore(generation)  # refuses in one line: current, running or pruned
        missing = [case_id for case_id, row in ledger.snapshot_rows(generation).items()
                   for path in (row.get("outputs") or {}).values() if not (dataset_dir / path).is_file()]
        if missing:
            raise InputError(dataset_dir, f"generation {generation} lacks files of {len(set(missing))} case(s) "
                                          f"(first: {sorted(set(missing))[0]}); it cannot be restored")
        ledger.restore(generation)
        write_report(dataset_dir, ledger.rows(), generations=generation_summary(ledger))


def prune_generations(dataset_dir) -> dict:
    """Prune every earlier generation: delete each case file that no current row points at.

    Every ``previous`` generation becomes ``pruned`` (it can no longer be restored), and every file
    under ``cases/`` and ``generations/`` that the current rows do not use is deleted: the earlier
    generations' labels, and leftovers of a dropped regeneration. Returns ``{"pruned": [generation
    numbers], "files": deleted file count}``.
    """
    from .engine import LEDGER_NAME
    from .worker import CASES

    dataset_dir = Path(dataset_dir).resolve()
    if not (dataset_dir / LEDGER_NAME).is_file():
        raise InputError(dataset_dir, "is not a dataset folder (no ledger.sqlite)")
    with lock_dataset(dataset_dir), GenerationLedger(dataset_dir / LEDGER_NAME) as ledger:
        if ledger.unfinished() is not None:
            raise InputError(dataset_dir, "a regeneration is unfinished: finish it or --discard it first")
        in_use = {(dataset_dir / path).resolve() for row in ledger.rows()
                  for path in (row.get("outputs") or {}).values()}
        pruned = [entry["generation"] for entry in ledger.generations() if entry["state"] == "previous"]
        ledger.mark_pruned(pruned)  # first: a prune stopped half-way leaves nothing restorable by mistake
        deleted = 0
        for root in (dataset_dir / CASES, dataset_dir / GENERATIONS):
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*"), reverse=True):  # files before their folders
                if path.is_file() and path.resolve() not in in_use:
                    path.unlink()
                    deleted += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        return {"pruned": pruned, "files": deleted}
