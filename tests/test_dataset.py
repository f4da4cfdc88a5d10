"""Dataset engine: inputs, ledger and resume rules, Dask builds (local and a real cluster), report, export."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from thagpu import labels as schema
from thagpu.config import Config, config_hash
from thagpu.dataset import Ledger, build_dataset, discover_inputs, export_dataset
from thagpu.dataset.engine import LEDGER_NAME, _plan
from thagpu.dataset.export import mapping_path
from thagpu.dataset.inputs import content_hash, unique_case_ids
from thagpu.dataset.report import severity_key
from thagpu.errors import InputError, OutputError
from thagpu.geometry import Geometry
from thagpu.io import load_ct, load_labels, write_image
from thagpu.phantom import make_phantom, write_phantom

BIN = Path(sys.executable).parent


def _write_ct(case, path: Path) -> Path:
    write_image(case.ct, case.geometry, path)
    return path


@pytest.fixture(scope="module")
def tiny_cases():
    return [make_phantom(7200 + i, size="tiny", preset="hard") for i in range(3)]


# -- inputs ----------------------------------------------------------------------------------

def test_discovery_finds_images_and_dicom_series_not_label_maps(tmp_path, tiny_cases, abdomen_dicom):
    write_phantom(tiny_cases[0], tmp_path / "in")  # ct.nii.gz + gt.nii.gz + gt.json
    _write_ct(tiny_cases[1], tmp_path / "in" / "nested" / "scan_b.nrrd")
    shutil.copytree(abdomen_dicom, tmp_path / "in" / "nested" / "series")
    (tmp_path / "in" / "nested" / "scan_b_seg.nii.gz").write_bytes(b"not read")
    found = [item.path for item in discover_inputs(tmp_path / "in")]
    rel = sorted(str(p.relative_to((tmp_path / "in").resolve())) for p in found)
    assert rel == ["hard-tiny-07200/ct.nii.gz", "nested/scan_b.nrrd", "nested/series"]

    manifest = tmp_path / "list.csv"
    manifest.write_text("path\nin/nested/scan_b.nrrd\nin/missing.nii.gz\n")
    paths = [item.path for item in discover_inputs(manifest)]
    assert paths[0].name == "scan_b.nrrd" and paths[1].name == "missing.nii.gz"
    (tmp_path / "list.json").write_text(json.dumps([{"path": "in/nested/scan_b.nrrd"}]))
    assert [i.path.name for i in discover_inputs(tmp_path / "list.json")] == ["scan_b.nrrd"]
    with pytest.raises(InputError, match="no CT input found"):
        discover_inputs(_empty(tmp_path))
    with pytest.raises(InputError, match="'path' column"):
        (tmp_path / "bad.csv").write_text("file\nx\n")
        discover_inputs(tmp_path / "bad.csv")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_scheduler_and_tls_mistakes_are_one_line_errors(tmp_path):
    from thagpu.dataset.engine import TLSFiles, _start_client
    with pytest.raises(InputError, match="--tls-ca-file"):
        TLSFiles().security()
    with pytest.raises(InputError, match="not a readable file"):
        TLSFiles(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem").security()
    with pytest.raises(InputError, match="use tls://"):
        _start_client("tcp://127.0.0.1:1", None, TLSFiles(ca_file=tmp_path / "ca.pem"))
    with pytest.raises(InputError, match="must be local, cuda"):
        _start_client("127.0.0.1:8786", None, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot be used as a dataset folder"):
        build_dataset(_empty_with_input(tmp_path), tmp_path / "file" / "ds")


def _empty_with_input(tmp_path):
    folder = tmp_path / "one"
    _write_ct(make_phantom(7299, size="tiny", preset="hard"), folder / "a.nii.gz")
    return folder


def test_detached_headers_are_fingerprinted_with_their_own_data_file(tmp_path, tiny_cases):
    from thagpu.dataset.inputs import _files_of
    for name in ("scan.mhd", "scan.nii.gz", "other.nhdr"):
        _write_ct(tiny_cases[0], tmp_path / name)
    assert [p.name for p in _files_of(tmp_path / "scan.mhd")] == ["scan.mhd", "scan.raw"]
    assert [p.name for p in _files_of(tmp_path / "other.nhdr")] == ["other.nhdr", "other.raw"]
    before = content_hash(tmp_path / "scan.mhd")
    data = tmp_path / "scan.raw"
    data.write_bytes(data.read_bytes()[::-1])
    assert content_hash(tmp_path / "scan.mhd") != before


def test_case_ids_are_safe_and_unique():
    ids = unique_case_ids([Path("/a/x y.nii.gz"), Path("/b/x y.nii.gz"), Path("/c/ct.nii.gz")], taken={"x_y-2"})
    assert ids == ["x_y", "x_y-3", "c"]


# -- ledger and resume planning (no Dask) ------------------------------------------------------

def test_plan_resume_rules(tmp_path, tiny_cases):
    folder = tmp_path / "in"
    a = _write_ct(tiny_cases[0], folder / "a.nii.gz")
    b = _write_ct(tiny_cases[1], folder / "b.nii.gz")
    ledger = Ledger(tmp_path / "ds" / LEDGER_NAME)
    todo = _plan(ledger, discover_inputs(folder), resume=False)
    assert sorted(todo) == ["a", "b"] and ledger.counts()["pending"] == 2
    with pytest.raises(InputError, match="--resume"):
        _plan(ledger, discover_inputs(folder), resume=False)

    # a finished, b was running when the client died.
    ledger.mark_running("a")
    ledger.record("a", {"status": "done", "input_hash": content_hash(a), "timings_s": {"bone": 1.0}})
    ledger.mark_running("b")
    assert _plan(ledger, discover_inputs(folder), resume=True) == ["b"]
    assert ledger.rows("running") == []

    # Touching a without changing it is no change; rewriting it with other content is.
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _plan(ledger, discover_inputs(folder), resume=True) == ["b"]
    _write_ct(tiny_cases[2], a)
    assert sorted(_plan(ledger, discover_inputs(folder), resume=True)) == ["a", "b"]
    assert ledger.by_input()[str(a.resolve())]["error"] == "input changed since it was processed"
    ledger.close()


def test_ledger_records_one_line_errors_and_counts(tmp_path):
    with Ledger(tmp_path / LEDGER_NAME) as ledger:
        ledger.add("c1", "/x/c1.nii.gz", "sig")
        ledger.mark_running("c1")
        ledger.record("c1", {"status": "failed", "error": "bad\nthing   here"})
        row = ledger.rows()[0]
        assert row["status"] == "failed" and row["error"] == "bad thing here" and row["attempts"] == 1
        assert ledger.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 1, "skipped": 0}
        with pytest.raises(sqlite3.IntegrityError):
            ledger.record("c1", {"status": "finished"})
    assert sqlite3.connect(tmp_path / LEDGER_NAME).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- local builds ------------------------------------------------------------------------------

def _mixed_folder(root: Path, cases, abdomen_dicom) -> Path:
    folder = root / "mixed"
    for case in cases[:2]:
        write_phantom(case, folder)
    good = folder / cases[0].case_id / "ct.nii.gz"
    data = good.read_bytes()
    (folder / "cut").mkdir()
    (folder / "cut" / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    mri = np.random.default_rng(0).uniform(0, 1200, size=(40, 40, 30)).astype(np.float32)
    geometry = Geometry(size=(40, 40, 30), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0),
                        direction=tuple(np.eye(3).ravel()))
    write_image(mri, geometry, folder / "t1_mri.nii.gz")
    shutil.copytree(abdomen_dicom, folder / "abdomen")
    return folder


def test_build_mixed_folder_records_each_failure_and_goes_on(tmp_path, tiny_cases, abdomen_dicom):
    folder = _mixed_folder(tmp_path, tiny_cases, abdomen_dicom)
    seen = []
    summary = build_dataset(folder, tmp_path / "ds", scheduler="local", workers=2, device="cpu",
                            progress=lambda done, total, case_id, status: seen.append((done, total, status)))
    rows = {row["case_id"]: row for row in Ledger(tmp_path / "ds" / LEDGER_NAME).rows()}
    assert set(rows) == {"hard-tiny-07200", "hard-tiny-07201", "truncated", "t1_mri", "abdomen"}
    assert rows["hard-tiny-07200"]["status"] == rows["hard-tiny-07201"]["status"] == "done"
    assert rows["truncated"]["status"] == "failed" and "truncated" in rows["truncated"]["error"]
    assert rows["t1_mri"]["status"] == "failed" and "CT" in rows["t1_mri"]["error"]
    assert rows["abdomen"]["status"] == "skipped" and rows["abdomen"]["error"].startswith("no hip found")
    assert summary.counts == {"pending": 0, "running": 0, "done": 2, "failed": 2, "skipped": 1}
    assert seen[0] == (0, 5, "") and seen[-1][0] == 5
    for case_id in ("hard-tiny-07200", "hard-tiny-07201", "abdomen"):
        out = tmp_path / "ds" / "cases" / case_id
        assert sorted(p.name for p in out.iterdir()) == ["labels.nii.gz", "measurements.json", "qc.png"]
        measurements = json.loads((out / "measurements.json").read_text(encoding="utf-8"))
        assert measurements["config_hash"] == config_hash(Config())
        assert measurements["input"]["sha256"] == rows[case_id]["input_hash"]
        assert rows[case_id]["t_bone"] > 0 and rows[case_id]["t_total"] >= rows[case_id]["t_afs"]
    assert not (tmp_path / "ds" / "cases" / "truncated").exists()
    assert not list((tmp_path / "ds").rglob("*.partial*")) and not (tmp_path / "ds" / ".staging").exists()

    # The report: every case, worst first, each done case linking an existing qc.png.
    report = _parse_report(tmp_path / "ds" / "report.html")
    assert [r[1] for r in report["rows"]][:2] == ["failed", "failed"]
    assert len(report["rows"]) == 5 and [r[1] for r in report["rows"]][2] == "skipped"
    for link in report["links"]:
        assert (tmp_path / "ds" / link).is_file()
    assert len(report["links"]) == 3

    # Resume retries only the failed cases (the others are done or skipped).
    again = build_dataset(folder, tmp_path / "ds", scheduler="local", workers=1, device="cpu", resume=True)
    assert again.processed == 2 and again.finished_now == {"failed": 2}


class _ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.links, self._row, self._cell = [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "a" and self._row is not None:
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row:
            self.rows.append(self._row)
            self._row = None


def _parse_report(path: Path) -> dict:
    parser = _ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return {"rows": parser.rows, "links": parser.links}


class _ReportPage(HTMLParser):
    """Rows (classes, image sources, anchors), radio filters and the style of a report page."""

    def __init__(self):
        super().__init__()
        self.rows, self.radios, self.style, self._in_style, self._in_body = [], [], "", False, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "style":
            self._in_style = True
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({"classes": attrs.get("class", "").split(), "imgs": [], "links": []})
        elif tag == "img" and self.rows:
            self.rows[-1]["imgs"].append(attrs)
        elif tag == "a" and self.rows:
            self.rows[-1]["links"].append(attrs["href"])
        elif tag == "input" and attrs.get("type") == "radio":
            self.radios.append(attrs["id"])

    def handle_endtag(self, tag):
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data):
        if self._in_style:
            self.style += data


def test_report_shows_each_qc_picture_inline_and_filters_rows_without_a_script(tmp_path):
    """A thumbnail per case that has a QC picture (lazily loaded, full size on click), worst first; the
    rows carry the classes the CSS-only filters select on; no script, no external resource."""
    from thagpu.dataset.report import write_report
    rows = [{"case_id": "fine", "status": "done", "outputs": {"qc": "fine/qc.png"},
             "sides": {"left": {"status": "ok", "confidence": 0.9}, "right": {"status": "ok", "confidence": 0.8}}},
            {"case_id": "weak <x>", "status": "done", "outputs": {"qc": "weak/qc.png"},
             "sides": {"left": {"status": "low_confidence", "confidence": 0.3}, "right": {"status": "ok"}}},
            {"case_id": "metal", "status": "done", "outputs": {"qc": "metal/qc.png"},
             "sides": {"left": {"status": "implant"}, "right": {"status": "ok", "confidence": 0.9}}},
            {"case_id": "broken", "status": "failed", "error": "unreadable", "sides": None}]
    text = write_report(tmp_path, rows).read_text(encoding="utf-8")
    assert "<script" not in text and "http" not in text.split("</style>")[1]
    page = _ReportPage()
    page.feed(text)
    classes = [r["classes"] for r in page.rows]
    assert [("look" in c, "case-failed" in c) for c in classes] == [(True, True), (True, False), (False, False),
                                                                     (False, False)]
    assert "side-low_confidence" in classes[1] and "side-implant" in classes[2] and "side-ok" in classes[3]
    for row in page.rows[1:]:
        (img,) = row["imgs"]
        assert img["loading"] == "lazy" and row["links"] == [img["src"]] and img["src"].endswith("/qc.png")
    assert page.rows[0]["imgs"] == []  # a failed case has no picture
    # Every filter but "all" hides the rows without its class; "all" is checked by default.
    assert page.radios[0] == "show-all" and len(page.radios) >= 6
    for radio in page.radios[1:]:
        assert f"#{radio}:checked ~ #cases tbody tr:not(." in page.style
    assert 'id="show-all" checked' in text and "weak &lt;x&gt;" in text


def test_severity_puts_failed_then_weak_sides_first():
    rows = [{"case_id": "ok", "status": "done", "sides": {"left": {"status": "ok", "confidence": 0.9}}},
            {"case_id": "weak", "status": "done", "sides": {"left": {"status": "low_confidence", "confidence": 0.3}}},
            {"case_id": "bad", "status": "failed", "sides": None}]
    assert [r["case_id"] for r in sorted(rows, key=severity_key)] == ["bad", "weak", "ok"]


def test_interrupted_build_leaves_a_consistent_ledger_and_resumes(tmp_path, tiny_cases):
    folder = tmp_path / "in"
    for case in tiny_cases:
        write_phantom(case, folder)

    def stop_after_first(done, total, case_id, status):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(folder, tmp_path / "ds", workers=1, device="cpu", progress=stop_after_first)
    counts = Ledger(tmp_path / "ds" / LEDGER_NAME).counts()
    assert counts["running"] == 0 and counts["done"] == 1 and counts["pending"] == 2
    with pytest.raises(InputError, match="already holds a dataset"):
        build_dataset(folder, tmp_path / "ds", workers=1, device="cpu")
    with pytest.raises(InputError, match="built with config"):
        build_dataset(folder, tmp_path / "ds", workers=1, device="cpu", resume=True,
                      config=Config(afs=Config().afs.__class__(n_directions=300)))
    summary = build_dataset(folder, tmp_path / "ds", workers=1, device="cpu", resume=True)
    assert summary.processed == 2 and summary.counts["done"] == 3


# -- a real cluster: scheduler and two workers as separate processes ----------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def _ledger_rows(path: Path) -> list:
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        rows = db.execute("SELECT case_id, status, worker FROM cases").fetchall()
        db.close()
        return rows
    except sqlite3.OperationalError:  # tables not made yet
        return []


@pytest.mark.slow
def test_cluster_build_survives_a_killed_worker_and_resume_does_nothing(tmp_path):
    folder = tmp_path / "in"
    for i in range(8):
        write_phantom(make_phantom(7300 + i, size="small", preset="hard"), folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    worker_ports = [_free_port(), _free_port()]
    processes = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for_port(port)
        for worker_port in worker_ports:
            processes.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", "--worker-port", str(worker_port), "--memory-limit", "6GB"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for worker_port in worker_ports:
            _wait_for_port(worker_port)
        dataset = tmp_path / "ds"
        command = [sys.executable, "-m", "thagpu.cli", "dataset", "build", str(folder), "--out", str(dataset),
                   "--scheduler", address, "--device", "cpu"]
        build = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Kill the first worker once a case is done: both workers then hold running cases.
        deadline = time.time() + 300
        while time.time() < deadline and build.poll() is None:
            if any(status == "done" for _, status, _ in _ledger_rows(dataset / LEDGER_NAME)):
                break
            time.sleep(0.2)
        killed_at = {case for case, status, _ in _ledger_rows(dataset / LEDGER_NAME) if status == "done"}
        assert build.poll() is None and len(killed_at) < 8, "the build ended before a worker could be killed"
        processes[1].send_signal(signal.SIGKILL)
        processes[1].wait()
        output, _ = build.communicate(timeout=400)
        assert build.returncode == 0, output

        rows = _ledger_rows(dataset / LEDGER_NAME)
        assert len(rows) == 8 and len({case for case, _, _ in rows}) == 8
        assert all(status == "done" for _, status, _ in rows), rows
        killed = f"tcp://127.0.0.1:{worker_ports[0]}"
        after_kill = [worker for case, _, worker in rows if case not in killed_at]
        assert after_kill and killed not in after_kill  # the cases it held were redone elsewhere
        assert sorted(p.name for p in (dataset / "cases").iterdir()) == sorted(case for case, _, _ in rows)
        for case, _, _ in rows:
            out = dataset / "cases" / case
            volume = load_ct(folder / case / "ct.nii.gz")
            labels = load_labels(out / "labels.nii.gz", volume, allowed=schema.LABEL_NAMES)
            assert labels.any()
            assert json.loads((out / "measurements.json").read_text(encoding="utf-8"))["input"]["sha256"] == \
                content_hash(folder / case / "ct.nii.gz")
        # Nothing half-written among the published cases. The killed worker may leave its own staging
        # folder (it died inside it); the next build removes such leftovers before it starts.
        assert not list((dataset / "cases").rglob("*.partial*"))
        staging = dataset / ".staging"
        assert not staging.exists() or len(list(staging.iterdir())) <= 1

        finished = sqlite3.connect(dataset / LEDGER_NAME).execute(
            "SELECT case_id, finished_at FROM cases ORDER BY case_id").fetchall()
        again = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 processed" in again.stdout
        assert not (dataset / ".staging").exists()
        assert sqlite3.connect(dataset / LEDGER_NAME).execute(
            "SELECT case_id, finished_at FROM cases ORDER BY case_id").fetchall() == finished
    finally:
        # Workers first (a worker whose scheduler is gone keeps trying to reach it), and every process
        # reaped, killed if it does not stop.
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- export --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_cases):
    root = tmp_path_factory.mktemp("export")
    folder = root / "in"
    _write_ct(tiny_cases[0], folder / "DOE_JOHN_19700101.nii.gz")
    for case in tiny_cases[1:]:
        write_phantom(case, folder)
    build_dataset(folder, root / "ds", workers=2, device="cpu")
    return root


def _all_text(folder: Path) -> str:
    """Names of every file and the text of every JSON and (decompressed) NIfTI header in ``folder``."""
    parts = []
    for path in folder.rglob("*"):
        parts.append(str(path.relative_to(folder)))
        if path.suffix == ".json":
            parts.append(path.read_text(encoding="utf-8"))
        elif path.name.endswith(".nii.gz"):
            with gzip.open(path) as handle:
                parts.append(handle.read(352).decode("latin-1"))
    return "\n".join(parts)


def test_nnunet_export_is_valid_and_deidentified(built):
    out = built / "exports" / "Dataset501_Hip"
    summary = export_dataset(built / "ds", out, fmt="nnunet", split=0.67, seed=3)
    assert (summary.n_train, summary.n_test) == (2, 1)
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    assert meta["numTraining"] == 2 and meta["labels"]["acetabulum_right"] == 4 and meta["labels"]["background"] == 0
    images = sorted(p.name for p in (out / "imagesTr").iterdir())
    labels = sorted(p.name for p in (out / "labelsTr").iterdir())
    assert len(images) == 2 and all(name.endswith("_0000.nii.gz") for name in images)
    assert [name.replace("_0000", "") for name in images] == labels
    assert len(list((out / "imagesTs").iterdir())) == len(list((out / "labelsTs").iterdir())) == 1
    for label in (out / "labelsTr").iterdir():
        image = out / "imagesTr" / label.name.replace(".nii.gz", "_0000.nii.gz")
        values = set(np.unique(load_labels(label, load_ct(image))).tolist())
        assert values <= set(schema.LABEL_NAMES) and values & {1, 2, 3, 4}
    text = _all_text(out)
    for secret in ("DOE", "JOHN", "19700101", "hard-tiny", str(built)):
        assert secret not in text
    with open(mapping_path(out), newline="") as handle:
        mapping = list(csv.DictReader(handle))
    assert mapping_path(out).parent == out.parent and len(mapping) == 3
    assert {row["case_id"] for row in mapping} >= {"DOE_JOHN_19700101"}
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert len(datalist["training"]) == 2 and (out / datalist["training"][0]["image"]).is_file()
    with pytest.raises(InputError, match="not empty"):
        export_dataset(built / "ds", out, fmt="nnunet")


def test_msd_export_loads_in_monai_and_takes_manual_test_labels(built, tiny_cases):
    from monai.data import load_decathlon_datalist

    manual_dir = built / "manual"
    manual_dir.mkdir(exist_ok=True)
    case = tiny_cases[1]
    write_image(case.labels, case.geometry, manual_dir / f"{case.case_id}.nii.gz")
    out = built / "exports" / "msd"
    summary = export_dataset(built / "ds", out, fmt="msd", split=0.67, seed=1, test_labels=manual_dir)
    assert summary.n_manual_test == 1 and summary.n_test == 1
    test = load_decathlon_datalist(out / "dataset.json", data_list_key="test", base_dir=out)
    assert len(test) == 1
    exported = load_labels(test[0]["label"], load_ct(test[0]["image"]))
    truth = load_labels(manual_dir / f"{case.case_id}.nii.gz", load_ct(test[0]["image"]))
    assert np.array_equal(exported, truth)
    assert len(load_decathlon_datalist(out / "dataset.json", data_list_key="training", base_dir=out)) == 2

    bad = built / "bad_manual"
    bad.mkdir(exist_ok=True)
    write_image(np.full(case.labels.shape, 9, np.uint8), case.geometry, bad / f"{case.case_id}.nii.gz")
    with pytest.raises(InputError, match="unknown label value"):
        export_dataset(built / "ds", built / "exports" / "refused", fmt="msd", test_labels=bad)
    assert not (built / "exports" / "refused").exists()
    assert not list((built / "exports").glob(".*partial*"))


def test_a_local_build_starts_while_the_default_dashboard_port_is_taken():
    """Two builds on one machine (or any Dask cluster) once collided on port 8787."""
    import socket
    import warnings
    from thagpu.dataset.engine import _start_client
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 8787))
        holder.listen(1)
    except OSError:
        pass  # already taken by something else: the condition under test holds anyway
    try:
        with warnings.catch_warnings():
            # "Port 8787 is already in use" was a warning; only that one is the fault under test (a
            # slow disk's scratch-folder timing warning is not).
            warnings.filterwarnings("error", message="Port .* is already in use")
            client, cluster = _start_client("local", 1, None)
        try:
            assert cluster.scheduler.http_server.port != 8787
        finally:
            client.close()
            cluster.close()
    finally:
        holder.close()


# -- hazards of shared state -------------------------------------------------------------------

def test_device_mistakes_of_a_build_are_one_line_errors(tmp_path, monkeypatch):
    import thagpu.device
    from thagpu.dataset.engine import _start_client, check_worker_devices
    from thagpu.errors import DeviceError
    with pytest.raises(InputError, match="cannot build with --device cpu"):
        build_dataset(_empty_with_input(tmp_path), tmp_path / "ds", scheduler="cuda", device="cpu")
    monkeypatch.setattr(thagpu.device, "gpu_count", lambda: 1)
    with pytest.raises(DeviceError, match="--workers 2 with --scheduler cuda, but 1 GPU"):
        _start_client("cuda", 2, None)
    # Workers of one cluster on two devices, or on another device than the dataset's: refused.
    with pytest.raises(InputError, match=r"different devices \(1 on cpu, 1 on gpu\)"):
        check_worker_devices({"tcp://a:1": "cpu", "tcp://b:1": "gpu"}, None, tmp_path)
    with pytest.raises(InputError, match="was built on gpu, these workers run on cpu"):
        check_worker_devices({"tcp://a:1": "cpu"}, "gpu", tmp_path)
    with pytest.raises(DeviceError, match="worker tcp://a:1: --device gpu was asked for"):
        check_worker_devices({"tcp://a:1": "error: --device gpu was asked for but no GPU is usable"}, None, tmp_path)
    assert check_worker_devices({"tcp://a:1": "cpu", "tcp://b:1": "cpu"}, "cpu", tmp_path) == "cpu"


def test_a_dataset_built_on_one_device_refuses_workers_on_another(tmp_path):
    """The device is resolved on the workers and recorded per case and for the dataset; a resumed
    build whose workers run elsewhere stops before any case runs."""
    folder = _empty_with_input(tmp_path)
    build_dataset(folder, tmp_path / "ds", workers=1, device="cpu")
    with Ledger(tmp_path / "ds" / LEDGER_NAME) as ledger:
        assert ledger.get_meta("device") == "cpu"
        assert [row["device"] for row in ledger.rows()] == ["cpu"]
        ledger.set_meta("device", "gpu")  # as if the first cases had run on GPUs
    _write_ct(make_phantom(7298, size="tiny", preset="hard"), folder / "b.nii.gz")
    with pytest.raises(InputError, match="was built on gpu, these workers run on cpu"):
        build_dataset(folder, tmp_path / "ds", workers=1, device="cpu", resume=True)
    with Ledger(tmp_path / "ds" / LEDGER_NAME) as ledger:
        assert ledger.counts()["running"] == 0 and ledger.counts()["done"] == 1


def test_the_ledger_uses_a_rollback_journal_on_a_network_file_system(tmp_path, monkeypatch):
    """WAL needs shared memory, which hosts of an NFS share do not share; there the ledger keeps a
    rollback journal, leaves no -wal/-shm files, and a second connection reads every committed row."""
    from thagpu.dataset import ledger as ledger_module
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {tmp_path / 'share'} nfs4 rw,relatime 0 0\n/dev/sda1 / ext4 rw 0 0\n")
    assert ledger_module.filesystem_type(tmp_path / "share" / "ds", mounts) == "nfs4"
    assert ledger_module.filesystem_type(tmp_path / "elsewhere", mounts) == "ext4"
    assert ledger_module.journal_mode_for(tmp_path / "elsewhere" / LEDGER_NAME) == "WAL"
    monkeypatch.setattr(ledger_module, "filesystem_type", lambda path, mounts=mounts: "nfs4")
    path = tmp_path / "share" / "ds" / LEDGER_NAME
    with Ledger(path) as writer:
        assert writer.journal_mode == "DELETE"
        for k in range(20):
            writer.add(f"c{k}", f"/x/c{k}.nii.gz", "sig")
            writer.mark_running(f"c{k}")
            writer.record(f"c{k}", {"status": "done", "device": "cpu"})
            with Ledger(path) as reader:  # another process's view, mid-build
                assert reader.counts()["done"] == k + 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not list(path.parent.glob("*-wal")) and not list(path.parent.glob("*-shm"))


def test_a_worker_hands_the_gpu_memory_pools_back_after_every_case(tmp_path, monkeypatch):
    """Between cases a worker frees the blocks CuPy's pools cache, after a case that worked and
    after one that failed: otherwise a GPU worker holds the peak of every case it has run."""
    import types

    from thagpu.dataset.worker import process_case
    from thagpu.phantom import make_phantom, write_phantom

    freed = []

    class Pool:
        def __init__(self, name):
            self.name = name

        def free_all_blocks(self):
            freed.append(self.name)

    stand_in = types.SimpleNamespace(get_default_memory_pool=lambda: Pool("device"),
                                     get_default_pinned_memory_pool=lambda: Pool("pinned"))
    monkeypatch.setitem(sys.modules, "cupy", stand_in)  # "CuPy was imported" in this worker
    ct = write_phantom(make_phantom(1, size="tiny", preset="easy"), tmp_path / "in")["ct"]
    done = process_case("one", str(ct), str(tmp_path / "ds"), Config(), "cpu")
    assert done["status"] in ("done", "skipped") and freed == ["device", "pinned"]
    failed = process_case("two", str(tmp_path / "missing.nii.gz"), str(tmp_path / "ds"), Config(), "cpu")
    assert failed["status"] == "failed" and freed == ["device", "pinned"] * 2
