"""The model benchmark on phantoms: pseudo labels for training, ground truth for testing.

Run: ``.venv/bin/python -m benchmarks.bench_models [--cases 12] [--size small] [--epochs E]
[--models ...] [--device cpu|gpu] [--work DIR]``; writes ``bench_models.json``, ``.md`` and
``bench_models.png`` (``bench_models_gpu.*`` with ``--device gpu``) to ``benchmarks/results/``.

``small`` hard phantoms go through ``thagpu dataset build`` (pseudo labels from BE + AFS); a quarter of
them get their ground truth as manual test labels, so ``dataset export --test-labels`` puts exactly
those in the test split; then ``thagpu benchmark models`` trains every network on the pseudo-labelled
training split and scores it against the truth. This is the paper's setting: networks trained on
algorithm-made labels, judged on true ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    from thagpu.model_benchmark import benchmark_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--size", default="small", choices=("tiny", "small", "full"))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", default="unet,attention_unet,segresnet,dynunet,unetr,swinunetr")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/thagpu-bench-models"))
    args = parser.parse_args(argv)
    export = prepare(args.work, args.cases, args.device)
    out = args.work / f"cases-{args.cases}" / f"results-{args.size}-{args.device}-{args.epochs}"
    results = benchmark_models(export, out, args.models.split(","), size=args.size, epochs=args.epochs,
                               device=args.device)
    name = "bench_models_gpu" if args.device == "gpu" else "bench_models"
    table = (out / "results.md").read_text()
    header = (f"{args.cases} small hard phantoms; training on pseudo labels, testing on ground truth; "
              f"size {args.size}, epochs {args.epochs or 'preset'}\n\n")
    write_results(name, {"machine": machine(), "cases": args.cases, "size": args.size, "epochs": args.epochs,
                         "results": json.loads((out / "results.json").read_text()),
                         "detail": [{k: v for k, v in r.items() if k != "per_case"} for r in results]},
                  header + table)
    shutil.copyfile(out / "results.png", RESULTS / f"{name}.png")
    print(header + table)


if __name__ == "__main__":
    main()
