"""AAR evidence over seeds: disagreement, Monte-Carlo dropout entropy and random selection, with an oracle.

Run: ``.venv/bin/python -m benchmarks.bench_aar [--seeds 5] [--cases 12] [--rounds 3] [--budget 2]
[--epochs 10] [--target-gain 0.5] [--device cpu|gpu] [--work DIR]``; writes
``benchmarks/results/bench_aar.json``, ``.md`` and ``bench_aar.png``.

Each seed ``s`` is one ``thagpu refine simulate`` (:func:`thagpu.aar.simulate`) on its own ``small``
hard phantoms (phantom seeds ``8000 + 100 s + i``), its own fold split and network seeds
(``aar.seed = s``) and its own random draws, comparing the three strategies of
:mod:`thagpu.aar.strategies` on copies of the same pseudo-labelled dataset. Reported:

* per strategy and round, the mean over seeds of the dataset's mean hip Dice and a 95 % t-interval;
* the area under the Dice-vs-corrections curve, divided by the corrections made (the mean Dice over
  the correction budget, trapezoidal), per seed, its mean and 95 % t-interval, and the paired
  difference to random (same phantoms, same round 0) with its t-interval;
* the corrections each strategy needs to reach a set Dice: per seed, round-0 Dice plus
  ``--target-gain`` of the error left (0.5: half the pseudo labels' error ``1 - Dice`` removed), the
  first round at or above it times the budget; seeds that never reach it within the run are counted.

The networks (:data:`SETTINGS`) are sized for under an hour on 2 CPU cores at the defaults, an
estimate from the parts, not a measured run (the committed result is a smaller run, with its command
in the file; the parts measured on shared cores: a 32^3 step about 0.5 s, 4 Monte-Carlo passes about 3 s a case, a small
phantom about 7 s to make and 6 s to build): a width-8 UNet on a 3-mm grid with 32^3 patches, 2
folds x 10 epochs, dropout 0.2 for all model strategies (the epistemic strategy needs it; the
disagreement strategy trains the same networks, so the two differ only in how they rank), 4
Monte-Carlo passes. A stopped run continues (each seed's folder under ``--work`` resumes). A GPU
run can afford more: ``--cases``, ``--rounds`` and ``--epochs`` grow it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine, markdown_table, write_results
from thagpu.stats import t_interval  # noqa: F401 (shared with the model benchmark; tests import it here)

#: The [aar] settings of the measured run (``aar.seed`` is the seed; ``--epochs`` overrides epochs).
SETTINGS = {"model": "unet", "width": 8, "spacing_mm": 3.0, "patch_size": 32, "folds": 2, "epochs": 10,
            "samples_per_case": 2, "batch_size": 2, "dropout": 0.2, "mc_samples": 4}
#: Strategies compared, in table order.
STRATEGY_ORDER = ("disagreement", "epistemic", "random")


def area_under_curve(dice: list, budget: int) -> float:
    """Trapezoidal area under Dice vs corrections (``round x budget``), divided by the corrections made."""
    corrections = np.arange(len(dice)) * budget
    y = np.asarray(dice, dtype=float)
    return float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(corrections)) / corrections[-1])


def corrections_to_reach(dice: list, budget: int, target: float):
    """Corrections made when the curve first reaches ``target`` (None: not within the run)."""
    for round_, value in enumerate(dice):
        if value >= target - 1e-12:
            return round_ * budget
    return None


def aggregate(per_seed: dict, budget: int, target_gain: float) -> dict:
    """Summaries over seeds of ``per_seed``: seed -> strategy -> list of mean Dice per round."""
    seeds = sorted(per_seed)
    strategies = [s for s in STRATEGY_ORDER if s in per_seed[seeds[0]]]
    rounds = len(per_seed[seeds[0]][strategies[0]])
    out = {"seeds": seeds, "n_seeds": len(seeds), "per_round": {}, "auc": {}, "auc_vs_random": {},
           "corrections_to_target": {}, "targets": {}}
    for seed in seeds:
        d0 = per_seed[seed][strategies[0]][0]
        out["targets"][str(seed)] = d0 + target_gain * (1.0 - d0)
    for name in strategies:
        rows = []
        for round_ in range(rounds):
            mean, half = t_interval([per_seed[s][name][round_] for s in seeds])
            rows.append({"round": round_, "corrections": round_ * budget, "mean": mean, "ci95": half})
        out["per_round"][name] = rows
        aucs = [area_under_curve(per_seed[s][name], budget) for s in seeds]
        mean, half = t_interval(aucs)
        out["auc"][name] = {"per_seed": aucs, "mean": mean, "ci95": half}
        if name != "random" and "random" in strategies:
            diffs = [a - area_under_curve(per_seed[s]["random"], budget) for a, s in zip(aucs, seeds)]
            mean, half = t_interval(diffs)
            out["auc_vs_random"][name] = {"per_seed": diffs, "mean": mean, "ci95": half}
        needed = [corrections_to_reach(per_seed[s][name], budget, out["targets"][str(s)]) for s in seeds]
        reached = [n for n in needed if n is not None]
        out["corrections_to_target"][name] = {
            "per_seed": needed, "reached": len(reached), "median_of_reached": float(np.median(reached)) if reached else None,
            "mean_of_reached": float(np.mean(reached)) if reached else None}
    return out


def _winner(summary: dict) -> str:
    """The strategy whose AUC beats every other's with a paired 95 % interval above 0, else a plain 'none'."""
    versus = summary["auc_vs_random"]
    better = [name for name, item in versus.items() if item["ci95"] is not None and item["mean"] - item["ci95"] > 0]
    worse = [name for name, item in versus.items() if item["ci95"] is not None and item["mean"] + item["ci95"] < 0]
    if len(better) == 1:
        return better[0]
    if worse and len(worse) == len(versus):
        return "random"
    return "none (the 95 % intervals of the AUC differences to random include 0)"


