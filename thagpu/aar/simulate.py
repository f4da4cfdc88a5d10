"""Evidence for active learning: selection strategies compared with an oracle annotator.

Phantoms get their pseudo labels from our own BE + AFS (``thagpu dataset build``), so their errors
are the pipeline's real errors. Each round, each strategy sends ``budget`` cases without a manual
label to an oracle annotator, which returns the phantom's ground truth, imported as a manual label.
The strategies (:mod:`thagpu.aar.strategies`):

* ``disagreement``: train the K fold models on the current labels, score every case out of fold,
  take the most uncertain (:func:`thagpu.aar.rounds.score_round`);
* ``epistemic``: the same training with dropout, take the highest Monte-Carlo dropout entropy;
* ``random``: a seeded random draw, no model.

After every round (round 0: before any manual label) the mean Dice of the dataset's current labels
against the truth (hip classes 1-4, averaged per case, then over cases) is recorded, together with the
cases chosen, their Dice before correction and, for the model strategies, the Spearman rank
correlation between the ranking value and the true error (1 - Dice) over the cases it could choose from.

:data:`SIZES` sets the networks' budget per phantom size (``tiny`` runs in minutes on 2 CPU cores);
a ``config`` changes it. State is saved after every round (``OUT/<strategy>/simulation_state.json``),
so a stopped simulation continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import labels as schema
from .._atomic import atomic_path, atomic_write_text
from ..config import Config
from ..errors import InputError
from ..io import load_ct, load_labels
from ..metrics import dice
from .rounds import HIP_CLASSES, import_labels, score_round, train_round
from .store import RefineStore
from .strategies import MODEL_STRATEGIES, STRATEGIES, choose, strategy_value

__all__ = ["simulate", "STRATEGIES", "DEFAULT_STRATEGIES", "SIZES"]

#: The strategies a simulation compares unless told otherwise (``epistemic`` needs ``aar.dropout`` > 0).
DEFAULT_STRATEGIES = ("disagreement", "random")
#: ``[aar]`` settings per phantom size, under the config file and the command line. ``tiny``
#: (4.5-mm phantoms): 2 folds x 10 epochs of a width-8 UNet on the phantoms' own 4.5-mm grid, so
#: ``refine simulate --cases 8 --rounds 2 --budget 2 --size tiny`` takes minutes on 2 CPU cores;
#: ``small``: 3 folds x 15 epochs of a width-16 UNet on a 3-mm grid (the AAR benchmark's networks).
SIZES = {
    "tiny": {"model": "unet", "width": 8, "spacing_mm": 4.5, "patch_size": 32, "folds": 2, "epochs": 10,
             "samples_per_case": 2, "batch_size": 2},
    "small": {"model": "unet", "width": 16, "spacing_mm": 3.0, "patch_size": 48, "folds": 3, "epochs": 15,
              "samples_per_case": 2, "batch_size": 2},
}
#: Joint spaces drawn from this range (mm): narrow ones make the pseudo labels err.
JOINT_SPACE_MM = (0.3, 3.0)


def _truth_path(row: dict) -> Path:
    return Path(row["input_path"]).parent / "gt.nii.gz"


def _case_dice(store: RefineStore, row: dict) -> float:
    volume = load_ct(row["input_path"])
    _, path = store.current_label(row)
    label = load_labels(path, volume)
    truth = load_labels(_truth_path(row), volume)
    return float(np.mean([dice(label == c, truth == c) for c in HIP_CLASSES]))


def _dataset_dice(dataset_dir: Path) -> dict:
    with RefineStore(dataset_dir) as store:
        return {row["case_id"]: _case_dice(store, row) for row in store.cases()}


def _oracle(dataset_dir: Path, case_ids: list) -> None:
    """Import the phantoms' truth for ``case_ids`` as manual labels."""
    with RefineStore(dataset_dir) as store:
        rows = {row["case_id"]: row for row in store.cases()}
    with tempfile.TemporaryDirectory(prefix="thagpu-oracle-") as tmp:
        for case_id in case_ids:  # the truth is on the CT's grid already; import_labels checks it
            shutil.copyfile(_truth_path(rows[case_id]), Path(tmp) / f"{case_id}.nii.gz")
        import_labels(dataset_dir, tmp)


