"""Exporting a built dataset for training: nnU-Net v2 raw layout or MSD, de-identified.

Only ``done`` cases whose labels hold hip labels (1-4) are exported. Every
image is re-written from its array and geometry alone (size, spacing,
origin, direction), so no header field of the input, and no input name,
reaches the export; cases are renamed ``hip_0001``, ``hip_0002``... in a
seeded random order. The mapping from export ids back to case ids and input
paths is written *beside* the export (``<EXPORT>_id_mapping.csv``), never
inside it, so the export folder can be shared on its own.

Layouts (``EXPORT`` is the folder given; for nnU-Net name it like
``Dataset501_Hip`` under ``nnUNet_raw``):

* ``nnunet``: ``imagesTr/hip_0001_0000.nii.gz``, ``labelsTr/hip_0001.nii.gz``,
  ``imagesTs``/``labelsTs`` alike, ``dataset.json`` (``channel_names``,
  ``labels``, ``numTraining``, ``file_ending``), and ``datalist.json``, a
  MONAI datalist of the same files.
* ``msd``: ``imagesTr/hip_0001.nii.gz``, ``labelsTr/hip_0001.nii.gz``,
  ``imagesTs``/``labelsTs``, and ``dataset.json`` in the Medical Segmentation
  Decathlon form, which MONAI's ``load_decathlon_datalist`` reads.

Each case's label is its current one: a ``manual`` or ``model-refined`` label recorded by the AAR
rounds (:mod:`thagpu.aar`) when it has one, else the pipeline's pseudo label; the mapping says which.

Manual test labels (``--test-labels FOLDER``, files named ``<case_id>.nii.gz``
or ``<case_id>/labels.nii.gz`` by the case ids of ``dataset status``) are
checked against their CT and replace the pseudo labels; the cases that have
one are put in the test split, the remaining test places are drawn at random.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import labels as schema
from .._atomic import atomic_write_text
from .._version import __version__
from ..errors import InputError
from ..io import load_ct, load_labels, save_labels, save_volume
from .engine import LEDGER_NAME
from .inputs import content_hash, input_signature, label_files_by_case
from .ledger import Ledger
from .worker import LABELLED_SIDE_STATUSES

__all__ = ["FORMATS", "ExportSummary", "export_dataset", "mapping_path", "has_hip_labels"]

FORMATS = ("nnunet", "msd")


@dataclass
class ExportSummary:
    """What an export wrote."""

    out: Path
    mapping: Path
    n_train: int
    n_test: int
    n_manual_test: int
    skipped: dict  # case_id -> reason it was not exported


def mapping_path(out) -> Path:
    """Where the id mapping of an export at ``out`` goes: beside it, not in it."""
    out = Path(out)
    return out.parent / f"{out.name}_id_mapping.csv"


def _manual_labels(folder) -> dict:
    """case_id -> label file, from ``<case_id>.nii.gz`` files or ``<case_id>/labels.nii.gz``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "--test-labels must be a folder of label files")
    found = label_files_by_case(folder)
    if not found:
        raise InputError(folder, "holds no label file (<case_id>.nii.gz or <case_id>/labels.nii.gz)")
    return found


def _split(case_ids: list, manual: set, split: float, seed: int) -> tuple:
    """(train, test) lists: manual-label cases in test, the rest of test drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    order = [case_ids[i] for i in rng.permutation(len(case_ids))]
    n_test = len(case_ids) - int(round(split * len(case_ids)))
    test = [c for c in order if c in manual]
    test += [c for c in order if c not in manual][: max(0, n_test - len(test))]
    chosen = set(test)
    return [c for c in order if c not in chosen], test


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not empty; choose a new --out for the export")
    if mapping_path(out).exists():
        raise InputError(mapping_path(out), "an id mapping of an earlier export is there; choose a new --out")


def _names(fmt: str, export_id: str) -> tuple:
    image = f"{export_id}_0000.nii.gz" if fmt == "nnunet" else f"{export_id}.nii.gz"
    return image, f"{export_id}.nii.gz"


def _write_case(row: dict, staged: Path, fmt: str, export_id: str, part: str, label_file: Path) -> dict:
    """Re-write one case's CT and labels from arrays and geometry into ``staged``; its dataset.json entry."""
    volume = load_ct(row["input_path"])
    # Read the whole input a second time (its hash) only when its size or mtime changed: the ledger's rule.
    unchanged = input_signature(row["input_path"]) == row.get("input_signature")
    if row.get("input_hash") and not unchanged and content_hash(row["input_path"]) != row["input_hash"]:
        raise InputError(row["input_path"], f"changed since case {row['case_id']} was built; "
                                            "run 'thagpu dataset build --resume' first")
    labels = load_labels(label_file, volume, allowed=schema.LABEL_NAMES)
    image_name, label_name = _names(fmt, export_id)
    suffix = "Tr" if part == "train" else "Ts"
    save_volume(volume, staged / f"images{suffix}" / image_name)
    save_labels(labels, volume, staged / f"labels{suffix}" / label_name)
    return {"image": f"./images{suffix}/{image_name}", "label": f"./labels{suffix}/{label_name}"}


def has_hip_labels(row: dict, dataset_dir: Path) -> bool:
    """True when a ledger row's case has a hip side with labels and its label file exists."""
    sides = row.get("sides") or {}
    if not any(s.get("status") in LABELLED_SIDE_STATUSES for s in sides.values()):
        return False
    return bool(row.get("outputs")) and (dataset_dir / row["outputs"]["labels"]).is_file()


