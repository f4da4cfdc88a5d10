"""The ``thagpu`` command line.

Every error a user can cause prints one line on stderr and exits with status
2 (``--debug`` shows the traceback instead); a bug exits with status 1 and
says to run with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table

from ._version import __version__
from .device import DEVICES
from .errors import ThagpuError, describe
from .progress import make_progress, stage_progress

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hip CT -> THA-planning segmentation dataset (bone extraction, acetabulum "
                       "and femoral head segmentation, active-learning refinement), on CPU or GPU.")
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)
_STATE = {"debug": False}

SIZES = ("tiny", "small", "full")
# As thagpu.phantom.PRESETS / DEFAULT_PRESET (kept here so `--help` does not import the phantom).
PRESETS = ("anatomic", "anatomic_oa", "anatomic_osteoporotic", "anatomic_implant", "anatomic_truncated",
           "anatomic_sharp_kernel", "easy", "hard", "implant", "truncated", "osteoporotic")
DEFAULT_PRESET = "anatomic"


def _version(value: bool):
    if value:
        out.print(f"thagpu {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each stage does."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    _STATE["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # ITK prints its warnings (an empty DICOM folder's "No Series were found", with its source file
    # and line) on stderr ahead of the one line that says the same; --debug and --verbose keep them.
    import SimpleITK as sitk
    sitk.ProcessObject.SetGlobalWarningDisplay(debug or verbose)


def _choice(value: str, allowed, what: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{what} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _progress(*extra_columns):
    """Progress on stderr: a rich bar (``extra_columns`` after the count) on a terminal, else one line per step."""
    return make_progress(console, *extra_columns)


@app.command()
def phantom(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write <case>/ct.nii.gz, gt.nii.gz, gt.json."),
    n: int = typer.Option(1, "--n", min=1, help="Number of phantoms."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first phantom; the others take seed+1, ..."),
    size: str = typer.Option("small", "--size", help="tiny | small | full (512 x 512 x 300)."),
    preset: str = typer.Option(DEFAULT_PRESET, "--preset",
                               help="anatomic (default) | anatomic_oa | anatomic_osteoporotic | anatomic_implant | "
                                    "anatomic_truncated | anatomic_sharp_kernel | easy | hard | implant | truncated | "
                                    "osteoporotic."),
):
    """Write hip CT phantoms with exact ground truth."""
    from .phantom import make_phantom, write_phantom
    _choice(size, SIZES, "--size")
    _choice(preset, PRESETS, "--preset")
    with _progress() as progress:
        task = progress.add_task("phantoms", total=n)
        for i in range(n):
            case = make_phantom(seed + i, size=size, preset=preset)
            paths = write_phantom(case, out_dir)
            progress.advance(task)
    out.print(f"wrote {n} phantom(s) to {out_dir} (last: {paths['ct'].parent.name})")


@app.command()
def run(
    inputs: List[Path] = typer.Argument(..., help="NIfTI/NRRD/MHA files or DICOM series folders."),
    out_dir: Path = typer.Option(..., "--out", help="Outputs go to OUT/<case>/."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or YAML overrides."),
):
    """Segment CT volumes: labels.nii.gz and measurements.json per case."""
    from .config import load_config
    from .device import resolve_device
    from .memory import release_freed_memory
    from .pipeline import run_case, unique_case_ids
    _choice(device, DEVICES, "--device")
    config = load_config(config_file)
    device = resolve_device(device)
    failures = []
    with _progress() as progress:
        task = progress.add_task("cases", total=len(inputs))
        # Inputs of one name (two folders' ct.nii.gz under parents of one name) get -2, -3...: each
        # case its own folder, none overwriting another of this run.
        for path, case_id in zip(inputs, unique_case_ids(inputs)):
            try:
                result = run_case(path, out_dir, config=config, device=device, case_id=case_id)
                progress.console.print(f"{result.case_id}: done ({sum(result.measurements['timings_s'].values()):.1f} s)")
                result = None  # its arrays go before the heap is trimmed
                release_freed_memory()
            except ThagpuError as error:
                if _STATE["debug"] or len(inputs) == 1:
                    raise  # one input: its error is the command's one line, with no progress line after it
                failures.append(str(error))
                if len(inputs) > 1:
                    progress.console.print(f"failed: {error}", markup=False, highlight=False)
            progress.advance(task)
    if failures:
        raise ThagpuError(f"{len(failures)} of {len(inputs)} case(s) failed (see above)")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo-out"), "--out", help="Working folder."),
    size: str = typer.Option("small", "--size", help="tiny | small | full."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    n: int = typer.Option(2, "--n", min=1, help="Number of phantoms."),
    seed: int = typer.Option(1000, "--seed", help="Seed of the first phantom."),
    preset: str = typer.Option(DEFAULT_PRESET, "--preset", help="Phantom preset (see `thagpu phantom --help`)."),
):
    """Make phantoms, run the pipeline on them, print accuracy and timings."""
    from .demo import run_demo
    _choice(size, SIZES, "--size")
    _choice(preset, PRESETS, "--preset")
    _choice(device, DEVICES, "--device")
    rows, summary = run_demo(out_dir, size=size, device=device, n=n, seed=seed, preset=preset,
                             progress_factory=_progress)
    table = Table(title=f"thagpu demo: {n} {preset} phantom(s), size {size}, device {summary['device']}",
                  caption="Dice against the phantom truth (bone = any label); errors of the worst side "
                          "(centre distance, |radius|, |angle|); seconds per stage")
    for column in summary["columns"]:
        table.add_column(column, justify="left" if column == "case" or column.startswith("status") else "right",
                         no_wrap=column == "case")
    for row in rows:
        table.add_row(*["-" if v is None else f"{v:.2f}" if isinstance(v, float) and column.endswith((" s", "mm", "deg"))
                        else f"{v:.3f}" if isinstance(v, float) else str(v) for v, column in zip(row, summary["columns"])])
    out.print(table)
    targets = summary["summary"]
    out.print("mean Dice femoral head {:.3f}, acetabulum {:.3f}; worst centre error {} mm, radius error {} mm".format(
        targets["mean_dice_femoral_head"] or 0.0, targets["mean_dice_acetabulum"] or 0.0,
        _fmt(targets["max_abs_center_mm"]), _fmt(targets["max_abs_radius_mm"])))
    out.print(f"results under {out_dir}")


dataset_app = typer.Typer(no_args_is_help=True, help="Build, inspect and export datasets of many cases.")
app.add_typer(dataset_app, name="dataset")


#: Options that ``dataset build`` and ``dataset regenerate`` share (the same engine runs both).
_SCHEDULER = typer.Option("local", "--scheduler", help="local | cuda | tcp://HOST:PORT | tls://HOST:PORT.")
_WORKERS = typer.Option(None, "--workers", min=1,
                        help="Worker processes of a local cluster; GPUs used by a cuda cluster (default: all).")
_WORKERS_PER_GPU = typer.Option(2, "--workers-per-gpu", min=1,  # thagpu.dataset.cluster.DEFAULT_WORKERS_PER_GPU
                                help="Worker processes on each GPU of a cuda cluster (one in host work while "
                                     "another's kernels run); only with --scheduler cuda.")
_DEVICE = typer.Option("auto", "--device", help="auto | cpu | gpu.")
_TLS_CA = typer.Option(None, "--tls-ca-file", help="CA certificate (tls://).")
_TLS_CERT = typer.Option(None, "--tls-cert", help="Client certificate (tls://).")
_TLS_KEY = typer.Option(None, "--tls-key", help="Client key (tls://).")


@dataset_app.command("build")
def dataset_build(
    source: Path = typer.Argument(..., help="Folder searched recursively, or a CSV/JSON manifest."),
    out_dir: Path = typer.Option(..., "--out", help="Dataset folder: cases/, ledger.sqlite, report.html."),
    scheduler: str = _SCHEDULER,
    workers: Optional[int] = _WORKERS,
    workers_per_gpu: int = _WORKERS_PER_GPU,
    device: str = _DEVICE,
    resume: bool = typer.Option(False, "--resume", help="Continue: only cases not done, and changed inputs."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or YAML overrides."),
    tls_ca_file: Optional[Path] = _TLS_CA,
    tls_cert: Optional[Path] = _TLS_CERT,
    tls_key: Optional[Path] = _TLS_KEY,
):
    """Process every CT of SOURCE into a dataset, one Dask task per case."""
    import time

    from .config import load_config
    from .dataset import TLSFiles, build_dataset
    _choice(device, DEVICES, "--device")
    config = load_config(config_file)
    started = time.perf_counter()
    with _progress(TextColumn("{task.fields[rate]}")) as progress:  # cases/min
        summary = build_dataset(source, out_dir, scheduler=scheduler, workers=workers, device=device,
                                resume=resume, config=config, tls=TLSFiles(tls_ca_file, tls_cert, tls_key),
                                workers_per_gpu=workers_per_gpu, progress=_build_progress(progress, started))
    now = ", ".join(f"{n} {status}" for status, n in sorted(summary.finished_now.items())) or "nothing to do"
    total = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
    out.print(f"{summary.inputs} input(s), {summary.processed} processed in {summary.elapsed_s:.1f} s "
              f"({summary.cases_per_min:.1f} cases/min): {now}")
    out.print(f"dataset {out_dir}: {total}; QC report {summary.report}")
    _fail_on_failed_cases(summary)


def _build_progress(progress, started: float):
    """The ``progress(finished, total, case_id, status)`` callback of a build or regeneration."""
    import time
    task = progress.add_task("cases", total=None, rate="")

    def report(finished: int, total: int, case_id: str, status: str) -> None:
        minutes = (time.perf_counter() - started) / 60.0
        rate = f"{finished / minutes:.1f} cases/min" if finished and minutes > 0 else ""
        progress.update(task, total=total, completed=finished, rate=rate)
        if status and status != "done":
            progress.console.print(f"{case_id}: {status}", markup=False, highlight=False)

    return report


@dataset_app.command("regenerate")
def dataset_regenerate(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder made by 'thagpu dataset build'."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or YAML overrides of the new generation."),
    only: str = typer.Option("changed", "--only",
                             help="changed (input, thagpu version or config differ) | failed | all."),
    scheduler: str = _SCHEDULER,
    workers: Optional[int] = _WORKERS,
    workers_per_gpu: int = _WORKERS_PER_GPU,
    device: str = _DEVICE,
    discard: bool = typer.Option(False, "--discard", help="Drop an unfinished regeneration and its files."),
    tls_ca_file: Optional[Path] = _TLS_CA,
    tls_cert: Optional[Path] = _TLS_CERT,
    tls_key: Optional[Path] = _TLS_KEY,
):
    """Rebuild the pseudo labels as a new generation; manual and model-refined labels are kept."""
    import time

    from .config import load_config
    from .dataset import TLSFiles
    from .dataset.generations import ONLY, regenerate_dataset
    _choice(device, DEVICES, "--device")
    _choice(only, ONLY, "--only")
    config = load_config(config_file)
    started = time.perf_counter()
    with _progress(TextColumn("{task.fields[rate]}")) as progress:
        summary = regenerate_dataset(dataset_dir, config=config, only=only, scheduler=scheduler, workers=workers,
                                     device=device, discard=discard, tls=TLSFiles(tls_ca_file, tls_cert, tls_key),
                                     workers_per_gpu=workers_per_gpu, progress=_build_progress(progress, started))
    if discard:
        out.print(f"dropped unfinished generation {summary.generation}" if summary.generation
                  else "no unfinished regeneration to drop")
        return
    if summary.generation is None:
        out.print(f"nothing to regenerate (--only {only}): every case is current; took {summary.elapsed_s:.1f} s")
        return
    now = ", ".join(f"{n} {status}" for status, n in sorted(summary.finished_now.items())) or "nothing left to run"
    out.print(f"generation {summary.generation}{' (resumed)' if summary.resumed else ''} is current: "
              f"{summary.processed} case(s) run in {summary.elapsed_s:.1f} s "
              f"({summary.cases_per_min:.1f} cases/min): {now}")
    if summary.review:
        out.print(f"manual labels to look at again ({len(summary.review)}): {', '.join(summary.review)}")
    out.print(f"changes: 'thagpu dataset status {dataset_dir}' and the QC report {summary.report}")
    _fail_on_failed_cases(summary)


def _fail_on_failed_cases(summary) -> None:
    """Exit non-zero (one line) when cases failed in this run: a script or CI step building a dataset
    must not read a partial build as a whole one. The cases that worked are in the dataset."""
    failed = summary.finished_now.get("failed", 0)
    if failed:
        raise ThagpuError(f"{failed} of {summary.processed} case(s) failed (listed above, with their reasons in "
                          "the QC report); the others are in the dataset")


@dataset_app.command("restore")
def dataset_restore(
    dataset_dir: Path = typer.Argument(..., help="A regenerated dataset folder."),
    generation: int = typer.Argument(..., min=1, help="The generation to make current again."),
):
    """Make an earlier generation's pseudo labels current again (until it is pruned)."""
    from .dataset.generations import restore_generation
    restore_generation(dataset_dir, generation)
    out.print(f"generation {generation} is current again in {dataset_dir}")