def _spearman(a, b) -> Optional[float]:
    from scipy.stats import spearmanr
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _save_state(path: Path, state: dict) -> None:
    atomic_write_text(path, json.dumps(state, indent=2) + "\n")


def _run_strategy(strategy: str, folder: Path, rounds: int, budget: int, config: Config, device: str,
                  seed: int, fuse: bool, progress) -> dict:
    state_path = folder / "simulation_state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {"rounds": []}
    if not state["rounds"]:
        per_case = _dataset_dice(folder)
        state["rounds"].append({"round": 0, "mean_dice": float(np.mean(list(per_case.values()))),
                                "per_case_dice": per_case, "chosen": []})
        _save_state(state_path, state)
    if progress:
        progress(f"{strategy}: rounds", len(state["rounds"]) - 1, rounds)
    for round_ in range(len(state["rounds"]), rounds + 1):
        before = state["rounds"][-1]["per_case_dice"]
        record = state.get("pending")
        if record is None or record["round"] != round_:
            record = _choose(strategy, folder, round_, before, budget, config, device, seed, fuse, progress)
            state["pending"] = record  # saved before the oracle: a stop after it never chooses again
            _save_state(state_path, state)
        with RefineStore(folder) as store:
            manual = {c for c, (source, _) in store.label_sources().items() if source == "manual"}
        remaining = [c for c in record["chosen"] if c not in manual]
        if remaining:
            _oracle(folder, remaining)
        record["per_case_dice"] = _dataset_dice(folder)
        record["mean_dice"] = float(np.mean(list(record["per_case_dice"].values())))
        state["rounds"].append(record)
        del state["pending"]
        _save_state(state_path, state)
        if progress:
            progress(f"{strategy}: rounds", round_, rounds)
    return state


def _choose(strategy, folder, round_, before, budget, config, device, seed, fuse, progress) -> dict:
    """The cases a strategy sends to the oracle in one round (with the values it ranked them by)."""
    with RefineStore(folder) as store:
        manual = {c for c, (source, _) in store.label_sources().items() if source == "manual"}
    candidates = sorted(c for c in before if c not in manual)
    record = {"round": round_}
    if strategy in MODEL_STRATEGIES:
        def stage(what, i, n):
            progress(f"{strategy} round {round_}: {what}", i, n)

        train_round(folder, config.aar, device, progress=stage if progress else None)
        scores = score_round(folder, device, fuse=fuse and strategy == "disagreement",
                             progress=stage if progress else None)
        values = {c: strategy_value(strategy, scores[c]) for c in candidates}
        chosen = choose(strategy, candidates, budget, scores=scores)
        record["scores"] = values
        record["spearman_score_vs_error"] = _spearman([values[c] for c in candidates],
                                                      [1.0 - before[c] for c in candidates])
    else:
        chosen = choose(strategy, candidates, budget, seed=seed, round_=round_)
    record["chosen"] = chosen
    record["chosen_dice_before"] = {c: before[c] for c in chosen}
    return record


def _plot(path: Path, curves: dict, budget: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure
    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for name, values in curves.items():
        axis.plot(range(len(values)), values, marker="o", label=name)
    axis.set_xlabel(f"round (each: {budget} case(s) corrected by the oracle)")
    axis.set_ylabel("mean Dice of the dataset's hip labels")
    axis.set_title("Active learning: which cases to correct")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)