def _dataset_json(fmt: str, train: list, test: list, meta: dict) -> dict:
    if fmt == "nnunet":
        return {
            "name": "thagpu_hip",
            "description": "Hip CT: femoral heads and acetabula (thagpu label schema v1)",
            "channel_names": {"0": "CT"},
            "labels": {name: value for value, name in schema.LABEL_NAMES.items()},
            "numTraining": len(train),
            "file_ending": ".nii.gz",
            "thagpu": meta,
        }
    return {
        "name": "thagpu_hip",
        "description": "Hip CT: femoral heads and acetabula (thagpu label schema v1)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(value): name for value, name in schema.LABEL_NAMES.items()},
        "numTraining": len(train),
        "numTest": len(test),
        "training": train,
        "test": test,
        "thagpu": meta,
    }


def export_dataset(dataset_dir, out, *, fmt: str = "nnunet", split: float = 0.8, seed: int = 0,
                   test_labels=None) -> ExportSummary:
    """Export the ``done`` cases of a dataset with hip labels, de-identified.

    Parameters
    ----------
    dataset_dir : str or Path
        A folder made by :func:`thagpu.dataset.build_dataset`.
    out : str or Path
        The export folder: new or empty. Written in a temporary folder beside
        it and renamed into place when complete.
    fmt : {"nnunet", "msd"}
    split : float
        Fraction of cases for training, in (0, 1].
    seed : int
        Seed of the random order (export ids and split).
    test_labels : str or Path, optional
        Folder of manual labels that replace the pseudo labels (see module doc).

    Returns
    -------
    ExportSummary

    Raises
    ------
    InputError
        No ledger, nothing to export, a bad manual label, a changed input, or
        ``out`` not empty.
    """
    dataset_dir, out = Path(dataset_dir), Path(out)
    if fmt not in FORMATS:
        raise InputError(fmt, f"--format must be one of {', '.join(FORMATS)}")
    if not 0.0 < split <= 1.0:
        raise InputError(split, "--split must be in (0, 1]")
    if not (dataset_dir / LEDGER_NAME).is_file():
        raise InputError(dataset_dir, "is not a dataset folder (no ledger.sqlite); run 'thagpu dataset build' first")
    _check_target(out)
    with Ledger(dataset_dir / LEDGER_NAME) as ledger:
        rows = {row["case_id"]: row for row in ledger.rows()}
        config = ledger.get_meta("config_hash")
        generation = int(ledger.get_meta("generation") or 1)  # dataset regenerate: which pseudo labels
        refined = ledger.label_sources()
    skipped = {case_id: f"status {row['status']}" for case_id, row in rows.items() if row["status"] != "done"}
    usable = []
    for case_id, row in rows.items():
        if row["status"] != "done":
            continue
        if has_hip_labels(row, dataset_dir):
            usable.append(case_id)
        else:
            skipped[case_id] = "no hip labels (no side found, or implants on both sides)"
    if not usable:
        raise InputError(dataset_dir, "has no done case with hip labels to export")
    manual = _manual_labels(test_labels) if test_labels is not None else {}
    unknown = sorted(set(manual) - set(usable))
    if unknown:
        raise InputError(test_labels, f"label file(s) for case(s) not exportable here: {', '.join(unknown[:5])}")
    train, test = _split(sorted(usable), set(manual), split, seed)
    export_ids = {case_id: f"hip_{i + 1:04d}" for i, case_id in enumerate(train + test)}
    # Each case's label: --test-labels, else a manual or model-refined label from AAR, else the pseudo label.
    sources = {case_id: ("manual (--test-labels)", manual[case_id]) if case_id in manual
               else ledger.current_label(rows[case_id], refined) for case_id in usable}

    staged = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    staged.mkdir(parents=True)
    try:
        entries = {"train": [], "test": []}
        for part, cases in (("train", train), ("test", test)):
            for case_id in cases:
                entries[part].append(_write_case(rows[case_id], staged, fmt, export_ids[case_id], part,
                                                 sources[case_id][1]))
        meta = {"version": __version__, "config_hash": config, "generation": generation,
                "label_schema": schema.SCHEMA_VERSION,
                "split": split, "seed": seed, "numTest": len(test),
                "test_labels": "manual" if manual else "current labels (manual, model-refined or pseudo)",
                "numManualTest": len(manual),
                "label_sources": {source: sum(1 for s, _ in sources.values() if s == source)
                                  for source in sorted({s for s, _ in sources.values()})}}
        document = _dataset_json(fmt, entries["train"], entries["test"], meta)
        atomic_write_text(staged / "dataset.json", json.dumps(document, indent=2) + "\n")
        if fmt == "nnunet":
            datalist = {"training": entries["train"], "test": entries["test"],
                        "labels": {str(v): n for v, n in schema.LABEL_NAMES.items()}}
            atomic_write_text(staged / "datalist.json", json.dumps(datalist, indent=2) + "\n")
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["export_id", "split", "case_id", "input_path", "label_source"])
        for case_id in train + test:
            writer.writerow([export_ids[case_id], "train" if case_id in train else "test", case_id,
                             rows[case_id]["input_path"], sources[case_id][0]])
        # The mapping first: an export is never left without its way back to the cases.
        mapping = atomic_write_text(mapping_path(out), buffer.getvalue())
        try:
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(staged, out)
        except BaseException:
            mapping.unlink(missing_ok=True)
            raise
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return ExportSummary(out=out, mapping=mapping, n_train=len(train), n_test=len(test),
                         n_manual_test=len(manual), skipped=skipped)