@dataset_app.command("prune")
def dataset_prune(
    dataset_dir: Path = typer.Argument(..., help="A regenerated dataset folder."),
):
    """Delete the files of earlier generations that the current one does not use (no restore after)."""
    from .dataset.generations import prune_generations
    result = prune_generations(dataset_dir)
    pruned = ", ".join(str(g) for g in result["pruned"]) or "none"
    out.print(f"pruned generation(s) {pruned}: {result['files']} file(s) deleted")


@dataset_app.command("status")
def dataset_status(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder made by 'thagpu dataset build'."),
):
    """Print the ledger of a dataset: one row per case, with totals."""
    from .dataset.engine import LEDGER_NAME
    from .dataset.generations import GenerationLedger, generation_summary
    if not (dataset_dir / LEDGER_NAME).is_file():
        raise ThagpuError(f"{dataset_dir}: is not a dataset folder (no {LEDGER_NAME})")
    with GenerationLedger(dataset_dir / LEDGER_NAME) as ledger:
        rows, counts, generations = ledger.rows(), ledger.counts(), generation_summary(ledger)
    table = Table(title=f"{dataset_dir}: {len(rows)} cases")
    for column in ("case", "status", "right", "left", "load s", "bone s", "afs s", "write s", "total s", "error"):
        table.add_column(column, justify="right" if column.endswith(" s") else "left",
                         no_wrap=column == "case", overflow="fold")
    for row in rows:
        sides = row.get("sides") or {}
        table.add_row(row["case_id"], row["status"],
                      *[(sides.get(side) or {}).get("status") or "" for side in ("right", "left")],
                      *[_fmt(row[key]) for key in ("t_load", "t_bone", "t_afs", "t_write", "t_total")],
                      row["error"] or "")
    out.print(table)
    out.print("totals: " + ", ".join(f"{n} {status}" for status, n in counts.items()) + f" ({len(rows)} cases)")
    if generations:
        _print_generations(generations)


