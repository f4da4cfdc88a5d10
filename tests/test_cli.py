"""The command line: versions, help, one-line errors and exit codes, outputs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from thagpu import __version__
from thagpu.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and __version__ in out


@pytest.mark.parametrize("command", [[], ["phantom"], ["run"], ["demo"]])
def test_help_on_every_command(command, capsys):
    code, out, _ = run_cli(command + ["--help"], capsys)
    assert code == 0
    assert "Usage" in out


def test_entry_point_script_runs():
    result = subprocess.run([sys.executable, "-m", "thagpu.cli", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and __version__ in result.stdout


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.int16)), str(bad))
    out_dir = tmp_path / "out"
    code, _, err = run_cli(["run", str(bad), "--out", str(out_dir)], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("thagpu: error:")]
    assert len(lines) == 1 and "flat.nii.gz" in lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.rglob("*.nii.gz"))


def test_debug_shows_the_exception(tmp_path, capsys):
    from thagpu.errors import InputError
    with pytest.raises(InputError):
        main(["--debug", "run", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")])


def test_gpu_request_without_gpu_is_an_error(tmp_path, capsys):
    from thagpu.device import gpu_available
    if gpu_available():  # on a GPU machine the request is valid; covered by the gpu tests there
        return
    code, _, err = run_cli(["run", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path), "--device", "gpu"], capsys)
    assert code == 2 and "no GPU" in err


def test_unknown_config_key_is_refused(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[io]\nmax_voxel = 5\n")
    code, _, err = run_cli(["run", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path), "--config", str(config)],
                           capsys)
    assert code == 2 and "max_voxel" in err


def test_phantom_then_run_writes_outputs(tmp_path, capsys):
    code, _, _ = run_cli(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--size", "tiny",
                          "--seed", "3", "--preset", "hard"], capsys)
    assert code == 0
    ct = tmp_path / "ph" / "hard-tiny-00003" / "ct.nii.gz"
    assert ct.exists()
    code, _, _ = run_cli(["run", str(ct), "--out", str(tmp_path / "res"), "--device", "cpu"], capsys)
    assert code == 0
    case = tmp_path / "res" / "hard-tiny-00003"
    measurements = json.loads((case / "measurements.json").read_text(encoding="utf-8"))
    assert measurements["input"]["size"] == list(sitk.ReadImage(str(ct)).GetSize())
    assert {"load", "write"} <= set(measurements["timings_s"])
    labels = sitk.ReadImage(str(case / "labels.nii.gz"))
    assert labels.GetSize() == sitk.ReadImage(str(ct)).GetSize()


def test_many_inputs_one_bad_the_others_done(tmp_path, capsys):
    run_cli(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--size", "tiny", "--seed", "4", "--preset", "hard"],
            capsys)
    good = tmp_path / "ph" / "hard-tiny-00004" / "ct.nii.gz"
    bad = tmp_path / "empty.nii"
    bad.write_bytes(b"")
    code, _, err = run_cli(["run", str(bad), str(good), "--out", str(tmp_path / "res")], capsys)
    assert code == 2 and "1 of 2" in err
    assert (tmp_path / "res" / "hard-tiny-00004" / "labels.nii.gz").exists()


def test_demo_prints_accuracy_table(tmp_path, capsys):
    code, out, _ = run_cli(["demo", "--size", "tiny", "--n", "1", "--preset", "hard", "--out", str(tmp_path / "d"),
                            "--device", "cpu"], capsys)
    assert code == 0
    assert "head L" in out and "mean" in out
    summary = json.loads((tmp_path / "d" / "demo.json").read_text(encoding="utf-8"))
    assert summary["cases"][0]["case_id"] == "hard-tiny-01000"


def test_bad_choice_is_a_usage_error(capsys):
    code, _, err = run_cli(["phantom", "--out", "x", "--size", "huge"], capsys)
    assert code == 2 and "--size" in err


@pytest.mark.parametrize("command, bracketed", [(["refine", "simulate"], "[aar]"), (["refine", "train"], "[dynunet]"),
                                                (["refine", "train"], "[aar]"), (["run"], "TOML or YAML")])
def test_help_prints_brackets_as_written(command, bracketed, capsys):
    # rich reads "[aar]" as a style tag and drops it unless the help text is escaped.
    code, out, _ = run_cli(command + ["--help"], capsys)
    assert code == 0 and bracketed in out


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_line_progress_prints_one_line_per_step_with_elapsed_and_eta():
    import io

    from rich.console import Console

    from thagpu.progress import LineProgress, format_duration, make_progress, stage_progress

    buffer, clock = io.StringIO(), _Clock()
    progress = LineProgress(Console(file=buffer, width=200), clock=clock)
    task = progress.add_task("fold 0", total=4)
    clock.now += 30.0
    progress.advance(task)
    clock.now += 90.0
    progress.update(task, completed=3, rate="2.0 cases/min")
    progress.update(task, total=4)  # nothing done: no line
    lines = buffer.getvalue().splitlines()
    assert lines == ["[0:00:30] fold 0: 1/4 (25%), elapsed 0:00:30, eta 0:01:30",
                     "[0:02:00] fold 0: 3/4 (75%), elapsed 0:02:00, eta 0:00:40, 2.0 cases/min"]
    assert format_duration(3725.9) == "1:02:05"
    # A log gets lines, a terminal the rich bar.
    assert isinstance(make_progress(Console(file=io.StringIO())), LineProgress)
    from rich.progress import Progress
    assert isinstance(make_progress(Console(file=io.StringIO(), force_terminal=True)), Progress)
    buffer = io.StringIO()
    progress, report = stage_progress(Console(file=buffer, width=200), lines=True)
    with progress:
        report("scoring", 0, 2)
        report("scoring", 1, 2)
        report("scoring", 2, 2)
    assert [line.split("] ")[1].split(",")[0] for line in buffer.getvalue().splitlines()] == [
        "scoring: 1/2 (50%)", "scoring: 2/2 (100%)"]


def test_simulate_size_preset_sits_under_the_config_file_and_the_options(tmp_path):
    from thagpu.aar.simulate import SIZES
    from thagpu.cli import _aar_config
    from thagpu.config import AARConfig

    tiny = _aar_config(None, SIZES["tiny"]).aar
    assert (tiny.folds, tiny.epochs, tiny.width, tiny.spacing_mm, tiny.model) == (2, 10, 8, 4.5, "unet")
    assert (tiny.folds, tiny.epochs) != (AARConfig().folds, AARConfig().epochs)
    config = tmp_path / "c.toml"
    config.write_text("[aar]\nepochs = 3\nwidth = 12\n")
    layered = _aar_config(config, SIZES["tiny"], width=16).aar
    assert (layered.epochs, layered.width, layered.folds) == (3, 16, 2)  # file over preset, option over file


def test_run_outputs_stay_inside_out_whatever_the_input_path(tmp_path, capsys):
    """``run case/sub/../ct.nii.gz`` once took ``..`` as the case id and wrote into OUT's parent."""
    from thagpu.errors import InputError
    from thagpu.pipeline import case_id_for, run_case, safe_case_id
    run_cli(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--size", "tiny", "--seed", "5", "--preset", "hard"],
            capsys)
    folder = tmp_path / "ph" / "hard-tiny-00005"
    (folder / "sub").mkdir()
    climbing = folder / "sub" / ".." / "ct.nii.gz"
    assert case_id_for(climbing) == "hard-tiny-00005"
    assert safe_case_id("..") == "case" and safe_case_id("a/b c") == "a_b_c"
    out = tmp_path / "out" / "res"
    code, _, _ = run_cli(["run", str(climbing), "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0
    assert (out / "hard-tiny-00005" / "labels.nii.gz").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["res"]
    with pytest.raises(InputError, match="plain folder name"):
        run_case(folder / "ct.nii.gz", out, case_id="../escape")


def test_unusable_output_folder_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """A file where OUT or its case folder should be, or a folder where an output file should be, is an
    output error in one line (exit 2), found before the CT is read."""
    import thagpu.pipeline as pipeline
    run_cli(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--size", "tiny", "--seed", "6", "--preset", "hard"],
            capsys)
    ct = tmp_path / "ph" / "hard-tiny-00006" / "ct.nii.gz"

    def no_reading(*args, **kwargs):
        raise AssertionError("the CT was read before the output folder was checked")

    monkeypatch.setattr(pipeline, "load_ct", no_reading)
    (tmp_path / "a_file").write_text("x")
    taken = tmp_path / "taken" / "hard-tiny-00006"
    taken.parent.mkdir()
    taken.write_text("x")
    in_the_way = tmp_path / "dir_in_the_way" / "hard-tiny-00006" / "qc.png"
    in_the_way.mkdir(parents=True)
    for out_dir, expected in [(tmp_path / "a_file", "is a file, not a folder"),
                              (tmp_path / "a_file" / "sub", "is a file, not a folder"),
                              (taken.parent, "is a file, not a folder"),
                              (in_the_way.parent.parent, "a folder is in the way")]:
        code, _, err = run_cli(["run", str(ct), "--out", str(out_dir), "--device", "cpu"], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and expected in lines[0] and "internal error" not in err, err


def test_a_failed_write_leaves_the_previous_outputs_whole(tmp_path, capsys, monkeypatch):
    """The three outputs of a case are renamed into place together: when the last one cannot be written
    the case keeps its previous set, never new labels beside old measurements."""
    import thagpu.pipeline as pipeline
    from thagpu.errors import OutputError
    run_cli(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--size", "tiny", "--seed", "7", "--preset", "hard"],
            capsys)
    ct = tmp_path / "ph" / "hard-tiny-00007" / "ct.nii.gz"
    out = tmp_path / "res"
    assert run_cli(["run", str(ct), "--out", str(out), "--device", "cpu"], capsys)[0] == 0
    case = out / "hard-tiny-00007"
    before = {p.name: p.read_bytes() for p in case.iterdir()}
    assert sorted(before) == ["labels.nii.gz", "measurements.json", "qc.png"]

    def failing_picture(path, *args, **kwargs):  # the labels are written by then, the measurements not
        raise OutputError(path, "disk full")

    monkeypatch.setattr(pipeline, "save_slices_png", failing_picture)
    code, _, err = run_cli(["run", str(ct), "--out", str(out), "--device", "cpu"], capsys)
    assert code == 2 and "disk full" in err
    assert {p.name: p.read_bytes() for p in case.iterdir()} == before  # nothing new, no temporary left
    # Into a fresh output folder, the failed case leaves no folder behind either.
    code, _, _ = run_cli(["run", str(ct), "--out", str(tmp_path / "fresh" / "res"), "--device", "cpu"], capsys)
    assert code == 2 and not (tmp_path / "fresh").exists()


def test_inputs_of_one_name_get_their_own_folders(tmp_path, capsys):
    """Two inputs whose case id is the same (x/a/ct.nii.gz, y/a/ct.nii.gz) once wrote into one folder,
    the second silently replacing the first."""
    import shutil
    run_cli(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--size", "tiny", "--seed", "8", "--preset", "hard"],
            capsys)
    first = tmp_path / "x" / "a" / "ct.nii.gz"
    second = tmp_path / "y" / "a" / "ct.nii.gz"
    for target in (first, second):
        target.parent.mkdir(parents=True)
        shutil.copy(tmp_path / "ph" / "hard-tiny-00008" / "ct.nii.gz", target)
    code, out_text, _ = run_cli(["run", str(first), str(second), "--out", str(tmp_path / "res"), "--device", "cpu"],
                                capsys)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["a", "a-2"]
    for case in ("a", "a-2"):
        assert (tmp_path / "res" / case / "labels.nii.gz").exists()


def test_dataset_build_with_a_failed_case_exits_non_zero_and_keeps_the_others(tmp_path, capsys):
    """A build whose cases partly failed once exited 0: a script could not tell it from a whole one."""
    run_cli(["phantom", "--out", str(tmp_path / "src"), "--n", "1", "--size", "tiny", "--seed", "9",
             "--preset", "hard"], capsys)
    (tmp_path / "src" / "broken.nii.gz").write_bytes(b"not a CT")
    code, _, err = run_cli(["dataset", "build", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
                            "--workers", "1", "--device", "cpu"], capsys)
    assert code == 2 and "1 of 2 case(s) failed" in err
    assert (tmp_path / "ds" / "cases" / "hard-tiny-00009" / "labels.nii.gz").exists()


def test_itk_warnings_do_not_precede_the_one_line_error(tmp_path):
    """ITK printed three lines of its own (source file, line, "No Series were found") on stderr before
    the command's one line; they are kept for --verbose and --debug."""
    empty = tmp_path / "empty"
    empty.mkdir()
    command = [sys.executable, "-m", "thagpu.cli", "run", str(empty), "--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [f"thagpu: error: {empty}: no DICOM series found"], result.stderr
    verbose = subprocess.run(command[:3] + ["--verbose"] + command[3:], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 2 and "No Series were found" in verbose.stderr


def test_native_library_output_does_not_precede_the_one_line_error(tmp_path):
    """MetaIO wrote "MetaImage: Read: Cannot open data file" straight to the process's stderr, above
    the command's one line; it now ends that line, and the terminal holds only the line."""
    header = tmp_path / "ct.mha"
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 10 10 10\nElementType = MET_SHORT\n"
                      "ElementDataFile = missing.raw\n")
    command = [sys.executable, "-m", "thagpu.cli", "run", str(header), "--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"thagpu: error: {header}: could not be read")
    assert "(the library said: MetaImage: Read: Cannot open data file)" in lines[0]
