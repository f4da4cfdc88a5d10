"""The run ledger: one SQLite file per dataset, written only by the client.

``DIR/ledger.sqlite`` holds one row per case in table ``cases`` (a WAL journal on a local file
system, a rollback journal on a network one: :func:`journal_mode_for`). Workers never open it: they return a small result and the client
records it, one transaction per change, so an interrupted or crashed build
leaves every row in a state that a later ``--resume`` understands (a row
left ``running`` is simply processed again).

A second table, ``meta``, records the configuration hash and the device the dataset was
built with: cases built under another configuration or on another device would make a mixed
dataset, so such a build is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError, OutputError

__all__ = ["STATUSES", "STAGES", "Ledger", "lock_dataset"]

#: Every status a case can have.
STATUSES = ("pending", "running", "done", "failed", "skipped")
#: Per-stage timings kept as columns (seconds), as in measurements.json.
STAGES = ("load", "bone", "afs", "write")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id         TEXT PRIMARY KEY,
    input_path      TEXT NOT NULL UNIQUE,
    input_signature TEXT,
    input_hash      TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'skipped')),
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    worker          TEXT,
    t_load          REAL,
    t_bone          REAL,
    t_afs           REAL,
    t_write         REAL,
    t_total         REAL,
    outputs         TEXT,
    sides           TEXT,
    version         TEXT,
    config_hash     TEXT,
    device          TEXT,
    started_at      REAL,
    finished_at     REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


#: File systems on which SQLite's WAL mode does not work: its index lives in shared memory, which
#: only processes of one host can share (https://www.sqlite.org/wal.html, "WAL does not work over
#: a network filesystem"). There the ledger uses a rollback journal, which needs only the POSIX
#: locks these file systems provide; the ledger has one writer anyway (:func:`lock_dataset`).
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs",
                       "beegfs", "9p", "afs", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "virtiofs")


def filesystem_type(path, mounts="/proc/mounts") -> str | None:
    """The type of the file system holding ``path`` (from ``mounts``), or None where it cannot be read."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def journal_mode_for(path) -> str:
    """``WAL`` on a local file system, ``DELETE`` (a rollback journal) on a network one."""
    kind = filesystem_type(Path(path).parent)
    return "DELETE" if kind in NETWORK_FILESYSTEMS else "WAL"


