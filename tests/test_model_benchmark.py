"""Model benchmark: four networks, tiny, on the CPU; results, resume, refusals (the benchmark summary:
tests/test_readme_figures.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import build_tiny_dataset
from thagpu.dataset import export_dataset
from thagpu.errors import InputError
from thagpu.model_benchmark import RESULT_KEYS, benchmark_models, read_split

MODELS = ["unet", "attention_unet", "segresnet", "dynunet"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    export_dataset(build_tiny_dataset(root, 7600), root / "export", fmt="msd", split=0.5, seed=0)
    return root / "export"


def test_read_split_lists_existing_files(export):
    training, test = read_split(export)
    assert len(training) == 2 and len(test) == 2
    assert all(item["image"].is_file() and item["label"].is_file() for item in training + test)


def test_four_networks_train_evaluate_and_resume(export, tmp_path):
    progress = []
    results = benchmark_models(export, tmp_path / "bench", MODELS, size="tiny", epochs=1, device="cpu",
                               progress=lambda what, i, n: progress.append(i))
    assert [r["model"] for r in results] == MODELS and progress == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [list(r) for r in summary] == [list(RESULT_KEYS)] * 4
    for result in summary:
        assert set(result["dice"]) >= {"femoral_head_left", "acetabulum_right", "other_bone", "mean_hips"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in result["dice"].values())
        assert all(v is None or (v >= 0 and not math.isnan(v)) for v in result["hd95"].values())
        assert result["train_s"] > 0 and result["infer_s_per_case"] > 0 and result["peak_mem_mb"] > 100
    # Each network trains from the same seed on the same samples: the same settings are recorded.
    settings = [r["settings"] for r in results]
    assert all({k: v for k, v in s.items() if k != "model"} == {k: v for k, v in settings[0].items() if k != "model"}
               for s in settings)
    table = (tmp_path / "bench" / "results.md").read_text()
    assert all(f"| {m} |" in table for m in MODELS)
    assert (tmp_path / "bench" / "results.png").stat().st_size > 5000
    # Resume: nothing is trained again.
    stamps = {m: (tmp_path / "bench" / m / "result.json").stat().st_mtime_ns for m in MODELS}
    benchmark_models(export, tmp_path / "bench", MODELS, size="tiny", epochs=1, device="cpu")
    assert stamps == {m: (tmp_path / "bench" / m / "result.json").stat().st_mtime_ns for m in MODELS}
    with pytest.raises(InputError, match="other settings"):  # results of another budget are not mixed in
        benchmark_models(export, tmp_path / "bench", MODELS, size="tiny", epochs=2, device="cpu")


def test_bad_requests_are_refused_before_training(export, tmp_path):
    with pytest.raises(InputError, match="unknown network"):
        benchmark_models(export, tmp_path / "b", ["unet", "vnet9"], size="tiny")
    with pytest.raises(InputError, match="patch of at least 64"):
        benchmark_models(export, tmp_path / "b", ["swinunetr"], size="tiny")
    with pytest.raises(InputError, match="training and test"):
        benchmark_models(tmp_path, tmp_path / "b", ["unet"], size="tiny")
    assert not (tmp_path / "b").exists()


def test_metrics_score_the_labelled_box_and_count_misses():
    """MONAI's metrics on the box around the labels equal those on the whole grid; a class missed
    or predicted where the truth has none is counted (MONAI gives it an infinite ASSD, a NaN HD95)."""
    from thagpu import model_benchmark

    truth = np.zeros((60, 50, 40), np.uint8)
    prediction = np.zeros_like(truth)
    truth[10:30, 12:25, 5:20] = 1
    prediction[12:31, 10:25, 6:21] = 1
    truth[0:8, 0:6, 0:4] = 3  # missed, at the volume's corner
    prediction[40:45, 5:9, 30:35] = 2  # predicted, not in the truth
    spacing = (0.8, 0.9, 1.5)
    scores = model_benchmark._metrics(prediction, truth, spacing)
    whole = np.zeros((90, 80, 70), np.uint8), np.zeros((90, 80, 70), np.uint8)  # more background all round
    whole[0][10:70, 10:60, 10:50], whole[1][10:70, 10:60, 10:50] = prediction, truth
    padded = model_benchmark._metrics(*whole, spacing)
    for metric, values in scores.items():
        assert padded[metric] == pytest.approx(values, nan_ok=True)
    assert scores["dice"]["femoral_head_left"] == pytest.approx(2 * 18 * 13 * 14 / (20 * 13 * 15 + 19 * 15 * 15))
    assert model_benchmark._missed([scores, scores]) == {"femoral_head_left": 0, "acetabulum_left": 2,
                                                           "femoral_head_right": 2, "acetabulum_right": 0,
                                                           "other_bone": 0}
