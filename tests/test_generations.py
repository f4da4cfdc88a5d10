"""Dataset regeneration: generations, human work kept, change report, resume, restore, prune."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_dataset
from thagpu.aar import RefineStore, import_labels, score_round, train_round
from thagpu.config import AARConfig, AFSConfig, Config, config_hash
from thagpu.dataset import build_dataset, export_dataset
from thagpu.dataset.engine import LEDGER_NAME
from thagpu.dataset.generations import (REVIEW_DICE_DROP, GenerationLedger, _select, compare_outputs,
                                        prune_generations, regenerate_dataset, restore_generation)
from thagpu.errors import InputError, ThagpuError
from thagpu.io import load_ct, load_labels, write_image

BIN = Path(sys.executable).parent
TINY = AARConfig(model="unet", width=8, spacing_mm=4.5, patch_size=32, folds=2, epochs=1, samples_per_case=2,
                 batch_size=2)
#: Configuration B: another AFS setting, so every case's configuration differs from A's.
CONFIG_B = Config(afs=AFSConfig(n_directions=300))
REFINE_TABLES = ("refine_folds", "refine_rounds", "refine_scores", "refine_labels")


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    """A tiny dataset built under the default config A, one manual label imported, one AAR round run."""
    root = tmp_path_factory.mktemp("generations")
    built = build_tiny_dataset(root, 7700)
    with RefineStore(built) as store:
        row = store.cases()[0]
    volume = load_ct(row["input_path"])
    truth = load_labels(Path(row["input_path"]).parent / "gt.nii.gz", volume)
    write_image(volume.to_stored(truth), volume.original, root / "manual" / f"{row['case_id']}.nii.gz")
    import_labels(built, root / "manual")
    train_round(built, TINY, "cpu")
    score_round(built, "cpu")
    return built, row["case_id"], root / "in"


def _tables(dataset: Path) -> dict:
    with sqlite3.connect(dataset / LEDGER_NAME) as db:
        return {name: db.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall() for name in REFINE_TABLES}


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _labels_of(dataset: Path) -> dict:
    """case_id -> (path, SHA-256) of each case's current pseudo label."""
    with GenerationLedger(dataset / LEDGER_NAME) as ledger:
        return {row["case_id"]: (row["outputs"]["labels"],
                                 hashlib.sha256((dataset / row["outputs"]["labels"]).read_bytes()).hexdigest())
                for row in ledger.rows()}


def _arrays_of(dataset: Path) -> dict:
    import SimpleITK as sitk
    return {case_id: sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / path)))
            for case_id, (path, _) in _labels_of(dataset).items()}