def _print_generations(summary: dict, worst: int = 10) -> None:
    """The generations of a regenerated dataset, then the current one's largest changes."""
    from .dataset.generations import describe_change, largest_changes
    for entry in summary["generations"]:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(entry["counts"].items()))
        out.print(f"generation {entry['generation']} ({entry['state']}): thagpu {entry['version']}, config "
                  f"{entry['config_hash']}, {entry['device'] or '-'}, {entry['only']}; {counts}", markup=False)
    if summary["unfinished"]:
        out.print(f"generation {summary['unfinished']['generation']} is unfinished: "
                  "'thagpu dataset regenerate' resumes it, --discard drops it")
    totals = summary["totals"]
    out.print(f"generation {summary['current']}: {totals['regenerated']} case(s) regenerated, "
              f"{totals['side_status_changes']} side status change(s), median lowest class Dice old vs new "
              f"{_fmt(totals['median_min_dice'])}; manual labels to look at again: "
              f"{', '.join(totals['review']) or 'none'}", markup=False)
    changes = largest_changes(summary["changes"])[:worst]
    if not changes:
        return
    table = Table(title=f"largest changes in generation {summary['current']} (at most {worst})")
    for column in ("case", "status", "lowest Dice", "sides", "manual Dice old / new"):
        table.add_column(column, overflow="fold")
    for case_id, record in changes:
        manual = record.get("manual") or {}
        status, sides = describe_change(record)
        table.add_row(case_id, status, _fmt(record.get("min_dice")), sides or (record.get("note") or ""),
                      f"{_fmt(manual.get('dice_previous'))} / {_fmt(manual.get('dice_new'))}"
                      + (" review" if manual.get("review") else "") if manual else "")
    out.print(table)


