"""AAR evidence: disagreement-ranked against random correction on `small` phantoms, with an oracle.

Run: ``.venv/bin/python -m benchmarks.bench_aar [--cases 18] [--rounds 3] [--budget 2] [--device cpu|gpu]
[--work DIR]``; writes ``benchmarks/results/bench_aar.json``, ``.md`` and ``bench_aar.png`` (the
simulation's own plot). Same as ``thagpu refine simulate`` with the network settings below, chosen to
fit 2 CPU cores in about a quarter of an hour (a 3-mm hip region, 48^3 patches, a small UNet).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine, markdown_table, write_results

#: The [aar] settings of the measured run.
SETTINGS = {"model": "unet", "width": 16, "spacing_mm": 3.0, "patch_size": 48, "folds": 3, "epochs": 15,
            "samples_per_case": 2, "batch_size": 2}


def main(argv=None):
    from thagpu.aar import simulate
    from thagpu.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=18)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/thagpu-bench-aar"),
                        help="working folder (phantoms, datasets; continued if it holds a stopped run)")
    args = parser.parse_args(argv)
    config = load_config(overrides={"aar": SETTINGS})
    start = time.perf_counter()
    summary = simulate(args.work, cases=args.cases, rounds=args.rounds, budget=args.budget, size="small",
                       config=config, device=args.device)
    elapsed = time.perf_counter() - start
    rows = []
    for name, values in summary["strategies"].items():
        detail = summary["rounds_detail"][name]
        for round_, value in enumerate(values):
            rows.append({"strategy": name, "round": round_, "mean_dice": value,
                         "chosen": ", ".join(detail[round_]["chosen"]),
                         "chosen_dice_before": ", ".join(f"{v:.3f}" for v in detail[round_].get("chosen_dice_before", {}).values()),
                         "spearman_score_vs_error": detail[round_].get("spearman_score_vs_error")})
    table = (f"## AAR simulation: {args.cases} small hard phantoms, {args.rounds} rounds of {args.budget} "
             f"oracle corrections per strategy\n\nsettings: {SETTINGS}; {summary['cases_with_hip_labels']} cases "
             f"with hip labels; winner: {summary['winner']}; final gain {summary['final_gain']}; "
             f"{elapsed / 60:.1f} min on {args.device}\n\n"
             + markdown_table(rows, ["strategy", "round", "mean_dice", "chosen", "chosen_dice_before",
                                     "spearman_score_vs_error"]))
    write_results("bench_aar", {"machine": machine(), "settings": SETTINGS, "elapsed_s": elapsed, **summary}, table)
    shutil.copyfile(args.work / "simulation.png", RESULTS / "bench_aar.png")
    print(table)


if __name__ == "__main__":
    main()
