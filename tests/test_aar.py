"""AAR: uncertainty, K-fold training and out-of-fold scoring, resume, queue, import, simulation."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_dataset
from thagpu import labels as schema
from thagpu.aar import RefineStore, import_labels, make_queue, score_round, train_round, uncertainty
from thagpu.aar import rounds as rounds_module
from thagpu.aar.networks import NETWORKS, make_network
from thagpu.aar.train import checkpoint_path, load_model, load_sample, predict, train_fold
from thagpu.config import AARConfig, Config
from thagpu.errors import InputError
from thagpu.geometry import Geometry
from thagpu.io import load_ct, load_labels, write_image
from thagpu.qc import LABEL_COLOURS

TINY = AARConfig(model="unet", width=8, spacing_mm=4.5, patch_size=32, folds=2, epochs=2, samples_per_case=2,
                 batch_size=2)
TINY_TOML = """[aar]
model = "unet"
width = 8
spacing_mm = 4.5
patch_size = 32
folds = 2
epochs = 2
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("aar")
    build_tiny_dataset(root, 7500)
    return root


@pytest.fixture
def fresh(dataset, tmp_path):
    """A private copy of the built dataset (each test changes its refinement state)."""
    shutil.copytree(dataset / "built", tmp_path / "ds")
    return tmp_path / "ds"


def test_uncertainty_is_zero_for_agreement_and_grows_with_disagreement():
    label = np.zeros((20, 20, 20), np.uint8)
    label[2:8, 2:8, 2:8] = schema.FEMORAL_HEAD_LEFT
    label[12:18, 12:18, 12:18] = schema.ACETABULUM_RIGHT
    same = uncertainty(label, label.copy(), 2.0, TINY)
    assert same["score"] == 0.0 and same["disagree_ml"] == 0.0 and same["boundary_mm"] == 0.0
    shifted = np.roll(label, 2, axis=0)
    moved = uncertainty(label, shifted, 2.0, TINY)
    wrong = uncertainty(label, np.zeros_like(label), 2.0, TINY)
    assert 0 < moved["score"] < wrong["score"]
    assert wrong["dice_uncertainty"] == pytest.approx(0.5)  # 2 of 4 hip classes lost, 2 absent in both
    assert wrong["disagree_ml"] == pytest.approx(2 * 216 * 8 / 1000)
    assert wrong["boundary_mm"] == TINY.boundary_mm


@pytest.mark.parametrize("name, width, patch", [(n, 4, 32) for n in NETWORKS] + [
    ("attention_unet", 4, 32), ("segresnet", 12, 32), ("unetr", 8, 32), ("swinunetr", 12, 64)])
def test_networks_give_six_class_logits(name, width, patch):
    import torch
    model = make_network(name, width=width, patch_size=patch).eval()
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 1, patch, patch, patch)).shape) == (1, 6, patch, patch, patch)


def test_segresnet_feeds_its_last_convolution_signed_features():
    """After a ReLU the last 1 x 1 x 1 convolution sees only non-negative features, and a narrow one
    can leave a class no feature of its own (docs/benchmarks.md); PReLU keeps them signed."""
    import torch
    net = make_network("segresnet", width=8, patch_size=32)
    assert any(isinstance(m, torch.nn.PReLU) for m in net.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())


def test_a_checkpoint_that_does_not_fit_is_a_one_line_input_error(tmp_path):
    """A SegResNet checkpoint from before PReLU (MONAI's default ReLU) has no PReLU weights: PyTorch's
    error lists every key over many lines; the user gets one line that names the file and the cause."""
    import torch
    from monai.networks.nets import SegResNet
    old = SegResNet(spatial_dims=3, in_channels=1, out_channels=6, init_filters=8, norm=("GROUP", {"num_groups": 8}),
                    blocks_down=(1, 2, 2), blocks_up=(1, 1))
    path = tmp_path / "fold_0.pt"
    torch.save({"model": "segresnet", "width": 8, "patch_size": 16, "state_dict": old.state_dict()}, path)
    with pytest.raises(InputError, match="do not fit today's segresnet network") as caught:
        load_model(path, "cpu")
    assert len(str(caught.value).splitlines()) == 1 and str(path) in str(caught.value)
    torch.save({"model": "vnet9", "width": 8, "patch_size": 16, "state_dict": {}}, path)
    with pytest.raises(InputError, match="unknown network 'vnet9'"):
        load_model(path, "cpu")
    path.write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a thagpu fold checkpoint"):
        load_model(path, "cpu")