@dataset_app.command("export")
def dataset_export(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder made by 'thagpu dataset build'."),
    fmt: str = typer.Option(..., "--format", help="nnunet | msd."),
    out_dir: Path = typer.Option(..., "--out", help="New or empty export folder."),
    split: float = typer.Option(0.8, "--split", help="Fraction of cases for training."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffle (export ids and split)."),
    test_labels: Optional[Path] = typer.Option(None, "--test-labels",
                                               help="Manual labels <case_id>.nii.gz for the test split."),
):
    """Export done cases with hip labels, de-identified, for nnU-Net v2 or MONAI/MSD."""
    from .dataset import export_dataset
    from .dataset.export import FORMATS
    _choice(fmt, FORMATS, "--format")
    summary = export_dataset(dataset_dir, out_dir, fmt=fmt, split=split, seed=seed, test_labels=test_labels)
    out.print(f"exported {summary.n_train} training and {summary.n_test} test case(s) "
              f"({summary.n_manual_test} with manual labels) to {summary.out}; "
              f"{len(summary.skipped)} case(s) not exported")
    out.print(f"id mapping (keep it private, it names the inputs): {summary.mapping}")


refine_app = typer.Typer(no_args_is_help=True,
                         help="Active-learning refinement of a dataset's pseudo labels with MONAI networks.")
app.add_typer(refine_app, name="refine")


def _aar_config(config_file: Optional[Path], preset: Optional[dict] = None, **overrides):
    """The configuration: ``[aar]`` ``preset``, then the file, then the command line (None: not given)."""
    from .aar.networks import NETWORKS
    from .config import load_config
    if overrides.get("model") is not None:
        _choice(overrides["model"], NETWORKS, "--model")
    values = {key: value for key, value in overrides.items() if value is not None}
    return load_config(config_file, overrides={"aar": values} if values else None,
                       defaults={"aar": preset} if preset else None)


def _stage_progress():
    """progress(what, i, n) callbacks drawn as one bar per stage (one line per step in a log)."""
    return stage_progress(console)


@refine_app.command("train")
def refine_train(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder made by 'thagpu dataset build'."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="K of the K-fold split [5]."),
    model: Optional[str] = typer.Option(None, "--model", help="dynunet | segresnet | unet [dynunet]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs per fold [50]."),
    dropout: Optional[float] = typer.Option(None, "--dropout", min=0.0, max=0.95,
                                            help="Dropout while training [0]; above 0, scoring also measures the "
                                                 "Monte-Carlo dropout entropy (queue --strategy epistemic)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or YAML overrides ([aar] section)."),
):
    """Train one round of K fold models on the current labels (continues a stopped round)."""
    from .aar import train_round
    from .device import resolve_device
    _choice(device, DEVICES, "--device")
    config = _aar_config(config_file, folds=folds, model=model, epochs=epochs, dropout=dropout)
    progress, report = _stage_progress()
    with progress:
        round_ = train_round(dataset_dir, config.aar, resolve_device(device), progress=report)
    from .aar import RefineStore
    with RefineStore(dataset_dir) as store:
        folds = store.latest_round()["folds"]  # a continued round keeps the settings it began with
    out.print(f"round {round_}: {folds} fold models trained under {dataset_dir}/refine/round_{round_:03d}")


@refine_app.command("score")
def refine_score(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder with a trained round."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    fuse: bool = typer.Option(False, "--fuse", help="Where all folds agree but not with the label, propose "
                                                    "the prediction (recorded as model-refined)."),
):
    """Predict every case out of fold and store its uncertainty score."""
    from .aar import score_round
    from .device import resolve_device
    _choice(device, DEVICES, "--device")
    progress, report = _stage_progress()
    with progress:
        scores = score_round(dataset_dir, resolve_device(device), fuse=fuse, progress=report)
    epistemic = any("epistemic" in item["parts"] for item in scores.values())
    table = Table(title=f"{dataset_dir}: uncertainty, most uncertain first")
    columns = ["case", "fold", "score", "1 - Dice (hips)", "boundary mm", "disagree ml", "label"]
    for column in columns + (["MC-dropout entropy"] if epistemic else []):
        table.add_column(column, justify="left" if column in ("case", "label") else "right")
    for case_id, item in sorted(scores.items(), key=lambda kv: -kv[1]["score"]):
        parts = item["parts"]
        table.add_row(case_id, str(item["fold"]), f"{item['score']:.3f}", f"{parts['dice_uncertainty']:.3f}",
                      f"{parts['boundary_mm']:.2f}", f"{parts['disagree_ml']:.1f}", parts.get("label_source", ""),
                      *([_fmt(parts.get("epistemic"))] if epistemic else []))
    out.print(table)