def _plot(path: Path, summary: dict, budget: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thagpu._atomic import atomic_path
    figure, axis = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for offset, (name, rows) in zip((-0.12, 0.0, 0.12), summary["per_round"].items()):
        x = np.array([r["corrections"] for r in rows], dtype=float) + offset * budget
        y = np.array([r["mean"] for r in rows])
        err = np.array([r["ci95"] or 0.0 for r in rows])
        axis.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    axis.set_xlabel(f"corrections made (oracle, {budget} per round)")
    axis.set_ylabel("mean hip Dice of the dataset's labels")
    axis.set_title(f"AAR strategies: mean and 95 % t-interval over {summary['n_seeds']} seeds")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
    plt.close(figure)


def _tables(summary: dict, args, elapsed: float, per_seed_meta: dict) -> str:
    def ci(mean, half, digits=4):
        return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")

    names = list(summary["per_round"])
    rounds = len(summary["per_round"][names[0]])
    rows = []
    for round_ in range(rounds):
        row = {"round": round_, "corrections": round_ * args.budget}
        for name in names:
            item = summary["per_round"][name][round_]
            row[name] = ci(item["mean"], item["ci95"])
        rows.append(row)
    curve = markdown_table(rows, ["round", "corrections", *names])
    auc_rows = []
    for name in names:
        auc = summary["auc"][name]
        versus = summary["auc_vs_random"].get(name)
        need = summary["corrections_to_target"][name]
        auc_rows.append({
            "strategy": name, "AUC (mean Dice over the budget)": ci(auc["mean"], auc["ci95"]),
            "AUC - random (paired)": ci(versus["mean"], versus["ci95"]) if versus else "-",
            "corrections to target, per seed": ", ".join("-" if n is None else str(n) for n in need["per_seed"]),
            "seeds reaching it": f"{need['reached']}/{summary['n_seeds']}",
        })
    spearman = ", ".join(f"{name} {np.mean(v):.2f}" for name, v in per_seed_meta["spearman"].items() if v)
    return (
        f"## AAR strategies over {summary['n_seeds']} seeds\n\n"
        f"Command: `{args.command}`\n\n"
        f"{args.cases} `small` hard phantoms per seed (seeds {', '.join(map(str, summary['seeds']))}: own phantoms, "
        f"fold split and network seeds), {args.rounds} rounds of {args.budget} oracle corrections per strategy; "
        f"networks {per_seed_meta['settings']}; {elapsed / 60:.1f} min on {args.device} "
        f"({per_seed_meta['cpus']} CPUs).\n\n"
        "### Mean hip Dice of the dataset's labels by round (mean ± 95 % t-interval over seeds)\n\n"
        f"{curve}\n\n"
        "### Area under Dice vs corrections, and corrections to the target\n\n"
        f"Target per seed: round-0 Dice + {args.target_gain:g} x (1 - round-0 Dice) "
        f"({', '.join(f'{v:.3f}' for v in summary['targets'].values())}); '-': not reached within "
        f"{args.rounds * args.budget} corrections.\n\n"
        f"{markdown_table(auc_rows, list(auc_rows[0]))}\n\n"
        f"Mean Spearman correlation of the ranking value with the true error (1 - Dice) over the candidates, "
        f"all seeds and rounds: {spearman or '-'}.\n\n"
        f"Winner by AUC: {summary['winner']}.\n")


def main(argv=None):
    from rich.console import Console

    from thagpu.aar import simulate
    from thagpu.config import load_config
    from thagpu.progress import stage_progress

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0 .. seeds-1)")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument("--target-gain", type=float, default=0.5,
                        help="target Dice per seed: round-0 Dice + this fraction of its error (1 - Dice)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/thagpu-bench-aar"),
                        help="working folder (one sub-folder per seed; continued if it holds a stopped run)")
    args = parser.parse_args(argv)
    if args.seeds < 2 or not 0 < args.target_gain < 1:
        parser.error("--seeds must be at least 2 (an interval needs two) and --target-gain in (0, 1)")
    args.command = "python -m benchmarks.bench_aar " + shlex.join(sys.argv[1:] if argv is None else argv)
    settings = dict(SETTINGS, epochs=args.epochs)
    progress, report = stage_progress(Console(stderr=True))
    per_seed, runs, spearman = {}, {}, {name: [] for name in STRATEGY_ORDER if name != "random"}
    start = time.perf_counter()
    with progress:
        for seed in range(args.seeds):
            config = load_config(overrides={"aar": dict(settings, seed=seed)})
            run = simulate(args.work / f"seed_{seed}", cases=args.cases, rounds=args.rounds, budget=args.budget,
                           size="small", config=config, device=args.device, seed=seed, strategies=STRATEGY_ORDER,
                           progress=lambda what, i, n, seed=seed: report(f"seed {seed}: {what}", i, n))
            per_seed[seed] = run["strategies"]
            for name in spearman:
                spearman[name] += [r["spearman_score_vs_error"] for r in run["rounds_detail"][name][1:]
                                   if r.get("spearman_score_vs_error") is not None]
            runs[str(seed)] = {"cases_with_hip_labels": run["cases_with_hip_labels"], "strategies": run["strategies"],
                               "rounds_detail": run["rounds_detail"]}
            report("seeds", seed + 1, args.seeds)
    elapsed = time.perf_counter() - start
    summary = aggregate(per_seed, args.budget, args.target_gain)
    summary["winner"] = _winner(summary)
    info = machine()
    meta = {"settings": settings, "cpus": info.get("cpus"), "spearman": spearman}
    table = _tables(summary, args, elapsed, meta)
    payload = {
        "machine": info, "command": args.command, "settings": settings, "elapsed_s": elapsed,
        "cases": args.cases, "rounds": args.rounds, "budget": args.budget, "size": "small", "device": args.device,
        "target_gain": args.target_gain,
        # Mean curve per strategy over seeds, and the winner: the keys run_all's summary reads.
        "strategies": {name: [r["mean"] for r in rows] for name, rows in summary["per_round"].items()},
        **summary,
        "spearman_score_vs_error": {name: {"values": v, "mean": float(np.mean(v)) if v else None}
                                    for name, v in spearman.items()},
        "per_seed": runs,
    }
    write_results("bench_aar", payload, table)
    _plot(RESULTS / "bench_aar.png", summary, args.budget)
    print(table)


if __name__ == "__main__":
    main()
