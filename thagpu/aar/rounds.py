"""The refinement round: train folds, score every case out of fold, queue the most uncertain, import.

Uncertainty of a case (documented in docs/aar.md) compares its current label ``L`` with the
out-of-fold prediction ``P`` on the hip region grid:

* ``dice_uncertainty``: the mean over the hip classes 1-4 of ``1 - Dice(L == c, P == c)``
  (a class absent from both counts 0);
* ``boundary_mm``: the mean over the hip classes present in either map of their average symmetric
  surface distance (``aar.boundary_mm`` when a class is in only one of them);
* ``disagree_ml``: the volume where ``L != P`` and either is a hip class;
* ``score = dice_uncertainty + boundary_weight x min(boundary_mm / aar.boundary_mm, 1)
  + volume_weight x min(disagree_ml / aar.volume_ml, 1)``.

A round trained with dropout (``aar.dropout`` > 0) also stores ``epistemic``, the Monte-Carlo
dropout entropy of the out-of-fold model (:func:`thagpu.aar.strategies.mc_dropout_entropy`); the
queue ranks by either (:mod:`thagpu.aar.strategies`).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import io
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import labels as schema
from .._atomic import atomic_write_text
from ..config import AARConfig
from ..dataset.inputs import label_files_by_case
from ..errors import InputError
from ..io import load_ct, load_labels, save_labels, save_volume
from ..metrics import assd, dice
from ..qc import LABEL_COLOURS, save_slices_png
from .roi import from_roi
from .store import RefineStore
from .strategies import choose, mc_dropout_entropy, strategy_value
from .train import checkpoint_path, load_model, load_sample, predict, segment, train_fold

__all__ = ["uncertainty", "train_round", "score_round", "make_queue", "import_labels", "merge_changes",
           "TABLE_COLOURS", "write_slicer_table", "write_itksnap_labels"]

log = logging.getLogger("thagpu.aar")

HIP_CLASSES = (schema.FEMORAL_HEAD_LEFT, schema.ACETABULUM_LEFT, schema.FEMORAL_HEAD_RIGHT,
               schema.ACETABULUM_RIGHT)
#: Display colours of the schema (RGB 0-255) in the Slicer and ITK-SNAP tables: those of the QC
#: pictures, so a queued case looks the same in the viewer as in its qc.png.
TABLE_COLOURS = {0: (0, 0, 0), **LABEL_COLOURS}
Progress = Optional[Callable[[str, int, int], None]]


def uncertainty(label: np.ndarray, prediction: np.ndarray, spacing_mm: float, config: AARConfig) -> dict:
    """Disagreement of a label and a prediction on the same grid (see the module doc)."""
    per_class, distances = {}, []
    for value in HIP_CLASSES:
        a, b = label == value, prediction == value
        per_class[schema.LABEL_NAMES[value]] = 1.0 - dice(a, b)
        if a.any() and b.any():
            distances.append(min(assd(a, b, spacing_mm), config.boundary_mm))
        elif a.any() or b.any():
            distances.append(config.boundary_mm)
    hips = np.isin(label, HIP_CLASSES) | np.isin(prediction, HIP_CLASSES)
    disagree_ml = float(np.count_nonzero(hips & (label != prediction)) * spacing_mm ** 3 / 1000.0)
    dice_part = float(np.mean(list(per_class.values())))
    boundary = float(np.mean(distances)) if distances else 0.0
    score = (dice_part + config.boundary_weight * min(boundary / config.boundary_mm, 1.0)
             + config.volume_weight * min(disagree_ml / config.volume_ml, 1.0))
    return {"score": score, "dice_uncertainty": dice_part, "per_class": per_class,
            "boundary_mm": boundary, "disagree_ml": disagree_ml}


def _samples(store: RefineStore, config: AARConfig, rows) -> dict:
    samples = {}
    for row in rows:
        _, path = store.current_label(row)
        samples[row["case_id"]], _, _ = load_sample(row, path, config)
    return samples


def train_round(dataset_dir, config: AARConfig, device: str = "cpu", progress: Progress = None) -> int:
    """Train the K fold models of a round; an unfinished round is continued (finished folds kept).

    Returns the round number. Raises InputError when the dataset has fewer cases than folds.
    """
    with RefineStore(dataset_dir) as store:
        latest = store.latest_round()
        if latest is not None and latest["trained_at"] is None:
            round_, config = latest["round"], AARConfig(**latest["settings"])  # continue it as it began
        else:
            round_ = None
        cases = store.cases()
        if len(cases) < config.folds:
            raise InputError(dataset_dir, f"has {len(cases)} case(s) with hip labels; {config.folds} folds need "
                                          f"at least {config.folds}")
        folds = store.folds([row["case_id"] for row in cases], config.folds, config.seed)
        if round_ is None:
            round_ = store.start_round(config.model, config.folds, asdict(config))
        samples = _samples(store, config, cases)
        for fold in range(config.folds):
            out = checkpoint_path(dataset_dir, round_, fold)
            if out.is_file():
                continue  # trained before an interruption
            training = [samples[c] for c, f in folds.items() if f != fold]
            train_fold(training, fold, round_, config, device, out,
                       progress=(lambda e, n, fold=fold: progress(f"fold {fold}", e, n)) if progress else None)
        store.mark_round(round_, "trained")
    return round_


def score_round(dataset_dir, device: str = "cpu", fuse: bool = False, progress: Progress = None) -> dict:
    """Predict every case with the model of its own fold and store its uncertainty.

    A round trained with ``aar.dropout`` > 0 also stores each case's Monte-Carlo dropout entropy
    (``parts["epistemic"]``). Cases already scored in the round are kept (a stopped scoring
    continues). With ``fuse``, where
    every fold's model agrees with the others but not with the current label, the prediction is
    written as a ``model-refined`` label (never over a manual one).

    Returns case_id -> score record of the round.
    """
    with RefineStore(dataset_dir) as store:
        latest = store.latest_round()
        if latest is None or latest["trained_at"] is None:
            raise InputError(dataset_dir, "has no trained round; run 'thagpu refine train' first")
        round_, config = latest["round"], AARConfig(**latest["settings"])
        cases = store.cases()
        folds = store.folds([row["case_id"] for row in cases], config.folds, config.seed)
        done = store.scores(round_)
        models = [load_model(checkpoint_path(dataset_dir, round_, k), device) for k in range(config.folds)]
        sources = store.label_sources()
        todo = [row for row in cases if row["case_id"] not in done or fuse]
        if progress:
            progress("scoring", 0, len(todo))
        for i, row in enumerate(todo):
            case_id = row["case_id"]
            source, path = store.current_label(row, sources)
            sample, volume, labels = load_sample(row, path, config)
            model, checkpoint = models[folds[case_id]]
            prediction = predict(model, checkpoint, sample, device, config.sw_overlap)
            if case_id not in done:
                parts = uncertainty(sample.label, prediction, sample.roi.spacing_mm, config)
                parts["label_source"] = source
                if config.dropout > 0:  # the same out-of-fold model, dropout on (predict checked it)
                    parts["epistemic"] = mc_dropout_entropy(model, sample.image, checkpoint["patch_size"], device,
                                                            config.sw_overlap, samples=config.mc_samples,
                                                            seed=config.seed)
                store.record_score(round_, case_id, folds[case_id], parts["score"], parts)
            if fuse and sources.get(case_id, ("pseudo",))[0] != "manual":
                _fuse(store, row, sample, volume, labels, models, folds[case_id], prediction, round_, device, config)
            if progress:
                progress("scoring", i + 1, len(todo))
        store.mark_round(round_, "scored")
        return store.scores(round_)


def _fuse(store, row, sample, volume, labels, models, own_fold, own_prediction, round_, device, config) -> None:
    """Propose the prediction where all folds agree with each other and not with the label."""
    predictions = [own_prediction]
    for fold, (model, checkpoint) in enumerate(models):
        if fold != own_fold:
            # These models trained on this case: they vote only on agreement, never alone.
            predictions.append(segment(model, sample.image, checkpoint["patch_size"], device, config.sw_overlap))
    agree = np.all([p == own_prediction for p in predictions[1:]], axis=0)
    change = agree & (own_prediction != sample.label)
    if not change.any():
        return
    fused = merge_changes(labels, sample.roi, change, own_prediction)
    path = store.dataset_dir / "refine" / "labels" / f"{row['case_id']}.model-refined.nii.gz"
    save_labels(fused, volume, path)
    store.set_label(row["case_id"], "model-refined", path, round_)


def merge_changes(labels: np.ndarray, roi, change: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """``labels`` with the ROI voxels marked in ``change`` set to ``prediction``, on the case's grid.

    Only the changed voxels leave the case's own grid: every other voxel keeps its label exactly
    (a round trip through the coarser ROI grid would make the whole box blocky).
    """
    zeros = np.zeros(labels.shape, np.uint8)
    changed = from_roi(change.astype(np.uint8), roi, labels.shape, outside=zeros).astype(bool)
    return np.where(changed, from_roi(prediction, roi, labels.shape, outside=labels), labels).astype(np.uint8)


def write_slicer_table(path: Path) -> Path:
    """A 3D Slicer colour table (``.ctbl``: ``value name R G B A``) of the schema."""
    lines = ["# thagpu label schema v1 (3D Slicer colour table)"]
    lines += [f"{value} {name} {r} {g} {b} {0 if value == 0 else 255}"
              for value, name in schema.LABEL_NAMES.items() for r, g, b in [TABLE_COLOURS[value]]]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_itksnap_labels(path: Path) -> Path:
    """An ITK-SNAP label description file of the schema."""
    lines = ["################################################", "# ITK-SnAP Label Description File",
             "# Columns: IDX -R- -G- -B- -A-- VIS MSH LABEL", "################################################"]
    for value, name in schema.LABEL_NAMES.items():
        r, g, b = TABLE_COLOURS[value]
        alpha, visible = (0, 0) if value == 0 else (1, 1)
        lines.append(f'{value:5d} {r:5d} {g:5d} {b:5d} {alpha:8d} {visible:2d} {visible:2d}    "{name}"')
    return atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass
class QueueEntry:
    """One queued case."""

    rank: int
    case_id: str
    score: float
    folder: str
    label_sha256: str  # of label.nii.gz as exported: an unchanged file was not corrected


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_queue(dataset_dir, budget: int, out, device: str = "cpu", strategy: str = "disagreement") -> list:
    """Export the ``budget`` most uncertain cases without a manual label for correction.

    ``strategy`` ranks them: ``disagreement`` (the round's score) or ``epistemic`` (Monte-Carlo
    dropout entropy, for a round trained with dropout); see :mod:`thagpu.aar.strategies`.

    Each case folder ``out/<rank>_<case_id>/`` holds ``ct.nii.gz``, ``label.nii.gz`` (the current
    label, to be corrected in place), ``prediction.nii.gz``, ``disagreement.nii.gz`` (1 where they
    differ) in the case's own geometry, and ``qc.png``; ``out`` holds ``queue.csv`` in order,
    ``thagpu_labels.ctbl`` (3D Slicer) and ``thagpu_labels.txt`` (ITK-SNAP). Written in a temporary
    folder and renamed into place.
    """
    out = Path(out)
    if budget < 1:
        raise InputError(budget, "--budget must be at least 1")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not empty; choose a new --out for the queue")
    with RefineStore(dataset_dir) as store:
        scored = store.latest_round(scored=True)
        if scored is None:
            raise InputError(dataset_dir, "has no scored round; run 'thagpu refine score' first")
        round_, config = scored["round"], AARConfig(**scored["settings"])
        scores = store.scores(round_)
        manual = {c for c, (source, _) in store.label_sources().items() if source == "manual"}
        rows = {row["case_id"]: row for row in store.cases()}
        if strategy not in ("disagreement", "epistemic"):
            raise InputError(strategy, "--strategy must be disagreement or epistemic")
        chosen = choose(strategy, [c for c in scores if c not in manual and c in rows], budget, scores=scores)
        if not chosen:
            raise InputError(dataset_dir, "has no case left to queue: every scored case has a manual label")
        models = {}
        staged = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
        staged.mkdir(parents=True)
        entries = []
        try:
            for rank, case_id in enumerate(chosen, start=1):
                folder = staged / f"{rank:03d}_{case_id}"
                row = rows[case_id]
                _, path = store.current_label(row)
                sample, volume, labels = load_sample(row, path, config)
                fold = scores[case_id]["fold"]
                if fold not in models:
                    models[fold] = load_model(checkpoint_path(dataset_dir, round_, fold), device)
                model, checkpoint = models[fold]
                prediction = from_roi(predict(model, checkpoint, sample, device, config.sw_overlap), sample.roi,
                                      labels.shape, outside=labels)
                save_volume(volume, folder / "ct.nii.gz")
                label_file = save_labels(labels, volume, folder / "label.nii.gz")
                save_labels(prediction, volume, folder / "prediction.nii.gz")
                disagreement = prediction != labels
                save_labels(disagreement.astype(np.uint8), volume, folder / "disagreement.nii.gz")
                centre = np.argwhere(disagreement).mean(axis=0) if disagreement.any() \
                    else (np.asarray(labels.shape) - 1) / 2.0
                save_slices_png(folder / "qc.png", volume.array, labels, volume.spacing,
                                {"disagreement centre: current label": centre},
                                title=f"{case_id}: {strategy} {strategy_value(strategy, scores[case_id]):.3f} "
                                      "(current label)")
                entries.append(QueueEntry(rank, case_id, strategy_value(strategy, scores[case_id]), folder.name,
                                          _sha256(label_file)))
            write_slicer_table(staged / "thagpu_labels.ctbl")
            write_itksnap_labels(staged / "thagpu_labels.txt")
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["rank", "case_id", "score", "folder", "round", "label_sha256", "strategy"])
            for entry in entries:
                writer.writerow([entry.rank, entry.case_id, f"{entry.score:.6f}", entry.folder, round_,
                                 entry.label_sha256, strategy])
            atomic_write_text(staged / "queue.csv", buffer.getvalue())
            if out.exists():
                out.rmdir()
            staged.rename(out)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return entries


def _corrected_files(folder: Path) -> tuple:
    """(case_id -> corrected label file, case ids left as exported) of a queue folder or label files.

    Label files are those of :func:`thagpu.dataset.inputs.label_files_by_case`.

    A queue's ``label.nii.gz`` whose SHA-256 still equals the exported one was not corrected: it is
    left out (and reported), so it never becomes a manual label by mistake.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "must be a folder of corrected labels")
    found, untouched = {}, []
    if (folder / "queue.csv").is_file():
        with open(folder / "queue.csv", newline="", encoding="utf-8") as handle:
            for entry in csv.DictReader(handle):
                path = folder / entry["folder"] / "label.nii.gz"
                if not path.is_file():
                    continue
                if entry.get("label_sha256") and _sha256(path) == entry["label_sha256"]:
                    untouched.append(entry["case_id"])
                else:
                    found[entry["case_id"]] = path
    found.update(label_files_by_case(folder))
    if not found:
        hint = f" ({len(untouched)} queued label(s) are unchanged)" if untouched else ""
        raise InputError(folder, "holds no corrected label (a corrected queue folder, or <case_id>.nii.gz "
                                 f"files){hint}")
    return found, untouched