def test_regenerate_keeps_human_work_resumes_restores_and_prunes(refined, tmp_path):
    source, manual_case, inputs = refined
    dataset, straight = tmp_path / "ds", tmp_path / "straight"
    shutil.copytree(source, dataset)
    shutil.copytree(source, straight)
    refine_tables, refine_files = _tables(dataset), _digests(dataset / "refine")
    first = _labels_of(dataset)

    # An uninterrupted regeneration under B, on a copy: the result the interrupted one must reach.
    done = regenerate_dataset(straight, config=CONFIG_B, workers=2, device="cpu")
    assert done.generation == 2 and done.processed == len(first) and not done.resumed

    # Ctrl-C after the first case: the dataset stays as it was, and says a regeneration is unfinished.
    def stop_after_first(finished, total, case_id, status):
        if finished == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        regenerate_dataset(dataset, config=CONFIG_B, workers=1, device="cpu", progress=stop_after_first)
    assert _labels_of(dataset) == first
    with GenerationLedger(dataset / LEDGER_NAME) as ledger:
        assert ledger.current_generation() == 1 and ledger.unfinished()["generation"] == 2
        states = ledger.case_states(2)
        assert sorted(states.values()).count("finished") == 1 and "running" not in states.values()
        # A client killed outright leaves a case "running": the resume takes it as not done.
        ledger.mark_case(2, next(c for c, s in states.items() if s == "pending"), "running")
    with pytest.raises(InputError, match="regeneration .* is unfinished"):
        build_dataset(inputs, dataset, workers=1, device="cpu", resume=True)
    with pytest.raises(InputError, match="is unfinished under thagpu .*, config"):
        regenerate_dataset(dataset, workers=1, device="cpu")  # config A: not the unfinished generation's

    resumed = regenerate_dataset(dataset, config=CONFIG_B, workers=2, device="cpu")
    assert resumed.generation == 2 and resumed.resumed and resumed.processed == len(first) - 1
    now = _labels_of(dataset)
    assert all(path.startswith("generations/2/cases/") for path, _ in now.values())
    assert {c: a.tobytes() for c, a in _arrays_of(dataset).items()} == \
        {c: a.tobytes() for c, a in _arrays_of(straight).items()}
    for path, _ in now.values():
        measurements = json.loads((dataset / path).with_name("measurements.json").read_text(encoding="utf-8"))
        assert measurements["config_hash"] == config_hash(CONFIG_B)

    # Human work: the manual label stays current, and the AAR state is untouched.
    assert _tables(dataset) == refine_tables and _digests(dataset / "refine") == refine_files
    with GenerationLedger(dataset / LEDGER_NAME) as ledger:
        rows = {row["case_id"]: row for row in ledger.rows()}
        assert ledger.current_label(rows[manual_case])[0] == "manual"
        assert [g["state"] for g in ledger.generations()] == ["previous", "current"]
        assert ledger.get_meta("config_hash") == config_hash(CONFIG_B)
        changes = ledger.changes(2)
    # The change report lists every case, with its class Dice, side statuses and measurement shifts.
    assert sorted(changes) == sorted(first)
    for record in changes.values():
        assert record["case_status"] == ["done", "done"] and record["min_dice"] is not None
        assert set(record["sides"]) == {"left", "right"}
    # The case with a manual label is compared with it (on tiny phantoms both pseudo labels are far from it).
    against = changes[manual_case]["manual"]
    assert against["review"] == (against["dice_new"] <= against["dice_previous"] - REVIEW_DICE_DROP)
    assert resumed.review == ([manual_case] if against["review"] else [])
    assert all("manual" not in record for case, record in changes.items() if case != manual_case)
    report = (dataset / "report.html").read_text(encoding="utf-8")
    assert report.count('<table id="changes">') == 1 and all(f">{c}</td>" in report for c in first)
    status = subprocess.run([str(BIN / "thagpu"), "dataset", "status", str(dataset)], capture_output=True, text=True,
                            env={"COLUMNS": "200", "PATH": str(BIN)})
    assert status.returncode == 0 and "generation 2 (current)" in status.stdout, status.stderr
    export = export_dataset(dataset, tmp_path / "export", split=0.5)
    assert json.loads((export.out / "dataset.json").read_text(encoding="utf-8"))["thagpu"]["generation"] == 2

    # Nothing changed since: no new generation, no case read.
    again = regenerate_dataset(dataset, config=CONFIG_B, workers=1, device="cpu")
    assert again.generation is None and again.processed == 0

    # Restore generation 1: A's labels byte for byte, A's configuration; a build under A resumes there.
    restore_generation(dataset, 1)
    assert _labels_of(dataset) == first
    assert build_dataset(inputs, dataset, workers=1, device="cpu", resume=True).processed == 0
    restore_generation(dataset, 2)
    assert _labels_of(dataset) == now
    with pytest.raises(InputError, match="is current"):
        restore_generation(dataset, 2)

    # Pruning deletes generation 1's files (no current row uses them); it cannot be restored after.
    pruned = prune_generations(dataset)
    assert pruned["pruned"] == [1] and pruned["files"] == 3 * len(first)
    assert not any((dataset / path).exists() for path, _ in first.values())
    assert _labels_of(dataset) == now
    with pytest.raises(InputError, match="pruned"):
        restore_generation(dataset, 1)


def test_a_failed_regeneration_keeps_the_label_and_a_mistake_records_nothing(refined, tmp_path):
    source, _, inputs = refined
    dataset = tmp_path / "ds"
    shutil.copytree(source, dataset)
    shutil.copytree(inputs, tmp_path / "in")  # this test breaks an input: its own copy
    with sqlite3.connect(dataset / LEDGER_NAME) as db:
        db.execute("UPDATE cases SET input_path = replace(input_path, ?, ?)", (str(inputs), str(tmp_path / "in")))
    first = _labels_of(dataset)
    # A wrong device or an unreachable scheduler: refused in one line, no generation left waiting.
    with pytest.raises(ThagpuError, match="GPU"):
        regenerate_dataset(dataset, config=CONFIG_B, device="gpu")
    with pytest.raises(InputError, match="cannot reach the scheduler"):
        regenerate_dataset(dataset, config=CONFIG_B, scheduler="tcp://127.0.0.1:9")
    with pytest.raises(InputError, match="--only failed keeps one configuration"):
        regenerate_dataset(dataset, config=CONFIG_B, only="failed")
    with GenerationLedger(dataset / LEDGER_NAME) as ledger:
        assert ledger.unfinished() is None and ledger.get_meta("regenerating") is None
        rows = ledger.rows()
    # An input rewritten into something unreadable: its case fails in the new generation, and keeps
    # its earlier pseudo label (a dataset never loses a good label to a regeneration).
    broken = rows[1]
    Path(broken["input_path"]).write_bytes(b"not a CT any more")
    summary = regenerate_dataset(dataset, workers=1, device="cpu")
    assert summary.generation == 2 and summary.processed == 1
    with GenerationLedger(dataset / LEDGER_NAME) as ledger:
        row = next(r for r in ledger.rows() if r["case_id"] == broken["case_id"])
        record = ledger.changes(2)[broken["case_id"]]
    assert row["status"] == "done" and _labels_of(dataset) == first
    assert record["case_status"] == ["done", "failed"] and "kept the earlier pseudo label" in record["note"]