def test_merge_changes_touches_only_the_changed_voxels():
    from thagpu.aar.roi import HipROI
    from thagpu.aar.rounds import merge_changes
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (20, 20, 20)).astype(np.uint8)
    roi = HipROI(start=(2.0, 2.0, 2.0), step=(2.0, 2.0, 2.0), shape=(8, 8, 8), spacing_mm=2.0)
    change = np.zeros(roi.shape, bool)
    change[3, 4, 5] = True
    prediction = np.full(roi.shape, 3, np.uint8)
    fused = merge_changes(labels, roi, change, prediction)
    differs = np.argwhere(fused != labels)
    assert len(differs) <= 8 and np.all(np.abs(differs - np.array([8, 10, 12])) <= 1)
    assert np.all(fused[tuple(differs.T)] == 3)


def test_training_is_seeded_and_deterministic(fresh, tmp_path):
    with RefineStore(fresh) as store:
        rows = store.cases()
        samples = [load_sample(row, store.current_label(row)[1], TINY)[0] for row in rows[:2]]
    mirrored = replace(TINY, mirror_sides=True)
    import torch

    def weights(config, name):
        return torch.load(train_fold(samples, 0, 1, config, "cpu", tmp_path / name), weights_only=False)

    a, b, c, d = weights(TINY, "a.pt"), weights(TINY, "b.pt"), weights(mirrored, "c.pt"), weights(mirrored, "d.pt")
    assert a["train_cases"] == sorted(s.case_id for s in samples)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # Mirrored patients are seeded too, and do reach the network (its weights differ).
    assert all(torch.equal(c["state_dict"][k], d["state_dict"][k]) for k in c["state_dict"])
    assert not all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_folds_never_predict_their_own_training_cases(fresh):
    round_ = train_round(fresh, TINY, "cpu")
    scores = score_round(fresh, "cpu")
    with RefineStore(fresh) as store:
        case_ids = [row["case_id"] for row in store.cases()]
        folds = store.folds(case_ids, TINY.folds, TINY.seed)
    assert sorted(scores) == sorted(case_ids) and sorted(set(folds.values())) == [0, 1]
    for fold in range(TINY.folds):
        _, checkpoint = load_model(checkpoint_path(fresh, round_, fold), "cpu")
        assert set(checkpoint["train_cases"]) == {c for c, f in folds.items() if f != fold}
    for case_id, item in scores.items():
        assert item["fold"] == folds[case_id]
        model, checkpoint = load_model(checkpoint_path(fresh, round_, item["fold"]), "cpu")
        assert case_id not in checkpoint["train_cases"]
        assert item["score"] >= 0 and set(item["parts"]["per_class"]) == {
            "femoral_head_left", "acetabulum_left", "femoral_head_right", "acetabulum_right"}
    # Asking a fold's model for a case it trained on is refused.
    trained_on = next(c for c, f in folds.items() if f == 1)
    model, checkpoint = load_model(checkpoint_path(fresh, round_, 0), "cpu")
    with RefineStore(fresh) as store:
        row = next(r for r in store.cases() if r["case_id"] == trained_on)
        sample = load_sample(row, store.current_label(row)[1], TINY)[0]
    with pytest.raises(RuntimeError, match="must not predict"):
        predict(model, checkpoint, sample, "cpu", 0.25)


def test_a_stopped_round_continues_with_its_finished_folds(fresh, monkeypatch):
    real = rounds_module.train_fold

    def stop_at_fold_one(samples, fold, *args, **kwargs):
        if fold == 1:
            raise KeyboardInterrupt
        return real(samples, fold, *args, **kwargs)

    monkeypatch.setattr(rounds_module, "train_fold", stop_at_fold_one)
    with pytest.raises(KeyboardInterrupt):
        train_round(fresh, TINY, "cpu")
    first = checkpoint_path(fresh, 1, 0)
    stamp = first.stat().st_mtime_ns
    assert not checkpoint_path(fresh, 1, 1).exists()
    monkeypatch.setattr(rounds_module, "train_fold", real)
    # The round continues as it began, whatever the new settings say.
    assert train_round(fresh, AARConfig(epochs=7, folds=3), "cpu") == 1
    assert first.stat().st_mtime_ns == stamp and checkpoint_path(fresh, 1, 1).is_file()
    with RefineStore(fresh) as store:
        assert store.latest_round()["trained_at"] is not None
    # Scoring resumes too: cases already scored in the round are kept.
    scores = score_round(fresh, "cpu")
    assert score_round(fresh, "cpu") == scores


