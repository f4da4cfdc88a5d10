"""Refinement state in the dataset's ledger: folds, rounds, scores and label sources.

Tables beside ``cases`` in ``DIR/ledger.sqlite`` (written by the client process only):

* ``refine_folds``: the fold of each case (fixed once assigned; new cases join round-robin);
* ``refine_rounds``: one row per training round with its settings and when it was trained and scored;
* ``refine_scores``: per round and case, the fold whose model predicted it, the score and its parts;
* ``refine_labels``: cases whose current label is not the pipeline's pseudo label: ``manual``
  (imported from a person, never overwritten) or ``model-refined`` (proposed by ``--fuse``).

The current label of a case is its manual label, else its model-refined one, else the pseudo label
``cases/<case_id>/labels.nii.gz``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..dataset.engine import LEDGER_NAME
from ..dataset.export import has_hip_labels
from ..dataset.ledger import Ledger, lock_dataset
from ..errors import InputError

__all__ = ["RefineStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refine_folds (case_id TEXT PRIMARY KEY, fold INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refine_rounds (
    round INTEGER PRIMARY KEY, model TEXT NOT NULL, folds INTEGER NOT NULL, settings TEXT NOT NULL,
    started_at REAL NOT NULL, trained_at REAL, scored_at REAL);
CREATE TABLE IF NOT EXISTS refine_scores (
    round INTEGER NOT NULL, case_id TEXT NOT NULL, fold INTEGER NOT NULL, score REAL NOT NULL,
    parts TEXT NOT NULL, PRIMARY KEY (round, case_id));
CREATE TABLE IF NOT EXISTS refine_labels (
    case_id TEXT PRIMARY KEY, source TEXT NOT NULL CHECK (source IN ('manual', 'model-refined')),
    path TEXT NOT NULL, round INTEGER, recorded_at REAL NOT NULL);
"""


class RefineStore(Ledger):
    """The ledger of a dataset folder, with the refinement tables.

    Parameters
    ----------
    dataset_dir : str or Path
        A folder made by ``thagpu dataset build``.
    """

    def __init__(self, dataset_dir):
        self.dataset_dir = Path(dataset_dir)
        if not (self.dataset_dir / LEDGER_NAME).is_file():
            raise InputError(dataset_dir, "is not a dataset folder (no ledger.sqlite); run 'thagpu dataset build' first")
        # The ledger has one writer: a refinement step and a build never write it at the same time.
        self._lock = lock_dataset(self.dataset_dir)
        try:
            super().__init__(self.dataset_dir / LEDGER_NAME)
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._lock.close()
            raise

    def close(self) -> None:
        super().close()
        self._lock.close()

    # -- cases and their current labels ------------------------------------------------------
    def cases(self) -> list:
        """Ledger rows of the ``done`` cases with hip labels, in case id order."""
        return [row for row in self.rows("done") if has_hip_labels(row, self.dataset_dir)]

    def set_label(self, case_id: str, source: str, path: Path, round_: int | None) -> None:
        """Record a manual or model-refined label; a manual label is never replaced."""
        self.set_labels([(case_id, source, path)], round_)

    def set_labels(self, labels, round_: int | None) -> None:
        """Record several ``(case_id, source, path)`` labels in one transaction (all or none)."""
        with self._transaction() as db:
            for case_id, source, path in labels:
                current = db.execute("SELECT source FROM refine_labels WHERE case_id = ?", (case_id,)).fetchone()
                if current is not None and current["source"] == "manual":
                    raise InputError(case_id, "already has a manual label; it is never overwritten")
                db.execute("INSERT INTO refine_labels (case_id, source, path, round, recorded_at) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT(case_id) DO UPDATE SET source = excluded.source, path = excluded.path, "
                           "round = excluded.round, recorded_at = excluded.recorded_at",
                           (case_id, source, str(Path(path).relative_to(self.dataset_dir)), round_, time.time()))

    # -- folds --------------------------------------------------------------------------------
    def folds(self, case_ids: list, n_folds: int, seed: int) -> dict:
        """case_id -> fold; assigns a seeded random fold to cases that have none yet."""
        known = {row["case_id"]: row["fold"] for row in self._db.execute("SELECT case_id, fold FROM refine_folds")}
        assigned = self.get_meta("refine_folds")
        if assigned is not None and int(assigned) != n_folds:
            raise InputError(self.dataset_dir, f"its cases were split into {assigned} folds, not {n_folds}; "
                                               "keep --folds as it was")
        if assigned is None:
            self.set_meta("refine_folds", str(n_folds))
        new = [c for c in case_ids if c not in known]
        if new:
            counts = np.bincount(list(known.values()), minlength=n_folds) if known else np.zeros(n_folds, int)
            order = np.random.default_rng(seed).permutation(len(new))
            with self._transaction() as db:
                for index in order:
                    fold = int(np.argmin(counts))  # fill the smallest fold first
                    counts[fold] += 1
                    known[new[index]] = fold
                    db.execute("INSERT INTO refine_folds (case_id, fold) VALUES (?, ?)", (new[index], fold))
        return {c: known[c] for c in case_ids}

    # -- rounds and scores ------------------------------------------------------------------------
    def latest_round(self, scored: bool = False) -> dict | None:
        """The newest round (with ``scored``: the newest scored round), its settings decoded."""
        where = " WHERE scored_at IS NOT NULL" if scored else ""
        row = self._db.execute(f"SELECT * FROM refine_rounds{where} ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        item = dict(row)
        item["settings"] = json.loads(item["settings"])
        return item

    def start_round(self, model: str, folds: int, settings: dict) -> int:
        with self._transaction() as db:
            last = db.execute("SELECT MAX(round) AS r FROM refine_rounds").fetchone()["r"]
            number = 1 if last is None else last + 1
            db.execute("INSERT INTO refine_rounds (round, model, folds, settings, started_at) VALUES (?, ?, ?, ?, ?)",
                       (number, model, folds, json.dumps(settings, sort_keys=True), time.time()))
        return number

    def mark_round(self, round_: int, what: str) -> None:
        column = {"trained": "trained_at", "scored": "scored_at"}[what]
        with self._transaction() as db:
            db.execute(f"UPDATE refine_rounds SET {column} = ? WHERE round = ?", (time.time(), round_))

    def record_score(self, round_: int, case_id: str, fold: int, score: float, parts: dict) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO refine_scores (round, case_id, fold, score, parts) VALUES (?, ?, ?, ?, ?)",
                       (round_, case_id, fold, float(score), json.dumps(parts, sort_keys=True)))

    def scores(self, round_: int) -> dict:
        """case_id -> {"fold", "score", "parts"} of one round."""
        return {row["case_id"]: {"fold": row["fold"], "score": row["score"], "parts": json.loads(row["parts"])}
                for row in self._db.execute("SELECT * FROM refine_scores WHERE round = ?", (round_,))}
