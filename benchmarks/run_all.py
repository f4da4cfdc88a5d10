"""Every benchmark in one run, and one summary of their latest results.

Run: ``make bench`` or ``.venv/bin/python -m benchmarks.run_all [--quick] [--device cpu|gpu]
[--only bone,accuracy,dataset,kernels,models,aar] [--summary-only]``.

Each benchmark runs as its own process (``python -m benchmarks.bench_<name>``) and writes its JSON and
markdown to ``benchmarks/results/``; then ``summary.json`` and ``summary.md`` are made from the latest
result files by :func:`summary_markdown` (the machines the files record, the commit and date of each,
and which no longer describe the current code), and the README's benchmark section (between its
``benchmark-summary`` markers) is replaced by it. ``--summary-only`` skips the runs. The README holds
no other figure; ``tests/test_readme_figures.py`` fails when its section is not what the files give.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS
from thagpu._atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
README_START, README_END = "<!-- benchmark-summary:start -->", "<!-- benchmark-summary:end -->"

#: name -> (module, arguments for a full run, arguments for --quick)
BENCHMARKS = {
    "bone": ("benchmarks.bench_bone", [], ["--quick"]),
    "accuracy": ("benchmarks.bench_accuracy", [], ["--quick"]),
    "dataset": ("benchmarks.bench_dataset", [], ["--cases", "8", "--large-cases", "1"]),
    "kernels": ("benchmarks.bench_kernels", [], []),
    "models": ("benchmarks.bench_models", ["--preset", "cpu"],
               ["--preset", "cpu", "--epochs", "2", "--seeds", "2", "--models", "unet"]),
    "aar": ("benchmarks.bench_aar", [], ["--cases", "9", "--rounds", "2"]),
    "partial_volume": ("benchmarks.bench_partial_volume", [], ["--quick"]),
    "real_slabs": ("benchmarks.bench_real_slabs", [], []),
    "run_io": ("benchmarks.bench_run_io", [], ["--quick"]),
}


#: The code each result file describes (paths in the repository): a file measured at a commit whose
#: code there differs from HEAD's no longer describes the current code, and the summary says so. The
#: phantoms are the benchmarks' input, not the code they describe, so ``thagpu/phantom`` is not listed.
#: (``thagpu/config.py`` holds the stages' defaults: a changed default changes their results.)
PIPELINE = ("thagpu/bone", "thagpu/afs", "thagpu/morphology.py", "thagpu/config.py", "kernels")
CODE_PATHS = {
    "bench_bone": ("thagpu/bone", "thagpu/morphology.py", "thagpu/config.py", "thagpu/memory.py"),
    "bench_accuracy": PIPELINE,
    "bench_dataset": PIPELINE + ("thagpu/dataset", "thagpu/pipeline.py", "thagpu/memory.py"),
    "bench_kernels": ("kernels",),
    "bench_models": ("thagpu/model_benchmark.py", "thagpu/aar"),
    "bench_aar": ("thagpu/aar",),
    "bench_partial_volume": PIPELINE,
    "bench_real_slabs": ("thagpu/bone", "thagpu/morphology.py", "thagpu/config.py"),
    "bench_run_io": PIPELINE + ("thagpu/pipeline.py", "thagpu/io", "thagpu/memory.py", "thagpu/qc.py", "thagpu/cli.py"),
    "gpu": PIPELINE,
}

#: The phrase every row that does not describe the current code carries.
STALE = "**not measured on the current code**"


class CodeHistory:
    """Which commit last changed which code, from ``git`` in ``root`` (read-only queries, cached).

    Without git, or outside a repository, every check answers "not checked".
    """

    def __init__(self, root: Path = ROOT):
        self.root = Path(root)
        self._cache: dict = {}
        self.available = self._git("rev-parse", "--is-inside-work-tree") == "true"

    def _git(self, *args: str):
        if args not in self._cache:
            try:
                result = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True,
                                        errors="replace")  # a binary blob must not stop the summary
                self._cache[args] = result.stdout.strip() if result.returncode == 0 else None
            except OSError:
                self._cache[args] = None
        return self._cache[args]

    def commit(self, ref: str):
        """The full hash of ``ref``, or None when this history does not hold it."""
        return self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") or None

    def last_change(self, paths) -> str | None:
        """The last commit (full hash) that touched any of ``paths``; None when none did."""
        return self._git("log", "-1", "--format=%H", "--", *paths) or None

    def _same_code(self, commit: str, path: str) -> bool:
        """True when ``path`` holds the same code at ``commit`` and at HEAD: for Python, the same syntax
        tree once comments and docstrings are set aside (a reworded docstring changes no figure)."""
        if not path.endswith(".py"):
            return False
        before, after = self._git("show", f"{commit}:{path}"), self._git("show", f"HEAD:{path}")
        if before is None or after is None:
            return False
        try:
            return _code_of(before) == _code_of(after)
        except (SyntaxError, ValueError):  # ValueError: a NUL byte (Python 3.10-3.11)
            return False

    def _changed_after(self, commit: str, paths) -> str:
        """The ``paths`` whose code at HEAD differs from ``commit``'s, as a markdown list ('' if none)."""
        changed = []
        for path in paths:
            files = self._git("diff", "--name-only", "--no-renames", commit, "HEAD", "--", path)
            if files is None or any(not self._same_code(commit, f) for f in files.splitlines() if f):
                changed.append(path)
        return ", ".join(f"`{p}`" for p in changed)

    def freshness(self, commit, date, paths, result_path: Path) -> str:
        """The "measured at" cell of a result: its commit and date, and whether the code changed since.

        Parameters
        ----------
        commit, date : str or None
            The stamp of the result file (``benchmarks.common.code_version``); ``commit`` may end in
            ``-dirty`` (measured with uncommitted changes).
        paths : tuple of str
            The code the result describes (:data:`CODE_PATHS`).
        result_path : Path
            The result file; an unstamped file is judged by the commit that last wrote it.
        """
        if commit:
            clean = commit.removesuffix("-dirty")
            text = f"{commit}, {date}" if date else commit
            if not self.available:
                return f"{text}; not checked (no git)"
            full = self.commit(clean)
            if full is None:
                return f"{text}; not checked (commit not in this history)"
            changed = self._changed_after(full, paths)
            if changed:
                return f"{text}; {STALE}: {changed} changed since"
            return text + ("; with uncommitted changes" if commit.endswith("-dirty") else "")
        if not self.available:
            return "not recorded; not checked (no git)"
        written = self.last_change((str(Path(result_path).resolve().relative_to(self.root)),))
        if written is None:
            return "not recorded; not checked (file not committed)"
        changed = self._changed_after(written, paths)
        if changed:
            return f"not recorded; {STALE}: {changed} changed after the file was committed"
        return "not recorded; code unchanged since the file was committed"


