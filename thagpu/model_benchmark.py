"""Benchmark of segmentation networks on an exported dataset's training and test splits.

``thagpu benchmark models DIR --models unet,attention_unet,... --out OUT`` trains every network
on the training split of an export (``thagpu dataset export``, nnU-Net or MSD layout) and evaluates
it on the test split. Every network gets the same seeds, the same hip-region samples at the same
spacing, patch size, augmentation and budget (epochs x patches), through the AAR trainer
(:func:`thagpu.aar.train.train_fold`). Evaluation runs sliding-window inference over each whole test
volume resampled to the benchmark's spacing, maps the prediction back to the volume's own grid and
scores it there with MONAI's metrics and the voxel spacing: Dice, HD95 and ASSD per class, as the
network gave it and with each hip class kept to its largest connected component (MONAI's
``KeepLargestConnectedComponent``, the post-processing nnU-Net chooses when it helps): a network that
leaves a few stray voxels far from the hips pays for them in HD95 and ASSD, and the second figure
says how much of its distance error they are.

Each network runs in a fresh process, so its peak memory (peak resident memory on the CPU, peak
allocated CUDA memory on a GPU) is its own, and a crash in one does not stop the others (the command
fails at the end, naming them). Results are kept per network in ``OUT/<model>/result.json``: a stopped
benchmark resumes with the networks not yet measured, and refuses results made with other settings.
Networks train on whole volumes resampled to the preset's spacing (balanced random crops), as they are
evaluated.

Presets (:data:`PRESETS`) fix the budget: ``cpu`` (the default without a GPU) is sized so that UNet
and SegResNet learn the hip labels in about an hour on 2 CPU cores; ``gpu`` is the larger one. Every
network runs once per seed (initialisation, crops, augmentation; the split is the export's), and the
tables give each figure's mean over seeds with its 95 % Student-t interval.
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
from .morphology import bounding_box
from .config import AARConfig
from .errors import InputError, ThagpuError

__all__ = ["PRESETS", "PRESET_MODELS", "PRESET_SEEDS", "default_preset", "read_split", "aggregate_seeds",
           "benchmark_models", "keep_largest_components", "RESULT_KEYS"]

#: Budget presets: the ``[aar]`` settings every network trains with (resampled spacing in mm, cubic
#: patch in voxels, width of the first level, epochs, patches per training case and epoch, batch, and
#: hip-weighted crops: whole-volume samples are mostly air and other bone, and with plain
#: labelled/unlabelled crops a CPU budget never learns the hips; mirrored patients, so that each side's
#: classes learn from both hips (they did not revive the left acetabulum that one SegResNet seed of
#: ``cpu`` never learnt with ReLU; PReLU did: docs/benchmarks.md).
#: ``tiny`` only checks that everything runs (tests); ``cpu`` is sized for about an hour on 2 CPU
#: cores for UNet and SegResNet over :data:`PRESET_SEEDS` seeds (300 epochs: UNet about 0.75 s and
#: SegResNet about 2.5 s per epoch of 36 patches on 2 free cores); ``gpu`` is the larger one.
PRESETS = {
    "tiny": {"spacing_mm": 4.5, "patch_size": 32, "width": 8, "epochs": 2, "samples_per_case": 2, "batch_size": 2,
             "hip_crop_weight": 1.0, "mirror_sides": True},
    "cpu": {"spacing_mm": 3.0, "patch_size": 32, "width": 8, "epochs": 300, "samples_per_case": 4, "batch_size": 4,
            "hip_crop_weight": 1.0, "mirror_sides": True},
    "gpu": {"spacing_mm": 1.5, "patch_size": 96, "width": 32, "epochs": 300, "samples_per_case": 2,
            "batch_size": 2, "hip_crop_weight": 1.0, "mirror_sides": True},
}
#: The networks each preset runs when none are named (the CPU hour holds two; a GPU runs all).
PRESET_MODELS = {"tiny": ("unet", "segresnet"), "cpu": ("unet", "segresnet"), "gpu": tuple(BENCHMARK_NETWORKS)}
#: Seeds per network: an interval needs at least 2; the presets that measure run 3.
PRESET_SEEDS = {"tiny": 1, "cpu": 3, "gpu": 3}
#: Keys of each network's summary in ``results.json``: figures are means over seeds, ``ci95`` holds
#: the half-widths of their 95 % t-intervals (None with one seed).
RESULT_KEYS = ("model", "n_seeds", "dice", "hd95", "assd", "dice_largest", "hd95_largest", "assd_largest",
               "train_s", "infer_s_per_case", "peak_mem_mb", "parameters", "missed", "ci95")
#: Per-class metrics: as predicted, and with each hip class kept to its largest component (``_largest``).
METRICS = ("dice", "hd95", "assd")
LARGEST = tuple(f"{m}_largest" for m in METRICS)
_COST_KEYS = ("train_s", "infer_s_per_case", "peak_mem_mb")
_CLASSES = [v for v in schema.LABEL_NAMES if v != schema.BACKGROUND]


def default_preset(device: str) -> str:
    """The preset a device gets when none is named: ``gpu`` on a GPU, else ``cpu``."""
    return "gpu" if device == "gpu" else "cpu"


def read_split(export_dir) -> tuple:
    """(training, test) lists of {"id", "image", "label"} (absolute paths) of an export folder."""
    export_dir = Path(export_dir)
    for name in ("datalist.json", "dataset.json"):
        path = export_dir / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
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


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each hip class (1-4) kept to its largest 26-connected component.

    MONAI's ``KeepLargestConnectedComponent`` (per class, independently); other bone and background
    stay as they are.
    """
    from monai.transforms import KeepLargestConnectedComponent

    hips = [schema.FEMORAL_HEAD_LEFT, schema.ACETABULUM_LEFT, schema.FEMORAL_HEAD_RIGHT, schema.ACETABULUM_RIGHT]
    keep = KeepLargestConnectedComponent(applied_labels=hips, independent=True, connectivity=3)
    # A copy: MONAI clears the other components in the array it is given, which would change ``labels``.
    return np.asarray(keep(labels[None].copy()))[0].astype(labels.dtype)


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
    """Train and evaluate one network with one seed (in its own process); write ``out_dir/result.json``.

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
    folder = Path(out_dir)
    name = f"{model} seed {config.seed}"
    # Whole volumes, as at evaluation: a network must also learn where there is no hip.
    samples = [sample_from_files(item["id"], item["image"], item["label"], config, region="whole")[0]
               for item in training]
    start = time.perf_counter()
    checkpoint_file = train_fold(samples, 0, 0, config, device, folder / "model.pt",
                                 progress=(lambda e, n: report(f"{name}: training epochs", e, n)) if report else None)
    train_s = time.perf_counter() - start
    network, _ = load_model(checkpoint_file, device)
    per_case, infer_s = [], []
    for item in test:
        sample, volume, truth = sample_from_files(item["id"], item["image"], item["label"], config, region="whole")
        begin = time.perf_counter()
        predicted = segment(network, sample.image, config.patch_size, device, config.sw_overlap)
        infer_s.append(time.perf_counter() - begin)
        prediction = from_roi(predicted, sample.roi, volume.shape, outside=np.zeros(volume.shape, np.uint8))
        largest = _metrics(keep_largest_components(prediction), truth, volume.spacing)
        per_case.append({"id": item["id"], **_metrics(prediction, truth, volume.spacing),
                         **{f"{metric}_largest": values for metric, values in largest.items()}})
        if report:
            report(f"{name}: test cases", len(per_case), len(test))
    result = {
        "model": model, "seed": config.seed,
        "dice": _nanmean_per_class([c["dice"] for c in per_case]),
        "hd95": _nanmean_per_class([c["hd95"] for c in per_case]),
        "assd": _nanmean_per_class([c["assd"] for c in per_case]),
        **{key: _nanmean_per_class([c[key] for c in per_case]) for key in LARGEST},
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


def aggregate_seeds(per_seed: list) -> dict:
    """One network's summary over seeds: each figure's mean and the half-width of its 95 % t-interval.

    Parameters
    ----------
    per_seed : list of dict
        The ``result.json`` of each seed (:func:`_run_one`): per-class ``dice``, ``hd95``, ``assd``
        (means over the test cases, None where no case gave a finite value) and the costs.

    Returns
    -------
    dict
        The keys :data:`RESULT_KEYS`: ``dice``, ``hd95``, ``assd`` and their ``_largest`` forms (each
        hip class kept to its largest component; None for seeds' results from before them) map each
        class (and ``mean_hips``) to the mean over the seeds that have a value (None if none has), the
        costs are means too,
        ``missed`` sums the misses of every seed per class, and ``ci95`` holds the half-widths
        (:func:`thagpu.stats.t_interval`; None with fewer than 2 values).

    Examples
    --------
    >>> seeds = [{"model": "unet", "dice": {"a": 0.8}, "hd95": {"a": 2.0}, "assd": {"a": 1.0}, "train_s": 10.0,
    ...           "infer_s_per_case": 1.0, "peak_mem_mb": 900.0, "parameters": 5, "missed": {"a": 0}},
    ...          {"model": "unet", "dice": {"a": 0.9}, "hd95": {"a": 4.0}, "assd": {"a": 1.0}, "train_s": 12.0,
    ...           "infer_s_per_case": 1.0, "peak_mem_mb": 900.0, "parameters": 5, "missed": {"a": 1}}]
    >>> summary = aggregate_seeds(seeds)
    >>> round(summary["dice"]["a"], 3), round(summary["ci95"]["dice"]["a"], 3), summary["missed"]
    (0.85, 0.635, {'a': 1})
    """
    from .stats import t_interval

    out = {"model": per_seed[0]["model"], "n_seeds": len(per_seed)}
    ci95: dict = {}
    for metric in METRICS + LARGEST:
        if not all(metric in r for r in per_seed):  # results from before the largest-component figures
            out[metric] = ci95[metric] = None
            continue
        out[metric], ci95[metric] = {}, {}
        for name in per_seed[0][metric]:
            values = [r[metric][name] for r in per_seed if r[metric][name] is not None]
            mean, half = t_interval(values) if values else (None, None)
            out[metric][name], ci95[metric][name] = mean, half
    for key in _COST_KEYS:
        out[key], ci95[key] = t_interval([r[key] for r in per_seed])
    out["parameters"] = per_seed[0]["parameters"]
    out["missed"] = {name: sum(r["missed"][name] for r in per_seed) for name in per_seed[0]["missed"]}
    out["ci95"] = ci95
    return {key: out[key] for key in RESULT_KEYS}


def _plot(path: Path, results: list) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure
    names = [schema.LABEL_NAMES[c] for c in _CLASSES]
    figure = Figure(figsize=(11, 4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    width = 0.8 / max(1, len(results))
    for i, result in enumerate(results):
        x = np.arange(len(names)) + i * width
        errors = [result["ci95"]["dice"][n] or 0.0 for n in names]
        axes[0].bar(x, [result["dice"][n] or 0.0 for n in names], width, yerr=errors, capsize=2,
                    label=result["model"])
        axes[1].bar(i, result["infer_s_per_case"], 0.6, yerr=result["ci95"]["infer_s_per_case"] or 0.0, capsize=3,
                    label=result["model"])
    n_seeds = min(r["n_seeds"] for r in results)
    axes[0].set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, fontsize=8)
    axes[0].set_ylabel("Dice on the test split")
    axes[0].set_title(f"mean and 95 % t-interval over {n_seeds} seed(s)", fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    axes[1].set_xticks(range(len(results)), [r["model"] for r in results], rotation=20, fontsize=8)
    axes[1].set_ylabel("inference s per case")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)


def _cell(mean, half, digits: int = 3) -> str:
    """``mean ± half`` (``-`` for no value; the mean alone without an interval)."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def _table(results: list) -> str:
    """Markdown: per-class Dice, HD95 and ASSD, then the costs; each cell a mean ± 95 % half-width."""
    names = [schema.LABEL_NAMES[c] for c in _CLASSES] + ["mean_hips"]
    sections = []
    largest = "each hip class kept to its largest component"
    for metric, title, digits in (("dice", "Dice", 3), ("hd95", "HD95 (mm)", 2), ("assd", "ASSD (mm)", 2),
                                  ("dice_largest", f"Dice, {largest},", 3),
                                  ("hd95_largest", f"HD95 (mm), {largest},", 2),
                                  ("assd_largest", f"ASSD (mm), {largest},", 2)):
        if any(r[metric] is None for r in results):
            continue
        lines = [f"### {title} per class (test split; mean ± 95 % t-interval over seeds)", "",
                 "| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        lines += ["| " + " | ".join([r["model"], *[_cell(r[metric][n], r["ci95"][metric][n], digits) for n in names]])
                  + " |" for r in results]
        sections.append("\n".join(lines))
    head = ["model", "seeds", "train s", "infer s/case", "peak MB", "parameters", "missed (cases x seeds)"]
    lines = ["### Cost (mean ± 95 % t-interval over seeds)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in results:
        missed = ", ".join(f"{n} {k}" for n, k in r["missed"].items() if k) or "none"
        lines.append("| " + " | ".join([r["model"], str(r["n_seeds"]),
                                        _cell(r["train_s"], r["ci95"]["train_s"], 1),
                                        _cell(r["infer_s_per_case"], r["ci95"]["infer_s_per_case"], 2),
                                        _cell(r["peak_mem_mb"], r["ci95"]["peak_mem_mb"], 0),
                                        str(r["parameters"]), missed]) + " |")
    sections.append("\n".join(lines))
    return "\n\n".join(sections)


def benchmark_models(export_dir, out, models=None, *, preset: Optional[str] = None, epochs: Optional[int] = None,
                     device: str = "cpu", seed: int = 0, seeds: Optional[int] = None,
                     progress: Optional[Callable[[str, int, int], None]] = None, lines: bool = False) -> list:
    """Train and evaluate each network per seed; write ``results.json``, ``results.md``, ``results.png`` in ``out``.

    Parameters
    ----------
    export_dir : str or Path
        A folder written by ``thagpu dataset export`` (or any nnU-Net raw / MSD folder with a test split).
    out : str or Path
        Results folder; a network and seed with a ``<model>/seed_<s>/result.json`` there is not run again.
    models : list of str, optional
        Names from :data:`thagpu.aar.networks.BENCHMARK_NETWORKS`; default the preset's
        (:data:`PRESET_MODELS`).
    preset : {"tiny", "cpu", "gpu"}, optional
        Budget (:data:`PRESETS`); default :func:`default_preset` of ``device``. ``swinunetr`` needs
        ``gpu`` (a patch of 64 or more).
    epochs : int, optional
        Overrides the preset's epochs.
    device : {"cpu", "gpu"}
    seed : int
        The first seed; the runs use ``seed, seed + 1, ...``.
    seeds : int, optional
        How many seeds each network runs with; default the preset's (:data:`PRESET_SEEDS`).
    progress : callable, optional
        ``progress("networks x seeds", i, n)`` after each run.
    lines : bool
        Each run's process prints a progress line per epoch and test case on stderr (for logs).

    Returns
    -------
    list of dict
        One summary per network, in the order asked (:func:`aggregate_seeds`; keys :data:`RESULT_KEYS`)
        plus ``per_seed``, the results of its seeds without their per-case figures.
    """
    out = Path(out)
    preset = preset or default_preset(device)
    if preset not in PRESETS:
        raise InputError(preset, f"--preset must be one of {', '.join(PRESETS)}")
    models = list(models or PRESET_MODELS[preset])
    unknown = [m for m in models if m not in BENCHMARK_NETWORKS]
    if unknown or not models:
        raise InputError(",".join(unknown) or "--models", f"unknown network(s); choose from {', '.join(BENCHMARK_NETWORKS)}")
    seeds = PRESET_SEEDS[preset] if seeds is None else seeds
    if seeds < 1:
        raise InputError(str(seeds), "--seeds must be at least 1")
    settings = dict(PRESETS[preset], seed=seed, folds=2)
    if epochs is not None:
        settings["epochs"] = epochs
    if "swinunetr" in models and settings["patch_size"] < 64:
        raise InputError("swinunetr", f"needs a patch of at least 64 voxels; use --preset gpu (not {preset})")
    replace(AARConfig(), **settings)  # validate the settings here, not in every child process
    read_split(export_dir)  # refuse a bad export before starting any process
    context = multiprocessing.get_context("spawn")
    export_dir = str(Path(export_dir).resolve())
    runs = [(model, seed + k) for model in models for k in range(seeds)]
    per_model: dict = {model: [] for model in models}
    failed = []
    for i, (model, run_seed) in enumerate(runs):
        run_settings = dict(settings, seed=run_seed)
        folder = out / model / f"seed_{run_seed}"
        result_file = folder / "result.json"
        if result_file.is_file():
            kept = json.loads(result_file.read_text(encoding="utf-8"))
            same = (kept.get("settings") == asdict(AARConfig(**run_settings, model=model))
                    and kept.get("device") == device and kept.get("export") == export_dir)
            if not same:
                raise InputError(out, f"holds a {model} result made with other settings, device or export; "
                                      "use a new --out")
        else:
            process = context.Process(target=_run_one,
                                      args=(model, export_dir, str(folder), run_settings, device, lines))
            process.start()
            process.join()
            if process.exitcode != 0 or not result_file.is_file():
                failed.append(f"{model} seed {run_seed} (exit status {process.exitcode})")  # the others still run
                continue
        per_model[model].append(json.loads(result_file.read_text(encoding="utf-8")))
        if progress:
            progress("networks x seeds", i + 1, len(runs))
    results = [dict(aggregate_seeds(per_model[m]),
                    per_seed=[{k: v for k, v in r.items() if k != "per_case"} for r in per_model[m]])
               for m in models if per_model[m]]
    if not results:
        raise ThagpuError(f"every network failed: {', '.join(failed)}; see the messages above")
    summary = [{key: r[key] for key in RESULT_KEYS} for r in results]
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    described = ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("seed", "folds"))
    atomic_write_text(out / "results.md", f"## Model benchmark (preset {preset}: {described}; {device}; "
                                          f"seeds {seed}-{seed + seeds - 1})\n\n" + _table(results) + "\n")
    _plot(out / "results.png", results)
    if failed:
        raise ThagpuError(f"failed: {', '.join(failed)} (see the messages above); the others are in {out}")
    return results