def simulate(out, *, cases: int, rounds: int, budget: int, size: str = "small", config: Config | None = None,
             device: str = "cpu", seed: int = 0, workers: int = 2, fuse: bool = False,
             strategies=DEFAULT_STRATEGIES, progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Run the simulation; write ``out/simulation.json`` and ``out/simulation.png``.

    Parameters
    ----------
    out : str or Path
        Working and output folder (continued when it holds a stopped simulation).
    cases, rounds, budget : int
        Phantoms, rounds after round 0, and cases corrected per round and strategy.
    size : {"tiny", "small"}
        Phantom size (``tiny``: 4.5-mm voxels, for tests and a first look).
    config : Config, optional
        ``config.aar`` sets the networks and training; default: the defaults with the size's
        :data:`SIZES` settings.
    device : {"cpu", "gpu"}
    seed : int
        Phantom seeds start at ``8000 + 100 * seed``; also seeds the random strategy.
    workers : int
        Dask workers of the dataset build.
    fuse : bool
        Let the disagreement strategy also write model-refined labels (``score --fuse``).
    strategies : sequence of str
        From :data:`~thagpu.aar.strategies.STRATEGIES`; ``epistemic`` needs ``config.aar.dropout`` > 0.
    progress : callable, optional
        ``progress(what, i, n)``: the dataset build per case, training per epoch, scoring per case,
        and each strategy's rounds.

    Returns
    -------
    dict
        The content of ``simulation.json``.
    """
    from ..dataset import build_dataset
    from ..phantom import make_phantom, write_phantom

    from ..config import load_config

    if size not in SIZES:
        raise InputError(size, f"size must be one of {', '.join(SIZES)}")
    config = config or load_config(defaults={"aar": SIZES[size]})
    out = Path(out)
    strategies = tuple(dict.fromkeys(strategies))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise InputError(",".join(unknown) or "--strategies", f"choose strategies from {', '.join(STRATEGIES)}")
    if "epistemic" in strategies and config.aar.dropout <= 0:
        raise InputError("epistemic", "Monte-Carlo dropout needs networks trained with dropout: set --dropout "
                                      "(aar.dropout) above 0")
    if cases < config.aar.folds or budget < 1 or rounds < 1:
        raise InputError("simulate", f"needs --cases >= the folds ({config.aar.folds}), --budget >= 1 and --rounds >= 1")
    params = {"cases": cases, "budget": budget, "size": size, "seed": seed, "fuse": fuse,
              "strategies": list(strategies), "aar": dataclasses.asdict(config.aar)}
    if (out / "params.json").is_file():
        previous = json.loads((out / "params.json").read_text(encoding="utf-8"))
        if previous != params:
            changed = sorted(k for k in params if previous.get(k) != params[k])
            raise InputError(out, f"holds a simulation with other settings ({', '.join(changed)}); "
                                  "use the same ones (only --rounds may grow) or a new --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "params.json", json.dumps(params, indent=2) + "\n")
    phantoms, base = out / "phantoms", out / "pseudo"
    if not (base / "ledger.sqlite").is_file():
        shutil.rmtree(phantoms, ignore_errors=True)
        for i in range(cases):
            write_phantom(make_phantom(8000 + 100 * seed + i, size=size, preset="hard",
                                       joint_space_mm=JOINT_SPACE_MM), phantoms)
        staged = out / ".pseudo.partial"
        shutil.rmtree(staged, ignore_errors=True)
        def built(finished, total, case_id, status):
            progress("dataset build", finished, total)

        build_dataset(phantoms, staged, workers=workers, device=device, config=config,
                      progress=built if progress else None)
        staged.rename(base)
    results = {}
    for strategy in strategies:
        folder = out / strategy
        if not (folder / "ledger.sqlite").is_file():
            staged = out / f".{strategy}.partial"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(base, staged)
            staged.rename(folder)
        results[strategy] = _run_strategy(strategy, folder, rounds, budget, config, device, seed, fuse,
                                          progress)
    curves = {name: [r["mean_dice"] for r in state["rounds"]] for name, state in results.items()}
    with RefineStore(base) as store:
        n_labelled = len(store.cases())
    summary = {
        "strategies": curves,
        "cases": cases, "cases_with_hip_labels": n_labelled, "rounds": rounds, "budget": budget,
        "size": size, "device": device, "seed": seed, "fuse": fuse,
        "model": config.aar.model, "folds": config.aar.folds, "epochs": config.aar.epochs,
        "aar": dataclasses.asdict(config.aar),
        "final_gain": {name: values[-1] - values[0] for name, values in curves.items()},
        "winner": max(curves, key=lambda name: curves[name][-1]) if len({v[-1] for v in curves.values()}) > 1 else "tie",
        "rounds_detail": {name: [{k: v for k, v in r.items() if k != "per_case_dice"} for r in state["rounds"]]
                          for name, state in results.items()},
        "label_schema": {str(k): v for k, v in schema.LABEL_NAMES.items()},
    }
    atomic_write_text(out / "simulation.json", json.dumps(summary, indent=2) + "\n")
    _plot(out / "simulation.png", curves, budget)
    return summary
