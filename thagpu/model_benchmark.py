"""Benchmark of segmentation networks on an exported dataset's training and test splits.

``thagpu benchmark models DIR --models unet,attention_unet,... --out OUT`` trains every network
on the training split of an export (``thagpu dataset export``, nnU-Net or MSD layout) and evaluates
it on the test split. Every network gets the same seeds, the same hip-region samples at the same
spacing, patch size, augmentation and budget (epochs x patches), through the AAR trainer
(:func:`thagpu.aar.train.train_fold`). Evaluation runs sliding-window inference over each whole test
volume resampled to the benchmark's spacing, maps the prediction back to the volume's own grid and
scores it there with MONAI's metrics and the voxel spacing: Dice, HD95 and ASSD per class.

Each network runs in a fresh process, so its peak memory (peak resident memory on the CPU, peak
allocated CUDA memory on a GPU) is its own, and a crash in one does not stop the others (the command
fails at the end, naming them). Results are kept per network in ``OUT/<model>/result.json``: a stopped
benchmark resumes with the networks not yet measured, and refuses results made with other settings.
Networks train on whole volumes resampled to the size's spacing (balanced random crops), as they are
evaluated.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import resource
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import labels as schema
from ._atomic import atomic_path, atomic_write_text
from .aar.networks import BENCHMARK_NETWORKS
from .bone.morphology import bounding_box
from .config import AARConfig
from .errors import InputError, ThagpuError

__all__ = ["SIZES", "read_split", "benchmark_models", "RESULT_KEYS"]

#: Network budget presets: resampled spacing (mm), cubic patch, width, epochs.
SIZES = {
    "tiny": {"spacing_mm": 4.5, "patch_size": 32, "width": 8, "epochs": 2},
    "small": {"spacing_mm": 3.0, "patch_size": 64, "width": 16, "epochs": 30},
    "full": {"spacing_mm": 1.5, "patch_size": 96, "width": 32, "epochs": 300},
}
RESULT_KEYS = ("model", "dice", "hd95", "assd", "train_s", "infer_s_per_case", "peak_mem_mb")
_CLASSES = [v for v in schema.LABEL_NAMES if v != schema.BACKGROUND]


def read_split(export_dir) -> tuple:
    """(training, test) lists of {"id", "image", "label"} (absolute paths) of an export folder."""
    export_dir = Path(export_dir)
    for name in ("datalist.json", "dataset.json"):
        path = export_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            if isinstance(data.get("training"), list):
                def entries(items):
                    return [{"id": Path(item["label"]).name.replace(".nii.gz", ""),
                             "image": (export_dir / item["image"]).resolve(),
                             "label": (export_dir / item["label"]).resolve()} for item in items if "label" in item]
                training, test = entries(data["training"]), entries(data.get("test") or [])
                break
    else:  # a plain nnU-Net raw folder
        def scan(images, labels):
            return [{"id": p.name[: -len("_0000.nii.gz")], "image": p.resolve(),
                     "label": (export_dir / labels / p.name.replace("_0000.nii.gz", ".nii.gz")).resolve()}
                    for p in sorted((export_dir / images).glob("*_0000.nii.gz"))]
        training, test = scan("imagesTr", "labelsTr"), scan("imagesTs", "labelsTs")
    if not training or not test:
        raise InputError(export_dir, "needs an exported dataset with training and test cases with labels "
                                     "(thagpu dataset export ... --split below 1)")
    for item in training + test:
        for key in ("image", "label"):
            if not item[key].is_file():
                raise InputError(item[key], "listed by the export but missing")
    return training, test


def _peak_memory_mb(device: str) -> float:
    if device == "gpu":
        import torch
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _metrics(prediction: np.ndarray, truth: np.ndarray, spacing) -> dict:
    """MONAI Dice, HD95 and ASSD per class (name -> value; NaN where a class is absent)."""
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric
    from monai.networks.utils import one_hot

    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
    warnings.filterwarnings("ignore", message=".*(is all 0|ground truth of class).*")  # absent class: NaN
    # The one-hot maps are float tensors of every class: score the box around the labelled voxels
    # (one background voxel all round keeps every surface inside it, so every value is the same).
    box = bounding_box((prediction > 0) | (truth > 0), 1)
    if box is not None:
        prediction, truth = prediction[box], truth[box]
    pred = one_hot(torch.from_numpy(prediction.astype(np.int64))[None, None], num_classes=len(schema.LABEL_NAMES))
    true = one_hot(torch.from_numpy(truth.astype(np.int64))[None, None], num_classes=len(schema.LABEL_NAMES))
    spacing = [float(s) for s in spacing]
    values = {
        "dice": DiceMetric(include_background=False, reduction="none")(pred, true),
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            pred, true, spacing=spacing),
        "assd": SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(
            pred, true, spacing=spacing),
    }
    return {metric: {schema.LABEL_NAMES[c]: float(tensor[0, i]) for i, c in enumerate(_CLASSES)}
            for metric, tensor in values.items()}


def _missed(per_case: list) -> dict:
    """Per class, the cases where it is in the truth and missed, or predicted where the truth has none.

    The means leave those cases out, so they are counted here. MONAI marks them with an infinite
    ASSD (its HD95 is NaN there, as for a class absent from both).
    """
    return {name: sum(1 for case in per_case if math.isinf(case["assd"][name]) or math.isinf(case["hd95"][name]))
            for name in per_case[0]["assd"]}


def _nanmean_per_class(cases: list) -> dict:
    """Mean per class over the cases where the value is finite (see :func:`_misses` for the others)."""
    names = cases[0].keys()
    out = {}
    for name in names:
        values = np.asarray([case[name] for case in cases], dtype=float)
        finite = values[np.isfinite(values)]
        out[name] = float(finite.mean()) if finite.size else None
    hips = [out[schema.LABEL_NAMES[c]] for c in (1, 2, 3, 4) if out[schema.LABEL_NAMES[c]] is not None]
    out["mean_hips"] = float(np.mean(hips)) if hips else None
    return out


def _run_one(model: str, export_dir: str, out_dir: str, settings: dict, device: str, lines: bool = False) -> None:
    """Train and evaluate one network (in its own process); write ``out_dir/<model>/result.json``.

    With ``lines``, print one progress line per epoch and per test case on stderr (for a log).
    """
    from .aar.roi import from_roi
    from .aar.train import load_model, sample_from_files, segment, train_fold
    from .progress import stage_progress

    report = None
    if lines:
        from rich.console import Console
        report = stage_progress(Console(stderr=True), lines=True)[1]

    config = AARConfig(**settings, model=model)
    training, test = read_split(export_dir)
    folder = Path(out_dir) / model
    # Whole volumes, as at evaluation: a network must also learn where there is no hip.
    samples = [sample_from_files(item["id"], item["image"], item["label"], config, region="whole")[0]
               for item in training]
    start = time.perf_counter()
    checkpoint_file = train_fold(samples, 0, 0, config, device, folder / "model.pt",
                                 progress=(lambda e, n: report(f"{model}: training epochs", e, n)) if report else None)
    train_s = time.perf_counter() - start
    network, _ = load_model(checkpoint_file, device)
    per_case, infer_s = [], []
    for item in test:
        sample, volume, truth = sample_from_files(item["id"], item["image"], item["label"], config, region="whole")
        begin = time.perf_counter()
        predicted = segment(network, sample.image, config.patch_size, device, config.sw_overlap)
        infer_s.append(time.perf_counter() - begin)
        prediction = from_roi(predicted, sample.roi, volume.shape, outside=np.zeros(volume.shape, np.uint8))
        per_case.append({"id": item["id"], **_metrics(prediction, truth, volume.spacing)})
        if report:
            report(f"{model}: test cases", len(per_case), len(test))
    result = {
        "model": model,
        "dice": _nanmean_per_class([c["dice"] for c in per_case]),
        "hd95": _nanmean_per_class([c["hd95"] for c in per_case]),
        "assd": _nanmean_per_class([c["assd"] for c in per_case]),
        "missed": _missed(per_case),
        "train_s": round(train_s, 2),
        "infer_s_per_case": round(float(np.mean(infer_s)), 3),
        "peak_mem_mb": round(_peak_memory_mb(device), 1),
        "parameters": int(sum(p.numel() for p in network.parameters())),
        "n_train": len(training), "n_test": len(test), "device": device, "settings": asdict(config),
        "export": export_dir,
        "per_case": per_case,
    }
    atomic_write_text(folder / "result.json", json.dumps(result, indent=2) + "\n")


def _plot(path: Path, results: list) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [schema.LABEL_NAMES[c] for c in _CLASSES]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    width = 0.8 / max(1, len(results))
    for i, result in enumerate(results):
        x = np.arange(len(names)) + i * width
        axes[0].bar(x, [result["dice"][n] or 0.0 for n in names], width, label=result["model"])
        axes[1].bar(i, result["infer_s_per_case"], 0.6, label=result["model"])
    axes[0].set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, fontsize=8)
    axes[0].set_ylabel("Dice on the test split")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    axes[1].set_xticks(range(len(results)), [r["model"] for r in results], rotation=20, fontsize=8)
    axes[1].set_ylabel("inference s per case")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
    plt.close(figure)


def _table(results: list) -> str:
    hips = [schema.LABEL_NAMES[c] for c in (1, 2, 3, 4)]
    head = ["model", "Dice hips (mean)", *[f"Dice {n}" for n in hips], "Dice other_bone", "HD95 hips mm",
            "ASSD hips mm", "train s", "infer s/case", "peak MB", "parameters"]

    def fmt(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append("| " + " | ".join([r["model"], fmt(r["dice"]["mean_hips"]), *[fmt(r["dice"][n]) for n in hips],
                                        fmt(r["dice"]["other_bone"]), fmt(r["hd95"]["mean_hips"], 2),
                                        fmt(r["assd"]["mean_hips"], 2), fmt(r["train_s"], 1),
                                        fmt(r["infer_s_per_case"], 3), fmt(r["peak_mem_mb"], 0),
                                        str(r["parameters"])]) + " |")
    return "\n".join(lines)


def benchmark_models(export_dir, out, models, *, size: str = "small", epochs: Optional[int] = None,
                     device: str = "cpu", seed: int = 0,
                     progress: Optional[Callable[[str, int, int], None]] = None, lines: bool = False) -> list:
    """Train and evaluate each network; write ``results.json``, ``results.md``, ``results.png`` in ``out``.

    Parameters
    ----------
    export_dir : str or Path
        A folder written by ``thagpu dataset export`` (or any nnU-Net raw / MSD folder with a test split).
    out : str or Path
        Results folder; networks with a ``<model>/result.json`` there are not run again.
    models : list of str
        Names from :data:`thagpu.aar.networks.BENCHMARK_NETWORKS`.
    size : {"tiny", "small", "full"}
        Budget preset (:data:`SIZES`); ``swinunetr`` needs ``small`` or ``full``.
    epochs : int, optional
        Overrides the preset's epochs.
    device : {"cpu", "gpu"}
    seed : int
    progress : callable, optional
        ``progress("models", i, n)`` after each network.
    lines : bool
        Each network's process prints a progress line per epoch and test case on stderr (for logs).

    Returns
    -------
    list of dict
        One result per network, in the order asked (keys :data:`RESULT_KEYS` and more).
    """
    out = Path(out)
    unknown = [m for m in models if m not in BENCHMARK_NETWORKS]
    if unknown or not models:
        raise InputError(",".join(unknown) or "--models", f"unknown network(s); choose from {', '.join(BENCHMARK_NETWORKS)}")
    if size not in SIZES:
        raise InputError(size, f"--size must be one of {', '.join(SIZES)}")
    settings = dict(SIZES[size], seed=seed, folds=2)
    if epochs is not None:
        settings["epochs"] = epochs
    if "swinunetr" in models and settings["patch_size"] < 64:
        raise InputError("swinunetr", f"needs a patch of at least 64 voxels; use --size small or full (not {size})")
    replace(AARConfig(), **settings)  # validate the settings here, not in every child process
    read_split(export_dir)  # refuse a bad export before starting any process
    context = multiprocessing.get_context("spawn")
    export_dir = str(Path(export_dir).resolve())
    results, failed = [], []
    for i, model in enumerate(models):
        result_file = out / model / "result.json"
        if result_file.is_file():
            kept = json.loads(result_file.read_text())
            same = (kept.get("settings") == asdict(AARConfig(**settings, model=model))
                    and kept.get("device") == device and kept.get("export") == export_dir)
            if not same:
                raise InputError(out, f"holds a {model} result made with other settings, device or export; "
                                      "use a new --out")
        else:
            process = context.Process(target=_run_one, args=(model, export_dir, str(out), settings, device, lines))
            process.start()
            process.join()
            if process.exitcode != 0 or not result_file.is_file():
                failed.append(f"{model} (exit status {process.exitcode})")  # the others still run
                continue
        results.append(json.loads(result_file.read_text()))
        if progress:
            progress("models", i + 1, len(models))
    if not results:
        raise ThagpuError(f"every network failed: {', '.join(failed)}; see the messages above")
    summary = [{key: r[key] for key in RESULT_KEYS} for r in results]
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "results.md", f"## Model benchmark ({size}, {device}, seed {seed})\n\n" + _table(results) + "\n")
    _plot(out / "results.png", results)
    if failed:
        raise ThagpuError(f"failed: {', '.join(failed)} (see the messages above); the others are in {out}")
    return results