def _code_of(source: str) -> str:
    """The syntax tree of Python ``source`` without its docstrings (comments never reach it)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _load(results: Path, name: str):
    path = results / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    return str(value)


def _gap(value) -> str:
    """A relative energy gap: 0 when exact, else three significant digits."""
    return "-" if value is None else f"{value:.3g}"


def _shape(shape) -> str:
    return "x".join(str(n) for n in shape) if shape else "-"


def _machine_name(info: dict) -> str:
    cpu = f"{info.get('cpu', 'CPU not recorded')} ({info.get('cpus', '?')} CPUs)"
    return cpu + (f", {info['gpu']}" if info.get("gpu") else "")


def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _bone_sections(bone: dict, cell) -> tuple:
    """The BE side-by-side table and the BE accuracy lines of ``bench_bone.json``."""
    rows = bone["rows"]

    def at(row):  # rows carry their own stamp (``--speed-only`` keeps older rows)
        return cell(row.get("commit", bone["machine"].get("commit")), row.get("date", bone["machine"].get("date")))

    speed = [r for r in rows if r["experiment"].startswith("speed")]
    names = {"fullgrid_uncropped": "plain PyMaxflow, whole grid (uncropped)",
             "fullgrid_cropped": "plain PyMaxflow, every voxel of ours' box (cropped)",
             "ours": "ours: crop + exact reduction + PyMaxflow on the free voxels",
             "banded": "banded (coarse solve + band; approximate)", "fullgrid": "plain PyMaxflow, whole grid (old row)"}
    lines = []
    for experiment in dict.fromkeys(r["experiment"] for r in speed):
        group = [r for r in speed if r["experiment"] == experiment]
        coarse_to_fine = any("refine" in (r.get("stages_s") or {}) for r in group)
        fell_back = any("sharp_check" in (r.get("stages_s") or {}) for r in group)
        stage_keys = (("energy", "graph_cut", "cleanup") + (("refine",) if coarse_to_fine else ())
                      + (("sharp_check",) if fell_back else ()))
        table = []
        for r in group:
            stages = r.get("stages_s") or {}
            ratios = " / ".join(_fmt(r.get(k), 1) + ("x" if r.get(k) is not None else "")
                                for k in ("speedup_vs_uncropped", "speedup_vs_cropped"))
            name = names.get(r["method"], r["method"])
            if r["method"] == "ours" and "refine" in stages:
                name = "ours: BE on 2-voxel block means, its surface band decided at full resolution"
            table.append([name, r["device"], _shape(r.get("solved_shape")), _fmt(r.get("graph_nodes")),
                          " + ".join(_fmt(stages.get(k, 0.0), 2) for k in stage_keys),
                          _fmt(r["time_s"], 2) + (f" (runs: {', '.join(_fmt(t, 2) for t in r['time_s_runs'])})"
                                                  if len(r.get("time_s_runs") or []) > 1 else ""),
                          _fmt(r.get("peak_rss_mb"), 0),
                          ratios if r["device"] == "cpu" else "own row, no ratio",
                          _gap(r.get("energy_gap_rel")), _fmt(r.get("dice"), 4), at(r)])
        first = group[0]
        spacing = " x ".join(_fmt(v, 2) for v in first.get("spacing_mm") or [])
        lines += ([""] if lines else []) + [
            f"**BE: ours against plain PyMaxflow** ({_shape(first['shape'])} at {spacing} mm, `{first.get('preset', 'hard')}` "
            f"phantom seed {first.get('seed', 2000)}; one process per row; the stages are the same for every row and the "
            "total is their sum, the fastest of the runs listed; the energy check is outside every timer; CPU "
            "speed-ups divide CPU times only"
            + ("; ours' graph is that of its coarse grid" if coarse_to_fine else "") + "):", ""]
        lines += _table(["method", "device", "solved grid", "graph nodes",
                         " + ".join(("energy", "cut", "cleanup") + (("refine",) if coarse_to_fine else ())
                                    + (("coarse attempt",) if fell_back else ())) + " (s)",
                         "total (s)", "peak memory (MB)", "CPU speed-up vs uncropped / cropped",
                         "energy gap (relative, vs the uncropped minimum)", "Dice", "measured at"], table)
    acc = []
    hard = [r for r in rows if r["experiment"] == "accuracy hard 1 mm"]
    osteo = [r for r in rows if r["experiment"].startswith("accuracy osteoporotic")]
    for label, group in (("hard phantoms at 1 mm", hard), ("osteoporotic phantoms at 0.8x0.8x3 mm", osteo)):
        if group:
            acc.append([f"bone Dice, {len(group)} {label}: mean (min)",
                        f"{_fmt(sum(r['dice'] for r in group) / len(group), 4)} ({_fmt(min(r['dice'] for r in group), 4)})",
                        at(group[0])])
    for r in rows:
        if r["experiment"].startswith("joint space"):
            acc.append([f"{r['experiment']}: gap voxels left open per side; femur and pelvis apart",
                        f"{_fmt(r.get('gap_open'), 3)}; {_fmt(r.get('joint_open'))}", at(r)])
    for r in rows:
        if r["experiment"].startswith("size"):
            stages = r.get("stages_s") or {}
            acc.append([f"{_shape(r['shape'])}, {r['method']}, {r['device']}: total (energy + cut + cleanup), Dice",
                        f"{_fmt(r['time_s'], 1)} s ({' + '.join(_fmt(stages.get(k), 1) for k in ('energy', 'graph_cut', 'cleanup'))}), "
                        f"{_fmt(r.get('dice'), 4)}", at(r)])
    lines += ["", "**BE accuracy** (`bench_bone`, simple phantoms):", ""]
    lines += _table(["measurement", "result", "measured at"], acc)
    return lines


def _accuracy_sections(accuracy: dict, at: str) -> list:
    """The BE + AFS table of ``bench_accuracy.json``."""
    experiments = accuracy["experiments"]
    table = []
    for name in ("anatomic 1 mm", "anatomic 0.8x0.8x3 mm", "anatomic 3 mm", "anatomic 0.65x0.65x0.8 mm",
                 "anatomic sharp kernel 0.8x0.8x3 mm", "regression hard"):
        e = experiments.get(name)
        if not e:
            continue
        table.append([name if name != "regression hard" else "old `hard` preset (regression)", e["cases"],
                      f"{_fmt(e['mean_bone_dice'])} ({_fmt(e['min_bone_dice'])})",
                      f"{round(100 * e['ok_share'])} % of {e['natural_sides']}", e["confidently_wrong"],
                      f"{_fmt(e['ok_mean_dice_head'])} / {_fmt(e['ok_mean_dice_acetabulum'])}",
                      f"{_fmt(e['ok_mean_centre_mm'], 2)} ({_fmt(e['ok_max_centre_mm'], 2)})",
                      f"{_fmt(e['ok_mean_radius_mm'], 2)} ({_fmt(e['ok_max_radius_mm'], 2)})", at])
    lines = ["**BE + AFS on unseen phantoms** (`bench_accuracy`; errors on the sides reported `ok`; "
             "confidently wrong: `ok` or `truncated` with the centre more than 2 mm off):", ""]
    lines += _table(["phantoms", "cases", "bone Dice mean (min)", "natural sides ok", "confidently wrong",
                     "ok sides: Dice head / acetabulum", "centre error mean (max), mm", "radius error mean (max), mm",
                     "measured at"], table)
    other = []
    osteo = experiments.get("anatomic osteoporotic 0.8x0.8x3 mm")
    if osteo:
        other.append(["BE", "anatomic osteoporotic 0.8x0.8x3 mm: bone Dice mean (min)",
                      # four places: the target is 0.95, and 0.9498 is not 0.950
                      f"{osteo['mean_bone_dice']:.4f} ({osteo['min_bone_dice']:.4f})", at])
    speed = experiments.get("speed 3 mm pelvis")
    if speed:
        low, high = speed["total_range_s"]
        other.append(["BE + AFS", f"3 mm pelvis {_shape(speed['shape'])}, warm, median of {speed['repeats']}: "
                      "BE + AFS (range of the total)",
                      f"{_fmt(speed['bone_s'], 2)} + {_fmt(speed['afs_s'], 2)} s ({_fmt(low, 2)}-{_fmt(high, 2)})", at])
    targets = {f"{e} {t}": met for e, r in experiments.items() for t, met in r.get("targets", {}).items()}
    missed = [t for t, met in targets.items() if not met]
    other.append(["BE + AFS", "targets not met", ", ".join(missed) or "none", at])
    return lines, other


def _other_lines(results: Path, history: CodeHistory) -> list:
    """Dataset, kernels, models and AAR lines: (stage, measurement, result, measured at)."""
    out = []
    dataset = _load(results, "bench_dataset")
    if dataset:
        at = _file_cell(history, dataset, "bench_dataset", results)
        out += [["dataset", f"{'x'.join(map(str, r.get('shape') or dataset['shape']))}, {r['workers']} worker(s), "
                            f"{r['scheduler']}",
                 f"{_fmt(r['cases_per_min'], 1)} cases/min, scaling {_fmt(r.get('scaling_efficiency'), 2)}, "
                 f"overhead {_fmt(100 * r['overhead_fraction'], 1)} % per case"
                 + (f", CPU busy {_fmt(100 * r['cpu_utilisation'], 0)} %, time in BE / AFS / load + write "
                    f"{_fmt(100 * r['stage_share']['bone'], 0)} / {_fmt(100 * r['stage_share']['afs'], 0)} / "
                    f"{_fmt(100 * (r['stage_share']['load'] + r['stage_share']['write']), 0)} %"
                    if r.get("stage_share") else "")
                 + (f"; regeneration of every case {_fmt(r['regenerate_cases_per_min'], 1)} cases/min, with "
                    f"nothing changed {_fmt(r['unchanged_regenerate_s'], 1)} s"
                    if r.get("regenerate_cases_per_min") is not None else ""), at] for r in dataset["rows"]]
    kernels = _load(results, "bench_kernels")
    if kernels:
        at = _file_cell(history, kernels, "bench_kernels", results)
        out += [["kernels", k, timings, at] for k, timings in _kernel_timings(kernels, digits=2).items()]
    models = _load(results, "bench_models")
    if models:
        at = _file_cell(history, models, "bench_models", results)
        epochs = (models.get("settings") or {}).get("epochs") or models.get("epochs") or "preset"
        budget = f"{models.get('preset') or models.get('size')}, {epochs} epochs"

        def ci(r, metric, key=None, digits=3):
            half = (r.get("ci95") or {}).get(metric)
            half = half.get(key) if key and isinstance(half, dict) else half
            value = r[metric][key] if key else r[metric]
            return _fmt(value, digits) + (f" ± {_fmt(half, digits)}" if half is not None else "")

        out += [[f"models ({budget}, {r.get('n_seeds', 1)} seed(s))", r["model"],
                 f"Dice hips {ci(r, 'dice', 'mean_hips')}, HD95 {ci(r, 'hd95', 'mean_hips', 1)} mm, "
                 f"ASSD {ci(r, 'assd', 'mean_hips', 1)} mm"
                 + (f" (each hip class kept to its largest component: HD95 {ci(r, 'hd95_largest', 'mean_hips', 1)} mm, "
                    f"ASSD {ci(r, 'assd_largest', 'mean_hips', 1)} mm)" if r.get("hd95_largest") else "")
                 + f", train {ci(r, 'train_s', digits=0)} s, "
                 f"infer {ci(r, 'infer_s_per_case', digits=2)} s/case, {ci(r, 'peak_mem_mb', digits=0)} MB", at]
                for r in models["results"]]
    aar = _load(results, "bench_aar")
    if aar:
        at = _file_cell(history, aar, "bench_aar", results)
        seeds = aar.get("n_seeds", 1)
        for name, values in aar["strategies"].items():
            rounds = (aar.get("per_round") or {}).get(name)
            by_round = ("after " + " / ".join(str(r["corrections"]) for r in rounds) + " corrections: "
                        + " / ".join(f"{_fmt(r['mean'])} ± {_fmt(r['ci95'])}" for r in rounds) if rounds
                        else " ".join(_fmt(v) for v in values))
            auc = (aar.get("auc") or {}).get(name)
            gain = (aar.get("auc_vs_random") or {}).get(name)
            reach = (aar.get("corrections_to_target") or {}).get(name)
            text = f"{by_round}" + (f"; area under Dice vs corrections {_fmt(auc['mean'])} ± {_fmt(auc['ci95'])}"
                                    if auc else "")
            text += (f", minus random's {_fmt(gain['mean'])} ± {_fmt(gain['ci95'])}" if gain else "")
            text += (f"; reached its seed's target Dice (round 0 plus {_fmt(aar.get('target_gain'), 1)} of the gap "
                     f"to 1) in {reach['reached']} of {seeds} seeds"
                     + (f" (median {_fmt(reach['median_of_reached'], 0)} corrections)" if reach["reached"] else "")
                     if reach else "")
            out.append(["AAR", f"{name}: mean Dice by round ± 95 % interval over {seeds} seed(s)", text, at])
        if aar.get("winner"):
            out.append(["AAR", "better than random selection", aar["winner"], at])
    partial = _load(results, "bench_partial_volume")
    if partial:
        at = _file_cell(history, partial, "bench_partial_volume", results)
        out += [["partial volume", f"{name}: acetabulum Dice, ours / less its voxels under half bone; bone Dice, "
                 "ours / a perfect reader",
                 f"{_fmt(e['ok_mean_dice_acetabulum'])} / {_fmt(e['ok_mean_dice_acetabulum_reader'])}; "
                 f"{_fmt(e['mean_bone_dice'], 4)} / {_fmt(e['mean_bone_dice_reader'], 4)}", at]
                for name, e in partial["experiments"].items()]
    slabs = _load(results, "bench_real_slabs")
    if slabs:
        at = _file_cell(history, slabs, "bench_real_slabs", results)
        thin = max(slabs["spacing_mm"])  # the slice axis: the coarsest, as bench_real_slabs takes it
        out.append(["BE", f"real abdominal CT at {_fmt(thin * slabs['factor'], 0)} mm slabs ({slabs['factor']} of its "
                    f"{_fmt(thin, 0)} mm slices averaged): Dice against its own {_fmt(thin, 0)} mm mask, mean (per phase)",
                    f"{_fmt(slabs['mean_dice'], 4)} ({', '.join(_fmt(p['dice'], 4) for p in slabs['phases'])})", at])
    run_io = _load(results, "bench_run_io")
    if run_io:
        at = _file_cell(history, run_io, "bench_run_io", results)
        for r in run_io["rows"]:
            stages = r["stages_s"]
            verdict = "met" if r["target_met"] else "not met"
            out.append(["run", f"`thagpu run --device cpu` against reading the CT and writing its labels, {r['volume']}, "
                        f"{'x'.join(str(n) for n in r['shape'])}",
                        f"{_fmt(r['run_s'], 1)} s against {_fmt(r['read_write_s'], 2)} s: {_fmt(r['ratio'], 1)}x "
                        f"(target <= {_fmt(r['target_ratio'], 0)}x: {verdict}); load {_fmt(stages.get('load'), 1)}, "
                        f"BE {_fmt(stages.get('bone'), 1)}, AFS {_fmt(stages.get('afs'), 1)}, "
                        f"write {_fmt(stages.get('write'), 1)} s", at])
    return out


def _file_cell(history: CodeHistory, result: dict, name: str, results: Path) -> str:
    stamp = result.get("machine", {}) if isinstance(result, dict) else {}
    return history.freshness(stamp.get("commit"), stamp.get("date"), CODE_PATHS[name], results / f"{name}.json")


def _kernel_timings(result: dict, digits: int) -> dict:
    """Per kernel of a ``bench_kernels`` result, its forms' median times in one cell."""
    by_kernel: dict = {}
    for row in result["rows"]:
        by_kernel.setdefault(row["kernel"], []).append(f"{row['form']} {_fmt(row['median_ms'], digits)} ms")
    return {kernel: "; ".join(forms) for kernel, forms in by_kernel.items()}


