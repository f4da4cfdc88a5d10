"""Every benchmark in one run, and one summary of their latest results.

Run: ``make bench`` or ``.venv/bin/python -m benchmarks.run_all [--quick] [--device cpu|gpu]
[--only bone,accuracy,dataset,kernels,models,aar] [--summary-only]``.

Each benchmark runs as its own process (``python -m benchmarks.bench_<name>``) and writes its JSON and
markdown to ``benchmarks/results/``; then ``summary.json`` and ``summary.md`` are made from the latest
result files, with the machine (CPU, GPU, library versions), and the README's benchmark section (between
its ``benchmark-summary`` markers) is replaced by ``summary.md``. ``--summary-only`` skips the runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine
from thagpu._atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
README_START, README_END = "<!-- benchmark-summary:start -->", "<!-- benchmark-summary:end -->"

#: name -> (module, arguments for a full run, arguments for --quick)
BENCHMARKS = {
    "bone": ("benchmarks.bench_bone", [], ["--quick"]),
    "accuracy": ("benchmarks.bench_accuracy", [], ["--quick"]),
    "dataset": ("benchmarks.bench_dataset", [], ["--cases", "8"]),
    "kernels": ("benchmarks.bench_kernels", [], []),
    "models": ("benchmarks.bench_models", ["--size", "small", "--epochs", "10"],
               ["--size", "small", "--epochs", "2", "--models", "unet,segresnet"]),
    "aar": ("benchmarks.bench_aar", [], ["--cases", "9", "--rounds", "2"]),
}


def _load(name: str):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stamp(result: dict) -> str:
    """Which code a result file describes: its commit, or a warning that it predates the stamps."""
    commit = result.get("machine", {}).get("commit")
    return f" (commit {commit})" if commit else " (older code, commit not recorded: not re-measured)"


def summarise(device: str) -> tuple:
    """(summary dict, markdown) from the latest result files."""
    gpu = device == "gpu"
    lines, summary = [], {"machine": machine(), "device": device}
    bone = _load("bench_bone")
    if bone:
        rows = bone["rows"]
        speed = {r["method"]: r for r in rows if r["experiment"].startswith("speed")}
        osteo = [r["dice"] for r in rows if r["experiment"].startswith("accuracy osteoporotic")]
        hard = [r["dice"] for r in rows if r["experiment"] == "accuracy hard 1 mm"]
        gap1 = [r for r in rows if r["experiment"] == "joint space 1 mm, hard 1 mm"]
        big = [r for r in rows if r["experiment"].startswith("size") and r["method"] == "ours"]
        summary["bone"] = {
            "speedup_vs_fullgrid": speed.get("ours", {}).get("speedup_vs_fullgrid"),
            "fullgrid_s": speed.get("fullgrid", {}).get("time_s"), "ours_s": speed.get("ours", {}).get("time_s"),
            "dice_fullgrid": speed.get("fullgrid", {}).get("dice"), "dice_ours": speed.get("ours", {}).get("dice"),
            "energy_gap_rel": speed.get("ours", {}).get("energy_gap_rel"),
            "min_dice_hard_1mm": min(hard) if hard else None, "min_dice_osteoporotic": min(osteo) if osteo else None,
            "gap_open_1mm": gap1[0]["gap_open"] if gap1 else None, "time_512_s": big[0]["time_s"] if big else None}
        b = summary["bone"]
        stamp = _stamp(bone)
        lines += [f"| BE | 300x200x160: full-grid PyMaxflow vs ours{stamp} | "
                  f"{_fmt(b['fullgrid_s'], 2)} s vs {_fmt(b['ours_s'], 2)} s ({_fmt(b['speedup_vs_fullgrid'], 1)}x), "
                  f"Dice {_fmt(b['dice_fullgrid'])} / {_fmt(b['dice_ours'])}, energy gap {_fmt(b['energy_gap_rel'])} |",
                  f"| BE | Dice: hard 1 mm (min), osteoporotic 0.8x0.8x3 (min){stamp} | {_fmt(b['min_dice_hard_1mm'])}, "
                  f"{_fmt(b['min_dice_osteoporotic'])} |",
                  f"| BE | 1 mm joint space left open (fraction, per side){stamp} | {b['gap_open_1mm']} |",
                  f"| BE | 512x512x300{stamp} | {_fmt(b['time_512_s'], 1)} s |"]
    accuracy = _load("bench_accuracy_gpu" if gpu else "bench_accuracy")
    if accuracy:
        experiments = accuracy["experiments"]
        targets = {f"{e} {t}": met for e, r in experiments.items() for t, met in r["targets"].items()}
        summary["accuracy"] = {"experiments": experiments, "targets": targets,
                               "commit": accuracy["machine"].get("commit")}
        stamp = _stamp(accuracy)
        for spacing in ("1 mm", "0.8x0.8x3 mm", "3 mm"):
            e = experiments.get(f"anatomic {spacing}")
            if not e:
                continue
            lines.append(f"| BE + AFS | anatomic {spacing}, {e['cases']} phantoms: bone Dice mean (min); natural sides ok; "
                         f"confidently wrong{stamp} | {_fmt(e['mean_bone_dice'])} ({_fmt(e['min_bone_dice'])}); "
                         f"{e['natural_sides'] and round(100 * e['ok_share'])} % of {e['natural_sides']}; "
                         f"{e['confidently_wrong']} |")
            lines.append(f"| AFS | anatomic {spacing}, ok sides: Dice head / acetabulum; centre mean (max); radius mean (max)"
                         f"{stamp} | "
                         f"{_fmt(e['ok_mean_dice_head'])} / {_fmt(e['ok_mean_dice_acetabulum'])}; "
                         f"{_fmt(e['ok_mean_centre_mm'], 2)} ({_fmt(e['ok_max_centre_mm'], 2)}) mm; "
                         f"{_fmt(e['ok_mean_radius_mm'], 2)} ({_fmt(e['ok_max_radius_mm'], 2)}) mm |")
        osteo = experiments.get("anatomic osteoporotic 0.8x0.8x3 mm")
        if osteo:
            lines.append(f"| BE | anatomic osteoporotic 0.8x0.8x3 mm: bone Dice mean (min){stamp} | "
                         f"{_fmt(osteo['mean_bone_dice'])} ({_fmt(osteo['min_bone_dice'])}) |")
        hard = experiments.get("regression hard")
        if hard:
            lines.append(f"| AFS | regression: old `hard` preset, {hard['cases']} phantoms: ok sides; confidently wrong; "
                         f"ok centre max{stamp} | {hard['natural_sides'] and round(100 * hard['ok_share'])} %; "
                         f"{hard['confidently_wrong']}; {_fmt(hard['ok_max_centre_mm'], 2)} mm |")
        speed = experiments.get("speed 3 mm pelvis")
        if speed:
            lines.append(f"| BE + AFS | 3 mm pelvis {'x'.join(map(str, speed['shape']))}, warm{stamp} | "
                         f"{_fmt(speed['bone_s'], 2)} + {_fmt(speed['afs_s'], 2)} s |")
        missed = [t for t, met in targets.items() if not met]
        lines.append(f"| BE + AFS | targets not met{stamp} | {', '.join(missed) or 'none'} |")
    dataset = _load("bench_dataset_gpu" if gpu else "bench_dataset")
    if dataset:
        summary["dataset"] = dataset["rows"]
        lines += [f"| dataset | {r['workers']} worker(s), {r['scheduler']}{_stamp(dataset)} | {_fmt(r['cases_per_min'], 1)} cases/min, "
                  f"scaling {_fmt(r.get('scaling_efficiency'), 2)}, overhead {_fmt(100 * r['overhead_fraction'], 1)} % per case |"
                  for r in dataset["rows"]]
    kernels = _load("bench_kernels_gpu" if gpu else "bench_kernels")
    if kernels:
        summary["kernels"] = kernels["rows"]
        by_kernel: dict = {}
        for r in kernels["rows"]:
            by_kernel.setdefault(r["kernel"], []).append(f"{r['form']} {_fmt(r['median_ms'], 2)} ms")
        lines += [f"| kernels | {k}{_stamp(kernels)} | {'; '.join(v)} |" for k, v in by_kernel.items()]
    models = _load("bench_models_gpu" if gpu else "bench_models")
    if models:
        summary["models"] = models["results"]
        budget = f"{models.get('size')}, {models.get('epochs') or 'preset'} epochs"
        lines += [f"| models ({budget}) | {r['model']}{_stamp(models)} | Dice hips {_fmt(r['dice']['mean_hips'])}, HD95 {_fmt(r['hd95']['mean_hips'], 1)} mm, "
                  f"train {_fmt(r['train_s'], 0)} s, infer {_fmt(r['infer_s_per_case'], 2)} s/case, {_fmt(r['peak_mem_mb'], 0)} MB |"
                  for r in models["results"]]
    aar = _load("bench_aar")
    if aar:
        summary["aar"] = {"strategies": aar["strategies"], "winner": aar["winner"]}
        lines += [f"| AAR | mean Dice by round: {name}{_stamp(aar)} | {' '.join(_fmt(v) for v in values)} |"
                  for name, values in aar["strategies"].items()]
    info = summary["machine"]
    head = (f"Latest results on {info.get('cpu', '?')} ({info.get('cpus')} CPUs)"
            + (f", {info['gpu']}" if info.get("gpu") else "") + f"; numpy {info['numpy']}, scipy {info['scipy']}. "
            "Each line comes from `benchmarks/results/<name>.md`.\n\n| stage | measurement | result |\n|---|---|---|\n")
    return summary, head + "\n".join(lines) + "\n"


def _update_readme(markdown: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START in text and README_END in text:
        before, rest = text.split(README_START, 1)
        after = rest.split(README_END, 1)[1]
        atomic_write_text(readme, before + README_START + "\n" + markdown + README_END + after)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the shorter variant of each benchmark")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the latest results")
    args = parser.parse_args(argv)
    runs = {}
    unknown = [n for n in args.only.split(",") if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not args.summary_only:
        for name in args.only.split(","):
            module, full, quick = BENCHMARKS[name]
            extra = quick if args.quick else full
            if args.device == "gpu" and name != "aar":
                extra = extra + ["--device", "gpu"]
            if args.device == "gpu" and name == "dataset":
                extra = extra + ["--scheduler", "cuda", "--workers", "1"]
            start = time.perf_counter()
            code = subprocess.run([sys.executable, "-m", module, *extra], cwd=ROOT).returncode
            runs[name] = {"returncode": code, "wall_s": round(time.perf_counter() - start, 1)}
            print(f"== {name}: exit {code} in {runs[name]['wall_s']} s", flush=True)
    summary, markdown = summarise(args.device)
    summary["runs"] = runs
    failed = [name for name, run in runs.items() if run["returncode"]]
    if failed:  # their lines above come from older result files
        markdown += f"\n**Failed in this run (older results shown):** {', '.join(failed)}\n"
    suffix = "_gpu" if args.device == "gpu" else ""
    atomic_write_text(RESULTS / f"summary{suffix}.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(RESULTS / f"summary{suffix}.md", "## Benchmark summary\n\n" + markdown)
    if args.device == "cpu":
        _update_readme(markdown)
    print(markdown)
    return 1 if any(r["returncode"] for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