def test_queue_exports_the_most_uncertain_cases_in_their_own_geometry(fresh, tmp_path):
    train_round(fresh, TINY, "cpu")
    scores = score_round(fresh, "cpu")
    entries = make_queue(fresh, 2, tmp_path / "queue", "cpu")
    ranked = sorted(scores, key=lambda c: (-scores[c]["score"], c))
    assert [e.case_id for e in entries] == ranked[:2]
    with open(tmp_path / "queue" / "queue.csv", newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert [row["case_id"] for row in listed] == ranked[:2]
    with RefineStore(fresh) as store:
        rows = {row["case_id"]: row for row in store.cases()}
    for entry in entries:
        folder = tmp_path / "queue" / entry.folder
        volume = load_ct(rows[entry.case_id]["input_path"])
        assert np.allclose(load_ct(folder / "ct.nii.gz").array, np.rint(volume.array))
        label, prediction, disagreement = (load_labels(folder / name, volume, allowed=schema.LABEL_NAMES)
                                           for name in ("label.nii.gz", "prediction.nii.gz", "disagreement.nii.gz"))
        assert np.array_equal(disagreement, (label != prediction).astype(np.uint8))
        assert (folder / "qc.png").stat().st_size > 1000
    table = (tmp_path / "queue" / "thagpu_labels.ctbl").read_text(encoding="utf-8").splitlines()
    assert table[1:] == [f"{v} {n} " + " ".join(map(str, rounds_module.TABLE_COLOURS[v])) + f" {0 if v == 0 else 255}"
                         for v, n in schema.LABEL_NAMES.items()]
    assert table[4].split()[2:5] == [str(c) for c in LABEL_COLOURS[3]]  # the QC picture's colours
    assert '"acetabulum_right"' in (tmp_path / "queue" / "thagpu_labels.txt").read_text(encoding="utf-8")
    # Labels nobody corrected are not imported; corrected ones become manual and leave the next queue.
    with pytest.raises(InputError, match="unchanged"):
        import_labels(fresh, tmp_path / "queue")
    for entry in entries:
        volume = load_ct(rows[entry.case_id]["input_path"])
        truth = load_labels(Path(rows[entry.case_id]["input_path"]).parent / "gt.nii.gz", volume)
        write_image(volume.to_stored(truth), volume.original, tmp_path / "queue" / entry.folder / "label.nii.gz")
    assert sorted(import_labels(fresh, tmp_path / "queue")) == sorted(ranked[:2])
    later = make_queue(fresh, 4, tmp_path / "queue2", "cpu")
    assert {e.case_id for e in later} == set(ranked[2:])
    with pytest.raises(InputError, match="not empty"):
        make_queue(fresh, 1, tmp_path / "queue", "cpu")


def test_import_checks_grid_values_and_hips_and_is_all_or_nothing(fresh, tmp_path):
    with RefineStore(fresh) as store:
        rows = store.cases()
    volumes = [load_ct(row["input_path"]) for row in rows[:2]]
    good = tmp_path / "good"
    truth = [load_labels(Path(row["input_path"]).parent / "gt.nii.gz", v) for row, v in zip(rows, volumes)]
    write_image(volumes[0].to_stored(truth[0]), volumes[0].original, good / f"{rows[0]['case_id']}.nii.gz")

    def refused(array, geometry, match):
        folder = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        shutil.copytree(good, folder)
        write_image(array, geometry, folder / f"{rows[1]['case_id']}.nii.gz")
        with pytest.raises(InputError, match=match):
            import_labels(fresh, folder)
        with RefineStore(fresh) as store:
            assert store.label_sources() == {}  # the good file was not imported either

    other = volumes[1].original
    shifted = Geometry(size=other.size, spacing=other.spacing, origin=tuple(o + 3.0 for o in other.origin),
                       direction=other.direction)
    stored = volumes[1].to_stored(truth[1])
    refused(stored, shifted, "not on the CT's grid")
    refused(np.where(stored == 5, 9, stored).astype(np.uint8), other, "unknown label value")
    refused(np.where(np.isin(stored, [1, 2, 3, 4]), 5, stored).astype(np.uint8), other, "no hip label")
    assert import_labels(fresh, good) == [rows[0]["case_id"]]
    with RefineStore(fresh) as store:
        source, path = store.current_label(rows[0])
    assert source == "manual" and np.array_equal(load_labels(path, volumes[0]), truth[0])
    with pytest.raises(InputError, match="never overwritten"):
        import_labels(fresh, good)


def test_fuse_proposes_model_refined_labels_and_never_touches_manual(fresh, tmp_path):
    with RefineStore(fresh) as store:
        rows = store.cases()
    volume = load_ct(rows[0]["input_path"])
    truth = load_labels(Path(rows[0]["input_path"]).parent / "gt.nii.gz", volume)
    write_image(volume.to_stored(truth), volume.original, tmp_path / "m" / f"{rows[0]['case_id']}.nii.gz")
    import_labels(fresh, tmp_path / "m")
    train_round(fresh, TINY, "cpu")
    score_round(fresh, "cpu", fuse=True)
    with RefineStore(fresh) as store:
        sources = store.label_sources()
    assert sources[rows[0]["case_id"]][0] == "manual"
    refined = [c for c, (source, _) in sources.items() if source == "model-refined"]
    assert refined  # two barely trained folds agree on plenty that the pseudo labels do not
    for case_id in refined:
        row = next(r for r in rows if r["case_id"] == case_id)
        assert set(np.unique(load_labels(sources[case_id][1], load_ct(row["input_path"])))) <= set(schema.LABEL_NAMES)


def test_simulation_runs_tiny_and_resumes(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML.replace("epochs = 2", "epochs = 1"))  # the plumbing, not the learning
    command = [sys.executable, "-m", "thagpu.cli", "refine", "simulate", "--out", str(tmp_path / "sim"),
               "--cases", "4", "--rounds", "2", "--budget", "1", "--size", "tiny", "--config", str(config),
               "--device", "cpu", "--strategies", "disagreement,epistemic", "--dropout", "0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # Not a terminal: one progress line per built case, epoch, scored case and round, with elapsed and ETA.
    lines = result.stderr.splitlines()
    # (random: its draw in test_strategies_rank_by_their_own_value_and_random_is_seeded, its rounds in
    # test_simulation_stopped_after_choosing_does_not_choose_again, which runs the default strategies.)
    for stage, count in (("dataset build:", 4), ("disagreement round 1: fold 0:", 1),
                         ("epistemic round 2: fold 1:", 1), ("epistemic round 1: scoring:", 4)):
        found = [line for line in lines if stage in line]
        assert len(found) == count and all("elapsed" in line and "eta" in line for line in found), (stage, lines)
    summary = json.loads((tmp_path / "sim" / "simulation.json").read_text(encoding="utf-8"))
    curves = summary["strategies"]
    assert set(curves) == {"disagreement", "epistemic"} and all(len(v) == 3 for v in curves.values())
    assert curves["disagreement"][0] == curves["epistemic"][0] < 0.9  # pseudo labels err
    epistemic = summary["rounds_detail"]["epistemic"][1]
    assert epistemic["chosen"] == sorted(epistemic["scores"], key=lambda c: (-epistemic["scores"][c], c))[:1]
    for values in curves.values():  # the oracle's truth never lowers a case's Dice
        assert all(0.0 <= a <= b <= 1.0 for a, b in zip(values, values[1:]))
    detail = summary["rounds_detail"]["disagreement"]
    assert [len(r["chosen"]) for r in detail] == [0, 1, 1] and detail[1]["chosen"] != detail[2]["chosen"]
    assert (tmp_path / "sim" / "simulation.png").stat().st_size > 5000
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and json.loads((tmp_path / "sim" / "simulation.json").read_text(encoding="utf-8"))["strategies"] == curves


def test_simulation_stopped_after_choosing_does_not_choose_again(tmp_path, monkeypatch):
    import importlib
    simulate_module = importlib.import_module("thagpu.aar.simulate")  # thagpu.aar.simulate is also the function
    config = Config(aar=TINY)
    real, calls = simulate_module._oracle, []

    def stop_once(folder, case_ids):
        calls.append(list(case_ids))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(folder, case_ids)

    monkeypatch.setattr(simulate_module, "_oracle", stop_once)
    with pytest.raises(KeyboardInterrupt):
        simulate_module.simulate(tmp_path, cases=4, rounds=1, budget=1, size="tiny", config=config)
    summary = simulate_module.simulate(tmp_path, cases=4, rounds=1, budget=1, size="tiny", config=config)
    chosen = summary["rounds_detail"]["disagreement"][1]["chosen"]
    assert calls[0] == calls[1] == chosen and len(chosen) == 1  # the same case, once
    with pytest.raises(InputError, match="other settings"):
        simulate_module.simulate(tmp_path, cases=4, rounds=1, budget=2, size="tiny", config=config)


def test_refine_cli_errors_are_one_line(fresh, tmp_path):
    for args in (["refine", "score", str(fresh)], ["refine", "queue", str(fresh), "--budget", "1", "--out", str(tmp_path / "q")],
                 ["refine", "train", str(tmp_path / "nowhere")]):
        result = subprocess.run([sys.executable, "-m", "thagpu.cli", *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _dropout_model(logits_of):
    """A stand-in network: logits computed from a dropout layer's output, so Monte-Carlo passes differ."""
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(p=0.5)

        def forward(self, x):
            return logits_of(self.drop(torch.ones_like(x)), x)

    return Model().eval()


def test_mc_dropout_entropy_is_zero_when_certain_one_when_uniform_and_seeded():
    import torch

    from thagpu.aar.strategies import mc_dropout_entropy

    image = np.zeros((16, 16, 16), np.float32)
    certain = _dropout_model(lambda d, x: torch.cat([x * 0 + 50.0] + [x * 0] * 5, dim=1))
    uniform = _dropout_model(lambda d, x: torch.cat([x * 0] * 6, dim=1))
    # Class 0 wins where the dropout mask kept the voxel, class 1 where it dropped it: passes disagree.
    flipping = _dropout_model(lambda d, x: torch.cat([d * 10.0, (1 - d) * 10.0] + [x * 0 - 50.0] * 4, dim=1))
    assert mc_dropout_entropy(certain, image, 16, "cpu", 0.25, samples=4) == pytest.approx(0.0, abs=1e-6)
    assert mc_dropout_entropy(uniform, image, 16, "cpu", 0.25, samples=4) == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    few = mc_dropout_entropy(flipping, image, 16, "cpu", 0.25, samples=8, seed=1)
    assert torch.equal(torch.get_rng_state(), before)  # the global random state is left alone
    assert 0.2 < few < np.log(2) / np.log(6) + 1e-6  # two classes share the voxels: at most log 2 / log 6
    assert mc_dropout_entropy(flipping, image, 16, "cpu", 0.25, samples=8, seed=1) == few
    assert not flipping.training and not flipping.drop.training  # dropout switched back off
    with pytest.raises(ValueError, match="no dropout"):
        mc_dropout_entropy(make_network("unet", 4, 16).eval(), image, 16, "cpu", 0.25)


def test_strategies_rank_by_their_own_value_and_random_is_seeded():
    from thagpu.aar.strategies import choose

    scores = {"a": {"score": 0.2, "parts": {"epistemic": 0.9}}, "b": {"score": 0.5, "parts": {"epistemic": 0.1}},
              "c": {"score": 0.5, "parts": {"epistemic": 0.3}}, "d": {"score": 0.1, "parts": {}}}
    assert choose("disagreement", scores, 2, scores=scores) == ["b", "c"]  # tie broken by case id
    assert choose("epistemic", ["a", "b", "c"], 2, scores=scores) == ["a", "c"]
    with pytest.raises(InputError, match="without Monte-Carlo dropout"):
        choose("epistemic", scores, 1, scores=scores)
    draws = {tuple(choose("random", "abcdefgh", 3, seed=s, round_=1)) for s in range(6)}
    assert choose("random", "abcdefgh", 3, seed=2, round_=1) == choose("random", "abcdefgh", 3, seed=2, round_=1)
    assert len(draws) > 1
    with pytest.raises(InputError):
        choose("first", scores, 1, scores=scores)


def test_dropout_round_scores_mc_entropy_and_the_queue_ranks_by_it(fresh, tmp_path):
    from dataclasses import replace

    config = replace(TINY, dropout=0.2, mc_samples=3)
    round_ = train_round(fresh, config, "cpu")
    model, checkpoint = load_model(checkpoint_path(fresh, round_, 0), "cpu")
    assert checkpoint["dropout"] == 0.2 and any(isinstance(m, __import__("torch").nn.Dropout) for m in model.modules())
    scores = score_round(fresh, "cpu")
    values = {c: item["parts"]["epistemic"] for c, item in scores.items()}
    assert all(0.0 < v < 1.0 for v in values.values()) and len(set(values.values())) == len(values)
    entries = make_queue(fresh, 2, tmp_path / "queue", "cpu", strategy="epistemic")
    assert [e.case_id for e in entries] == sorted(values, key=lambda c: (-values[c], c))[:2]
    assert [e.score for e in entries] == [values[e.case_id] for e in entries]
    with open(tmp_path / "queue" / "queue.csv", newline="") as handle:
        assert {row["strategy"] for row in csv.DictReader(handle)} == {"epistemic"}