def _gpu_lines(results: Path, history: CodeHistory) -> list:
    """The GPU figures: ``*_gpu.json`` and ``gpu/`` (the files of the last session on a GPU)."""
    out = []
    folder = results / "gpu"

    def read(name):
        path = folder / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def cell(name, stamp=None):
        stamp = stamp or {}
        return history.freshness(stamp.get("commit"), stamp.get("date"), CODE_PATHS["gpu"], folder / name)

    for name, label in (("bone_gpu_speed.json", "BE ours on the GPU"), ("bone_gpu_full.json", "BE ours on the GPU")):
        r = read(name)
        if r:
            stages = r.get("stages_s") or {}
            out.append([f"gpu/{name}", f"{label}, {_shape(r['shape'])} (warm): total (energy + cut + cleanup), Dice",
                        f"{_fmt(r['time_s'], 3)} s ({' + '.join(_fmt(stages.get(k), 3) for k in ('energy', 'graph_cut', 'cleanup'))}), "
                        f"{_fmt(r.get('dice'), 4)}", cell(name, r)])
    r = read("bone_parity.json")
    if r:
        out.append(["gpu/bone_parity.json", f"BE CPU against GPU, {_shape(r['shape'])}: mask voxels differing; cut energies",
                    f"{r['mask_voxels_differing']} of {r['mask_voxels_cpu']}; {_fmt(r['cut_energy_cpu'], 3)} / "
                    f"{_fmt(r['cut_energy_gpu'], 3)}", cell("bone_parity.json", r)])
    r = read("bench_kernels_gpu.json")
    if r:
        stamp = r.get("machine", {})
        at = history.freshness(stamp.get("commit"), stamp.get("date"), CODE_PATHS["bench_kernels"],
                               folder / "bench_kernels_gpu.json")
        out += [["gpu/bench_kernels_gpu.json", f"kernel {k} on the GPU", timings, at]
                for k, timings in _kernel_timings(r, digits=3).items()]
    r = read("afs_full_gpu_warm.json")
    if r:
        last = r[sorted(r, key=int)[-1]]
        out.append(["gpu/afs_full_gpu_warm.json", f"BE + AFS on the GPU, 512x512x300, run {len(r)} of {len(r)}",
                    f"{_fmt(last['bone_s'], 3)} + {_fmt(last['afs_s'], 3)} s", cell("afs_full_gpu_warm.json")])
    accuracy = _load(results, "bench_accuracy_gpu")
    if accuracy:
        at = history.freshness(accuracy["machine"].get("commit"), accuracy["machine"].get("date"), CODE_PATHS["gpu"],
                               results / "bench_accuracy_gpu.json")
        for name, e in accuracy["experiments"].items():
            s = e.get("summary")
            if s:
                out.append(["bench_accuracy_gpu.json", f"{name} (old benchmark): Dice bone; head / acetabulum; centre mean (max)",
                            f"{_fmt(s['mean_dice_bone'])}; {_fmt(s['mean_dice_femoral_head'])} / "
                            f"{_fmt(s['mean_dice_acetabulum'])}; {_fmt(s['mean_abs_center_mm'], 2)} "
                            f"({_fmt(s['max_abs_center_mm'], 2)}) mm", at])
            elif "bone_s" in e:
                out.append(["bench_accuracy_gpu.json", f"{name}: BE + AFS", f"{_fmt(e['bone_s'], 2)} + {_fmt(e['afs_s'], 2)} s", at])
    return out


