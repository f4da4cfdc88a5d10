"""The README's figures come from the result files: its generated section is what run_all writes from
them, every row says which code it describes, and rows measured before a code change say so."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.run_all import (README_END, README_START, ROOT, STALE, CodeHistory, replace_readme_section,
                                summary_markdown)


def _readme_section(text: str) -> str:
    return text.split(README_START, 1)[1].split(README_END, 1)[0].lstrip("\n")


def test_readme_section_is_what_run_all_writes_from_the_committed_results():
    """Fails when a result file, the code a row describes, or the README's section changed without
    ``python -m benchmarks.run_all --summary-only`` being run after it."""
    _, markdown = summary_markdown()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _readme_section(readme) == markdown, (
        "README.md's benchmark section differs from the result files: run "
        "`python -m benchmarks.run_all --summary-only` and commit README.md and benchmarks/results/summary.*")
    assert replace_readme_section(readme, markdown) == readme


def test_every_row_says_which_code_it_describes():
    summary, markdown = summary_markdown()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| method ")
            and "measured at |" not in line]
    assert rows
    stamp = ("not recorded", "not checked")
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert cell.startswith(stamp) or cell[:7].isalnum(), row  # a commit, or why there is none
    accuracy = json.loads((RESULTS / "bench_accuracy.json").read_text(encoding="utf-8"))
    assert summary["accuracy"]["measured_at"].startswith(accuracy["machine"]["commit"])
    for spacing in ("1 mm", "0.8x0.8x3 mm", "3 mm"):
        assert f"| anatomic {spacing} |" in markdown


def test_gpu_rows_show_their_commit_or_say_they_are_not_measured_on_the_current_code():
    """Files in ``results/gpu/`` from before the commit stamps say the code changed after they were
    committed; the stamped ones (the H200 session of 2026-12-04) show the commit they ran at."""
    assert CodeHistory(ROOT).available, "the staleness marks need the git history (a clone has it)"
    _, markdown = summary_markdown()
    gpu = [line for line in markdown.splitlines() if line.startswith("| gpu/")]
    unstamped = [line for line in gpu if "| not recorded" in line]
    stamped = [line for line in gpu if "| not recorded" not in line]
    assert unstamped and all(STALE in line for line in unstamped)
    assert stamped and all(re.search(r"\| [0-9a-f]{7,40}(-dirty)?, \d{4}-\d\d-\d\d", line) for line in stamped)


def test_the_machines_come_from_the_result_files_not_from_this_machine(tmp_path, monkeypatch):
    import benchmarks.common

    def no_machine(*args, **kwargs):
        raise AssertionError("the summary must not look at the machine it runs on")

    monkeypatch.setattr(benchmarks.common, "machine", no_machine)
    rows = [{"experiment": "speed 30x20x16", "method": m, "device": "cpu", "shape": [30, 20, 16], "time_s": t,
             "graph_nodes": 1, "dice": 0.9, "energy_gap_rel": 0.0, "commit": None, "date": None}
            for m, t in (("fullgrid_uncropped", 3.0), ("fullgrid_cropped", 2.0), ("ours", 1.0))]
    (tmp_path / "bench_bone.json").write_text(json.dumps(
        {"machine": {"cpu": "Test CPU", "cpus": 3, "commit": None}, "rows": rows}))
    summary, markdown = summary_markdown(tmp_path, tmp_path)
    assert "Test CPU (3 CPUs): bench_bone" in markdown
    assert markdown.count("not checked (no git)") == 3  # tmp_path is no repository


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_rows_measured_before_a_code_change_are_marked_stale(tmp_path):
    repo = tmp_path
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    (repo / "code").mkdir()
    (repo / "code" / "a.py").write_text("x = 1\n")
    (repo / "other.py").write_text("y = 1\n")
    (repo / "untouched.py").write_text("z = 1\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "code")
    measured = _git(repo, "rev-parse", "--short", "HEAD")
    result = repo / "result.json"
    result.write_text("{}")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "result")
    history = CodeHistory(repo)
    assert history.freshness(measured, "2026-01-01", ("code",), result) == f"{measured}, 2026-01-01"
    assert history.freshness(None, None, ("code",), result) == \
        "not recorded; code unchanged since the file was committed"
    (repo / "other.py").write_text("y = 2\n")  # a change elsewhere does not matter
    _git(repo, "commit", "-q", "-am", "other")
    assert STALE not in CodeHistory(repo).freshness(measured, "2026-01-01", ("code",), result)
    (repo / "code" / "a.py").write_text('"""The code."""\nx = 1  # a comment\n')  # the same code
    _git(repo, "commit", "-q", "-am", "document the code")
    assert CodeHistory(repo).freshness(measured, "2026-01-01", ("code",), result) == f"{measured}, 2026-01-01"
    (repo / "code" / "a.py").write_text("x = 2\n")
    _git(repo, "commit", "-q", "-am", "change the code")
    history = CodeHistory(repo)
    stale = history.freshness(measured, "2026-01-01", ("code", "untouched.py"), result)
    assert stale == f"{measured}, 2026-01-01; {STALE}: `code` changed since"
    assert history.freshness(None, None, ("code",), result) == \
        f"not recorded; {STALE}: `code` changed after the file was committed"
    assert history.freshness("0123456", None, ("code",), result) == "0123456; not checked (commit not in this history)"
    (repo / "code" / "b.txt").write_text("data\n")  # not Python: any change counts
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "data")
    data = _git(repo, "rev-parse", "--short", "HEAD")
    assert STALE not in CodeHistory(repo).freshness(data, None, ("code",), result)
    (repo / "code" / "b.txt").write_text("data, reworded\n")
    _git(repo, "commit", "-q", "-am", "reword the data")
    assert STALE in CodeHistory(repo).freshness(data, None, ("code",), result)
    _git(repo, "mv", "code/a.py", "code/c.py")  # the same code under another name: changed
    _git(repo, "commit", "-q", "-m", "rename")
    renamed = _git(repo, "rev-parse", "--short", "HEAD~1")
    assert STALE in CodeHistory(repo).freshness(renamed, None, ("code",), result)
    now = _git(repo, "rev-parse", "--short", "HEAD")
    assert history.freshness(now + "-dirty", "2026-01-02", ("code",), result) == \
        f"{now}-dirty, 2026-01-02; with uncommitted changes"


def test_bone_speed_ratios_divide_cpu_times_only():
    from benchmarks.bench_bone import add_speed_figures

    def row(method, device, time_s, energy):
        return {"method": method, "device": device, "time_s": time_s, "cut_energy": energy, "cut_energy_box": energy}

    rows = add_speed_figures([row("fullgrid_uncropped", "cpu", 6.0, 100.0), row("fullgrid_cropped", "cpu", 3.0, 100.0),
                              row("ours", "cpu", 1.5, 100.0), row("ours", "gpu", 0.05, 100.0)])
    uncropped, cropped, ours, gpu = rows
    assert "speedup_vs_uncropped" not in uncropped and cropped["speedup_vs_uncropped"] == 2.0
    assert ours["speedup_vs_uncropped"] == 4.0 and ours["speedup_vs_cropped"] == 2.0
    assert not any(k.startswith("speedup") for k in gpu)  # a GPU time is never divided into a CPU one
    assert all(r["energy_gap_rel"] == 0.0 for r in rows)


def test_the_status_table_names_no_measured_figure():
    """Measured figures live in the generated section only; the status table above it says what is
    built and points there. A typed Dice (two decimals or more, or 0.x), a time or a memory in it
    fails here (percentages are not caught: the table names 95 % intervals)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    status = readme.split("## Status", 1)[1].split("## Benchmark summary", 1)[0]
    assert status.count("\n| ") >= 5
    typed = re.findall(r"(?:\b\d\.\d{2,}\b|\b0\.\d\b|\b\d+(?:\.\d+)? ?(?:ms|s|min|h|MB|GB|MiB|GiB|cases/min)\b)(?! x)",
                       status)
    assert not typed, f"figures typed into the README's status table: {typed}"
