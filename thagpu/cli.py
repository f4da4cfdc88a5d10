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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ._version import __version__
from .errors import ThagpuError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hip CT -> THA-planning segmentation dataset (bone extraction, acetabulum "
                       "and femoral head segmentation, active-learning refinement), on CPU or GPU.")
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)
_STATE = {"debug": False}

SIZES = ("tiny", "small", "full")
PRESETS = ("easy", "hard", "implant", "truncated", "osteoporotic")


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


def _choice(value: str, allowed, what: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{what} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=False)


@app.command()
def phantom(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write <case>/ct.nii.gz, gt.nii.gz, gt.json."),
    n: int = typer.Option(1, "--n", min=1, help="Number of phantoms."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first phantom; the others take seed+1, ..."),
    size: str = typer.Option("small", "--size", help="tiny | small | full (512 x 512 x 300)."),
    preset: str = typer.Option("hard", "--preset", help="easy | hard | implant | truncated | osteoporotic."),
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
    from .pipeline import run_case
    _choice(device, ("auto", "cpu", "gpu"), "--device")
    config = load_config(config_file)
    device = resolve_device(device)
    failures = []
    with _progress() as progress:
        task = progress.add_task("cases", total=len(inputs))
        for path in inputs:
            try:
                result = run_case(path, out_dir, config=config, device=device)
                progress.console.print(f"{result.case_id}: done ({sum(result.measurements['timings_s'].values()):.1f} s)")
            except ThagpuError as error:
                if _STATE["debug"]:
                    raise
                failures.append(str(error))
                if len(inputs) > 1:
                    progress.console.print(f"failed: {error}", markup=False, highlight=False)
            progress.advance(task)
    if failures:
        if len(inputs) == 1:
            raise ThagpuError(failures[0])
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
    preset: str = typer.Option("hard", "--preset", help="Phantom preset."),
):
    """Make phantoms, run the pipeline on them, print accuracy and timings."""
    from .demo import run_demo
    _choice(size, SIZES, "--size")
    _choice(preset, PRESETS, "--preset")
    _choice(device, ("auto", "cpu", "gpu"), "--device")
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


def main(argv=None) -> None:
    """Entry point of the ``thagpu`` script."""
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
        first = str(error).splitlines()[0] if str(error) else ""
        console.print(f"thagpu: internal error: {type(error).__name__}: {first} (run with --debug for the "
                      f"traceback)", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