def test_regenerate_mistakes_are_one_line_errors(refined, tmp_path):
    source, _, _ = refined
    with pytest.raises(InputError, match="not a dataset folder"):
        regenerate_dataset(tmp_path / "nothing")
    with pytest.raises(InputError, match="--only must be one of"):
        regenerate_dataset(source, only="some")
    with pytest.raises(InputError, match="never regenerated"):
        restore_generation(source, 1)
    result = subprocess.run([str(BIN / "thagpu"), "dataset", "regenerate", str(source), "--only", "some"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--only must be one of" in result.stderr


def test_only_selects_changed_inputs_versions_and_configs_or_failed(tmp_path):
    from thagpu._version import __version__
    from thagpu.dataset.inputs import content_hash, input_signature

    paths = {}
    for name in ("same", "touched", "rewritten", "old", "failed"):
        paths[name] = tmp_path / f"{name}.bin"
        paths[name].write_bytes(name.encode())
    wanted = config_hash(Config())
    rows = {name: {"case_id": name, "input_path": str(path), "status": "failed" if name == "failed" else "done",
                   "input_signature": input_signature(path), "input_hash": content_hash(path),
                   "version": "0.0.1" if name == "old" else __version__, "config_hash": wanted}
            for name, path in paths.items()}
    os.utime(paths["touched"], ns=(1, 10 ** 18))  # only the time moved: not a change
    paths["rewritten"].write_bytes(b"other content")
    assert _select(rows, "changed", wanted)[0] == ["rewritten", "old"]
    assert _select(rows, "changed", "another")[0] == list(rows)
    assert _select(rows, "failed", wanted)[0] == ["failed"]
    assert _select(rows, "all", wanted)[0] == list(rows)


def test_a_manual_label_the_new_pseudo_label_agrees_with_less_is_listed_for_review(tmp_path):
    from thagpu.geometry import Geometry
    geometry = Geometry(size=(24, 24, 24), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=tuple(np.eye(3).ravel()))
    manual = np.zeros((24, 24, 24), np.uint8)
    manual[4:12, 4:12, 4:12] = 1
    manual[14:20, 14:20, 14:20] = 3
    moved = np.roll(manual, 2, axis=0)
    for name, array in (("manual", manual), ("old", manual), ("new", moved), ("same", manual)):
        write_image(array, geometry, tmp_path / f"{name}.nii.gz")
    measurements = {"sides": {"left": {"status": "ok", "head_center_mm": [0, 0, 0], "head_radius_mm": 24.0}}}
    (tmp_path / "m_old.json").write_text(json.dumps(measurements), encoding="utf-8")
    measurements["sides"]["left"].update(status="low_confidence", head_center_mm=[3, 4, 0], head_radius_mm=25.0)
    (tmp_path / "m_new.json").write_text(json.dumps(measurements), encoding="utf-8")
    previous = {"labels": "old.nii.gz", "measurements": "m_old.json", "manual": "manual.nii.gz"}
    record = compare_outputs(tmp_path, previous, {"labels": "new.nii.gz", "measurements": "m_new.json"})
    assert record["dice"]["femoral_head_left"] == pytest.approx(0.75) and record["dice"]["acetabulum_left"] is None
    assert record["manual"]["dice_previous"] == 1.0 and record["manual"]["review"]
    assert record["manual"]["dice_new"] <= 1.0 - REVIEW_DICE_DROP
    left = record["sides"]["left"]
    assert left["status"] == ["ok", "low_confidence"] and left["head_center_shift_mm"] == 5.0
    assert left["head_radius_change_mm"] == 1.0
    unchanged = compare_outputs(tmp_path, previous, {"labels": "same.nii.gz", "measurements": "m_old.json"})
    assert unchanged["min_dice"] == 1.0 and not unchanged["manual"]["review"]