def summary_markdown(results: Path = RESULTS, root: Path = ROOT) -> tuple:
    """The benchmark summary from the result files alone: (summary dict, markdown).

    A pure function of the files under ``results`` and of the git history in ``root``: the machines
    named are those the files record, not the one running this, so the README's section is the same
    wherever it is regenerated. Each row names the commit and date its file was measured at, and says
    :data:`STALE` where the code it describes (:data:`CODE_PATHS`) changed after that commit.

    Parameters
    ----------
    results : Path
        The folder of result files (``benchmarks/results``).
    root : Path
        The repository, for the git history.

    Returns
    -------
    summary : dict
        The figures and "measured at" cells, for ``summary.json``.
    markdown : str
        The section that goes between the README's ``benchmark-summary`` markers.
    """
    results, history = Path(results), CodeHistory(root)
    summary: dict = {}
    machines: dict = {}
    lines = []
    bone = _load(results, "bench_bone")
    if bone:
        machines.setdefault(_machine_name(bone["machine"]), []).append("bench_bone")

        def bone_cell(commit, date):
            return history.freshness(commit, date, CODE_PATHS["bench_bone"], results / "bench_bone.json")

        lines += _bone_sections(bone, bone_cell) + [""]
        summary["bone"] = bone["rows"]
    other = []
    accuracy = _load(results, "bench_accuracy")
    if accuracy:
        machines.setdefault(_machine_name(accuracy["machine"]), []).append("bench_accuracy")
        at = _file_cell(history, accuracy, "bench_accuracy", results)
        table, other = _accuracy_sections(accuracy, at)
        lines += table + [""]
        summary["accuracy"] = {"experiments": accuracy["experiments"], "measured_at": at}
    other += _other_lines(results, history)
    for name in ("bench_dataset", "bench_kernels", "bench_models", "bench_aar", "bench_partial_volume",
                 "bench_real_slabs", "bench_run_io"):
        result = _load(results, name)
        if result:
            machines.setdefault(_machine_name(result.get("machine", {})), []).append(name)
    if other:
        lines += ["**Other benchmarks:**", ""] + _table(["stage", "measurement", "result", "measured at"], other) + [""]
    gpu = _gpu_lines(results, history)
    if gpu:
        info = _load(results, "bench_accuracy_gpu")
        name = _machine_name(info["machine"]) if info else "a GPU machine"
        machines.setdefault(name, []).append("gpu/, bench_accuracy_gpu")
        lines += ["**GPU** (files of the sessions on a GPU; newer files carry the commit they ran at, older ones "
                  "none, and then the row says whether the code changed after the file was committed):", ""]
        lines += _table(["file", "measurement", "result", "measured at"], gpu) + [""]
    summary["other"] = other
    summary["gpu"] = gpu
    summary["machines"] = machines
    head = ["Generated by `python -m benchmarks.run_all --summary-only` from the files in `benchmarks/results/`; "
            "not edited by hand (`tests/test_readme_figures.py` fails when it differs from what they give). "
            "\"measured at\" is the commit and date of the code a file was made with; rows marked "
            f"{STALE} were measured before the last change to the code they describe.", "",
            "Machines (as the result files record them): "
            + "; ".join(f"{m}: {', '.join(files)}" for m, files in machines.items()) + ".", ""]
    return summary, "\n".join(head + lines).rstrip("\n") + "\n"


def replace_readme_section(text: str, markdown: str) -> str:
    """``text`` (a README) with the part between the ``benchmark-summary`` markers replaced by ``markdown``."""
    if README_START not in text or README_END not in text:
        raise ValueError(f"the README lacks the {README_START} / {README_END} markers")
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    return before + README_START + "\n" + markdown + README_END + after


def _update_readme(markdown: str) -> None:
    readme = ROOT / "README.md"
    atomic_write_text(readme, replace_readme_section(readme.read_text(encoding="utf-8"), markdown))


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
    summary, markdown = summary_markdown()
    failed = [name for name, run in runs.items() if run["returncode"]]
    atomic_write_text(RESULTS / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(RESULTS / "summary.md", "## Benchmark summary\n\n" + markdown)
    _update_readme(markdown)
    print(markdown)
    if failed:  # the summary shows their older result files, with the commits those were made at
        print(f"Failed in this run (older results shown): {', '.join(failed)}", file=sys.stderr)
    return 1 if any(r["returncode"] for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