def lock_dataset(dataset_dir):
    """Take the dataset folder's writer lock (``DIR/.build.lock``); returns the open file holding it.

    Builds and refinement steps both take it, so the ledger only ever has one writer. Close the
    returned file to release it.

    Raises
    ------
    OutputError
        The folder cannot be made or written.
    InputError
        Another build or refinement step holds the lock.
    """
    dataset_dir = Path(dataset_dir)
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
        handle = open(dataset_dir / ".build.lock", "w")
    except OSError as error:
        raise OutputError(dataset_dir, f"cannot be used as a dataset folder ({error.strerror or error})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(dataset_dir, "another thagpu build or refinement step is writing this dataset folder") from None
    return handle


class Ledger:
    """The ``cases`` table of one dataset folder.

    Parameters
    ----------
    path : str or Path
        The SQLite file (created with its tables if missing).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: autocommit, with explicit transactions in _transaction.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            self._db.row_factory = sqlite3.Row
            self.journal_mode = journal_mode_for(self.path)
            self._db.execute(f"PRAGMA journal_mode={self.journal_mode}")
            self._db.execute("PRAGMA synchronous=NORMAL" if self.journal_mode == "WAL" else "PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(cases)")}
            if "device" not in columns:  # a ledger written before devices were recorded
                self._db.execute("ALTER TABLE cases ADD COLUMN device TEXT")
        except sqlite3.DatabaseError as error:
            raise InputError(self.path, f"is not a usable ledger ({error})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # also when COMMIT itself failed (e.g. the disk is full)
                self._db.execute("ROLLBACK")
            raise

    # -- meta --------------------------------------------------------------
    def get_meta(self, key: str):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- reading -----------------------------------------------------------
    def rows(self, status: str | None = None) -> list:
        """Every case as a dict (``outputs`` and ``sides`` decoded), in case id order."""
        query, args = "SELECT * FROM cases", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        return [self._decode(row) for row in self._db.execute(query + " ORDER BY case_id", args)]

    def by_input(self) -> dict:
        """input path -> row, for matching discovered inputs to known cases."""
        return {row["input_path"]: row for row in self.rows()}

    def counts(self) -> dict:
        """status -> number of cases (every status present, zeros included)."""
        counts = dict.fromkeys(STATUSES, 0)
        for row in self._db.execute("SELECT status, COUNT(*) AS n FROM cases GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def label_sources(self) -> dict:
        """case_id -> (source, path) of the cases whose label is not the pipeline's pseudo label.

        ``manual`` or ``model-refined`` labels recorded by the AAR rounds (:mod:`thagpu.aar.store`);
        paths are absolute. Empty for a dataset that was never refined.
        """
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'refine_labels'").fetchone()
        if exists is None:
            return {}
        return {row["case_id"]: (row["source"], self.path.parent / row["path"])
                for row in self._db.execute("SELECT case_id, source, path FROM refine_labels")}

    def current_label(self, row: dict, sources: dict | None = None) -> tuple:
        """(source, path) of a case's current label: a manual or model-refined label recorded by the
        AAR rounds, else the pipeline's pseudo label.

        ``sources``: :meth:`label_sources` already read, for callers going over many rows.
        """
        found = (self.label_sources() if sources is None else sources).get(row["case_id"])
        return found if found is not None else ("pseudo", self.path.parent / row["outputs"]["labels"])

    @staticmethod
    def _decode(row) -> dict:
        item = dict(row)
        for key in ("outputs", "sides"):
            item[key] = json.loads(item[key]) if item[key] else None
        return item

    # -- writing -----------------------------------------------------------
    def add(self, case_id: str, input_path: str, signature: str) -> None:
        """A new case, ``pending``."""
        with self._transaction() as db:
            db.execute("INSERT INTO cases (case_id, input_path, input_signature, status) VALUES (?, ?, ?, 'pending')",
                       (case_id, input_path, signature))

    def mark_pending(self, case_ids, reason: str | None = None) -> None:
        """Back to ``pending`` (to be processed again), keeping why in ``error``."""
        with self._transaction() as db:
            db.executemany("UPDATE cases SET status = 'pending', error = ? WHERE case_id = ?",
                           [(reason, case_id) for case_id in case_ids])

    def reset_running(self, case_ids, reason: str) -> None:
        """Cases still ``running`` go back to ``pending`` (an interrupted build); others are left as they are."""
        with self._transaction() as db:
            db.executemany("UPDATE cases SET status = 'pending', error = ? WHERE case_id = ? AND status = 'running'",
                           [(reason, case_id) for case_id in case_ids])

    def set_input(self, case_id: str, signature: str, input_hash: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE cases SET input_signature = ?, input_hash = ? WHERE case_id = ?",
                       (signature, input_hash, case_id))

    def mark_running(self, case_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE cases SET status = 'running', error = NULL, attempts = attempts + 1, "
                       "started_at = ?, finished_at = NULL WHERE case_id = ?", (time.time(), case_id))

    def record(self, case_id: str, result: dict) -> None:
        """Store a worker's result: status, one-line error, timings, outputs, side summary."""
        timings = result.get("timings_s") or {}
        error = result.get("error")
        if error:
            error = " ".join(str(error).split())[:500]
        with self._transaction() as db:
            db.execute(
                "UPDATE cases SET status = ?, error = ?, worker = ?, input_hash = COALESCE(?, input_hash), "
                "t_load = ?, t_bone = ?, t_afs = ?, t_write = ?, t_total = ?, outputs = ?, sides = ?, "
                "version = ?, config_hash = ?, device = ?, finished_at = ? WHERE case_id = ?",
                (result["status"], error, result.get("worker"), result.get("input_hash"),
                 *(timings.get(stage) for stage in STAGES), result.get("total_s"),
                 json.dumps(result["outputs"]) if result.get("outputs") else None,
                 json.dumps(result["sides"]) if result.get("sides") else None,
                 result.get("version"), result.get("config_hash"), result.get("device"), time.time(), case_id))