@refine_app.command("queue")
def refine_queue(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder with a scored round."),
    budget: int = typer.Option(..., "--budget", min=1, help="Number of cases to queue."),
    out_dir: Path = typer.Option(..., "--out", help="New or empty queue folder."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    strategy: str = typer.Option("disagreement", "--strategy",
                                 help="disagreement (label vs out-of-fold prediction) | epistemic (Monte-Carlo "
                                      "dropout entropy; the round must be trained with --dropout)."),
):
    """Export the most uncertain cases without a manual label for correction."""
    from .aar import make_queue
    from .device import resolve_device
    _choice(device, DEVICES, "--device")
    _choice(strategy, ("disagreement", "epistemic"), "--strategy")
    entries = make_queue(dataset_dir, budget, out_dir, resolve_device(device), strategy=strategy)
    for entry in entries:
        out.print(f"{entry.rank:3d}. {entry.case_id} (score {entry.score:.3f}) -> {out_dir / entry.folder}")
    out.print(f"queued {len(entries)} case(s) in {out_dir}: correct each label.nii.gz, then "
              f"'thagpu refine import {dataset_dir} {out_dir}'")


@refine_app.command("import")
def refine_import(
    dataset_dir: Path = typer.Argument(..., help="The dataset folder."),
    folder: Path = typer.Argument(..., help="A corrected queue folder, or <case_id>.nii.gz label files."),
):
    """Record corrected labels as manual (checked: the case's grid, schema values, hips present)."""
    from .aar import import_labels
    imported = import_labels(dataset_dir, folder)
    out.print(f"imported {len(imported)} manual label(s): {', '.join(imported)}")


@refine_app.command("simulate")
def refine_simulate(
    out_dir: Path = typer.Option(..., "--out", help="Working folder; simulation.json and .png go here."),
    cases: int = typer.Option(..., "--cases", min=2, help="Number of phantoms."),
    rounds: int = typer.Option(..., "--rounds", min=1, help="Rounds after round 0."),
    budget: int = typer.Option(..., "--budget", min=1, help="Cases corrected per round and strategy."),
    size: str = typer.Option("small", "--size",
                             help="tiny | small: phantom size and network budget (tiny: 4.5 mm, 2 folds x 10 "
                                  "epochs of a width-8 UNet; small: 3 mm, 3 folds x 15 epochs, width 16)."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="K of the K-fold split (default: the size's)."),
    model: Optional[str] = typer.Option(None, "--model", help="dynunet | segresnet | unet (default: unet)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs per fold (default: the size's)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", min=0.0, max=0.95,
                                            help="Dropout while training [0]; the epistemic strategy needs it > 0."),
    strategies: str = typer.Option("disagreement,random", "--strategies",
                                   help="Comma-separated: disagreement, random, epistemic (MC-dropout entropy)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    workers: int = typer.Option(2, "--workers", min=1, help="Dask workers of the dataset build."),
    seed: int = typer.Option(0, "--seed", help="Phantom and random-strategy seed."),
    fuse: bool = typer.Option(False, "--fuse", help="Disagreement strategy also writes model-refined labels."),
    config_file: Optional[Path] = typer.Option(None, "--config",
                                               help="TOML or YAML overrides ([aar] section, over the size's)."),
):
    """Compare strategies that choose the cases to correct (disagreement, random, MC dropout), with an oracle."""
    from .aar import simulate
    from .aar.simulate import SIZES as SIM_SIZES
    from .aar.strategies import STRATEGIES
    from .device import resolve_device
    _choice(size, tuple(SIM_SIZES), "--size")
    _choice(device, DEVICES, "--device")
    names = [name.strip() for name in strategies.split(",") if name.strip()]
    for name in names:
        _choice(name, STRATEGIES, "--strategies")
    config = _aar_config(config_file, SIM_SIZES[size], folds=folds, model=model, epochs=epochs, dropout=dropout)
    progress, report = _stage_progress()
    with progress:
        summary = simulate(out_dir, cases=cases, rounds=rounds, budget=budget, size=size, config=config,
                           device=resolve_device(device), seed=seed, workers=workers, fuse=fuse,
                           strategies=names, progress=report)
    for name, values in summary["strategies"].items():
        out.print(f"{name:>12}: mean Dice by round " + " ".join(f"{v:.4f}" for v in values))
    out.print(f"winner: {summary['winner']}; results in {out_dir / 'simulation.json'} and simulation.png")


benchmark_app = typer.Typer(no_args_is_help=True, help="Benchmarks of segmentation networks on a dataset export.")
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("models")
def benchmark_models_command(
    export_dir: Path = typer.Argument(..., help="A folder written by 'thagpu dataset export' (with a test split)."),
    models: Optional[str] = typer.Option(None, "--models",
                                         help="Comma-separated: unet, attention_unet, segresnet, dynunet, unetr, "
                                              "swinunetr (default: the preset's; cpu: unet,segresnet)."),
    preset: str = typer.Option("auto", "--preset",
                               help="auto | cpu | gpu | tiny: spacing, patch, width, epochs, seeds (auto: the "
                                    "device's)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the preset's)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1,
                                        help="Seeds per network, for the 95 % intervals (default: the preset's, 3)."),
    out_dir: Path = typer.Option(..., "--out", help="Results: results.json, results.md, results.png."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    seed: int = typer.Option(0, "--seed", help="The first seed (then seed + 1, ...)."),
):
    """Train each network on the training split per seed, score it on the test split (Dice, HD95, ASSD)."""
    from .device import resolve_device
    from .model_benchmark import PRESETS, benchmark_models
    _choice(preset, ("auto", *PRESETS), "--preset")
    _choice(device, DEVICES, "--device")
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    progress, report = _stage_progress()
    with progress:
        results = benchmark_models(export_dir, out_dir, names, preset=None if preset == "auto" else preset,
                                   epochs=epochs, device=resolve_device(device), seed=seed, seeds=seeds,
                                   progress=report, lines=not console.is_terminal)
    out.print((out_dir / "results.md").read_text(encoding="utf-8"))
    out.print(f"{len(results)} network(s); results in {out_dir}")


def _escape_help(typer_app: typer.Typer) -> None:
    """Escape rich markup in every help text of ``typer_app`` and its sub-apps, in place.

    Typer renders help through rich markup, which swallows a bracketed word such as ``[aar]`` or
    ``[dynunet]`` as an unknown style tag. No help text here means markup, so all of them are
    escaped: the brackets print as written.
    """
    from typer.models import ParameterInfo

    def text(value):
        return escape(value) if isinstance(value, str) else value

    typer_app.info.help = text(typer_app.info.help)
    commands = list(typer_app.registered_commands)
    if typer_app.registered_callback is not None:
        commands.append(typer_app.registered_callback)
    for command in commands:
        command.help = text(command.help)
        if command.callback is not None and command.callback.__doc__:
            command.callback.__doc__ = escape(command.callback.__doc__)
        for default in getattr(command.callback, "__defaults__", None) or ():
            if isinstance(default, ParameterInfo):
                default.help = text(default.help)
    for group in typer_app.registered_groups:
        group.help = text(group.help)
        if group.typer_instance is not None:
            _escape_help(group.typer_instance)


_escape_help(app)


def main(argv=None) -> None:
    """Entry point of the ``thagpu`` script."""
    from .memory import keep_freed_memory
    keep_freed_memory()  # large temporaries reused, not faulted in afresh (thagpu/memory.py)
    try:
        code = app(args=argv, prog_name="thagpu", standalone_mode=False)
    except ThagpuError as error:
        if _STATE["debug"]:
            raise
        console.print(f"thagpu: error: {error}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("thagpu: interrupted", highlight=False)
        sys.exit(130)
    except typer.Exit as exit_request:
        sys.exit(exit_request.exit_code)
    except typer.TyperException as error:  # usage errors: bad option values, missing arguments
        if hasattr(error, "show"):
            error.show()
        sys.exit(getattr(error, "exit_code", 2))
    except Exception as error:  # a bug: keep it short unless --debug
        if _STATE["debug"]:
            raise
        console.print(f"thagpu: internal error: {describe(error)} (run with --debug for the "
                      f"traceback)", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