def import_labels(dataset_dir, folder) -> list:
    """Validate corrected labels and record them as ``manual`` (all or nothing).

    Each must be on its case's grid, hold only schema values (0-5), and not be empty of hip labels
    where the pipeline found a hip. Queue labels left unchanged are skipped (logged). Returns the
    imported case ids.

    Raises
    ------
    InputError
        One line naming the first file refused; nothing is imported then.
    """
    files, untouched = _corrected_files(folder)
    if untouched:
        log.warning("not imported, unchanged since queued: %s", ", ".join(untouched))
    with RefineStore(dataset_dir) as store:
        rows = {row["case_id"]: row for row in store.cases()}
        sources = store.label_sources()
        latest = store.latest_round()
        checked = []
        for case_id, path in sorted(files.items()):
            if case_id not in rows:
                raise InputError(path, f"no case '{case_id}' with hip labels in {dataset_dir}")
            if sources.get(case_id, ("",))[0] == "manual":
                raise InputError(path, f"case '{case_id}' already has a manual label; it is never overwritten")
            volume = load_ct(rows[case_id]["input_path"])
            labels = load_labels(path, volume, allowed=schema.LABEL_NAMES)
            if not np.isin(labels, HIP_CLASSES).any():
                raise InputError(path, f"has no hip label (1-4) although the pipeline found a hip in '{case_id}'")
            checked.append((case_id, volume, labels))
        written = []
        try:
            for case_id, volume, labels in checked:
                target = store.dataset_dir / "refine" / "labels" / f"{case_id}.manual.nii.gz"
                written.append((case_id, save_labels(labels, volume, target)))
            store.set_labels([(case_id, "manual", target) for case_id, target in written],
                             latest["round"] if latest else None)  # one transaction
        except BaseException:
            for _, target in written:
                target.unlink(missing_ok=True)
            raise
    return [case_id for case_id, _, _ in checked]

