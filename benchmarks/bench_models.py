"""The model benchmark on phantoms: pseudo labels for training, ground truth for testing.

Run: ``.venv/bin/python -m benchmarks.bench_models [--cases 12] [--preset cpu|gpu|tiny] [--epochs E]
[--seeds N] [--models ...] [--device cpu|gpu] [--work DIR]``; writes ``bench_models.json``, ``.md``
and ``bench_models.png`` (``bench_models_gpu.*`` with ``--device gpu``) to ``benchmarks/results/``.

``small`` hard phantoms go through ``thagpu dataset build`` (pseudo labels from BE + AFS); a quarter of
them get their ground truth as manual test labels, so ``dataset export --test-labels`` puts exactly
those in the test split; then ``thagpu benchmark models`` trains every network on the pseudo-labelled
training split, once per seed, and scores it against the truth. This is the paper's setting: networks
trained on algorithm-made labels, judged on true ones. The preset defaults to the device's (``cpu``:
UNet and SegResNet, 3 seeds, about an hour on 2 cores; ``gpu``: every network, the larger budget).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine, write_results


def prepare(work: Path, cases: int, device: str) -> Path:
    """Phantoms -> dataset -> export with ground-truth test labels; returns the export folder."""
    from thagpu.dataset import Ledger, build_dataset, export_dataset
    from thagpu.dataset.engine import LEDGER_NAME
    from thagpu.dataset.export import has_hip_labels
    from thagpu.phantom import write_phantoms

    work = work / f"cases-{cases}"
    export = work / "export"
    if (export / "dataset.json").is_file():
        return export
    for name in ("phantoms", "dataset", "truth", "export"):  # only what this script makes
        shutil.rmtree(work / name, ignore_errors=True)
    write_phantoms(work / "phantoms", cases, 9000, size="small", preset="hard")
    build_dataset(work / "phantoms", work / "dataset", workers=2, device=device)
    with Ledger(work / "dataset" / LEDGER_NAME) as ledger:
        usable = [row for row in ledger.rows("done") if has_hip_labels(row, work / "dataset")]
    truth = work / "truth"
    truth.mkdir()
    for row in usable[: max(1, len(usable) // 4)]:
        shutil.copyfile(Path(row["input_path"]).parent / "gt.nii.gz", truth / f"{row['case_id']}.nii.gz")
    export_dataset(work / "dataset", export, fmt="nnunet", split=0.75, seed=0, test_labels=truth)
    return export


def main(argv=None):
    from thagpu.model_benchmark import PRESET_MODELS, PRESET_SEEDS, PRESETS, benchmark_models, default_preset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--preset", default=None, choices=tuple(PRESETS), help="default: the device's")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="default: the preset's")
    parser.add_argument("--models", default=None, help="comma-separated; default: the preset's")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/thagpu-bench-models"))
    args = parser.parse_args(argv)
    preset = args.preset or default_preset(args.device)
    models = args.models.split(",") if args.models else list(PRESET_MODELS[preset])
    seeds = args.seeds or PRESET_SEEDS[preset]
    start = time.perf_counter()
    export = prepare(args.work, args.cases, args.device)
    out = args.work / f"cases-{args.cases}" / f"results-{preset}-{args.device}-{args.epochs}-{seeds}"
    results = benchmark_models(export, out, models, preset=preset, epochs=args.epochs, device=args.device,
                               seeds=seeds, lines=True)
    wall_s = time.perf_counter() - start
    name = "bench_models_gpu" if args.device == "gpu" else "bench_models"
    settings = dict(PRESETS[preset], **({"epochs": args.epochs} if args.epochs else {}))
    first = results[0]["per_seed"][0]
    command = "python -m benchmarks.bench_models " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = (f"{args.cases} small hard phantoms ({first['n_train']} training cases with pseudo labels, "
              f"{first['n_test']} test cases with ground truth); preset {preset} "
              f"({', '.join(f'{k} {v}' for k, v in settings.items())}); {seeds} seed(s) per network; "
              f"{args.device}; wall time {wall_s / 60:.1f} min (`{command}`)\n\n")
    table = (out / "results.md").read_text(encoding="utf-8")
    write_results(name, {"machine": machine(), "command": command, "cases": args.cases, "preset": preset,
                         "settings": settings, "epochs": args.epochs, "seeds": seeds,
                         "n_train": first["n_train"], "n_test": first["n_test"], "wall_s": round(wall_s, 1),
                         "results": json.loads((out / "results.json").read_text(encoding="utf-8")),
                         "per_seed": {r["model"]: r["per_seed"] for r in results}},
                  header + table)
    shutil.copyfile(out / "results.png", RESULTS / f"{name}.png")
    print(header + table)


if __name__ == "__main__":
    main()
