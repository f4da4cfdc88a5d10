"""Model benchmark: four networks, tiny, on the CPU; seeds and their intervals; presets; results,
resume, refusals (the benchmark summary: tests/test_readme_figures.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import build_tiny_dataset
from thagpu.dataset import export_dataset
from thagpu.errors import InputError
from thagpu.config import AARConfig
from thagpu.model_benchmark import (PRESET_MODELS, PRESET_SEEDS, PRESETS, RESULT_KEYS, aggregate_seeds,
                                    benchmark_models, default_preset, read_split)

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
    results = benchmark_models(export, tmp_path / "bench", MODELS, preset="tiny", epochs=1, device="cpu",
                               progress=lambda what, i, n: progress.append(i))
    assert [r["model"] for r in results] == MODELS and progress == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))
    assert [list(r) for r in summary] == [list(RESULT_KEYS)] * 4
    for result in summary:
        assert set(result["dice"]) >= {"femoral_head_left", "acetabulum_right", "other_bone", "mean_hips"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in result["dice"].values())
        assert all(v is None or (v >= 0 and not math.isnan(v)) for v in result["hd95"].values())
        assert result["train_s"] > 0 and result["infer_s_per_case"] > 0 and result["peak_mem_mb"] > 100
    # Each network trains from the same seed on the same samples: the same settings are recorded.
    settings = [r["per_seed"][0]["settings"] for r in results]
    assert all({k: v for k, v in s.items() if k != "model"} == {k: v for k, v in settings[0].items() if k != "model"}
               for s in settings)
    table = (tmp_path / "bench" / "results.md").read_text(encoding="utf-8")
    assert all(f"| {m} |" in table for m in MODELS)
    assert (tmp_path / "bench" / "results.png").stat().st_size > 5000
    # Resume: nothing is trained again.
    stamps = {m: (tmp_path / "bench" / m / "seed_0" / "result.json").stat().st_mtime_ns for m in MODELS}
    benchmark_models(export, tmp_path / "bench", MODELS, preset="tiny", epochs=1, device="cpu")
    assert stamps == {m: (tmp_path / "bench" / m / "seed_0" / "result.json").stat().st_mtime_ns for m in MODELS}
    with pytest.raises(InputError, match="other settings"):  # results of another budget are not mixed in
        benchmark_models(export, tmp_path / "bench", MODELS, preset="tiny", epochs=2, device="cpu")


def test_bad_requests_are_refused_before_training(export, tmp_path):
    with pytest.raises(InputError, match="unknown network"):
        benchmark_models(export, tmp_path / "b", ["unet", "vnet9"], preset="tiny")
    with pytest.raises(InputError, match="patch of at least 64"):
        benchmark_models(export, tmp_path / "b", ["swinunetr"], preset="cpu")
    with pytest.raises(InputError, match="--preset must be"):
        benchmark_models(export, tmp_path / "b", ["unet"], preset="small")
    with pytest.raises(InputError, match="--seeds"):
        benchmark_models(export, tmp_path / "b", ["unet"], preset="tiny", seeds=0)
    with pytest.raises(InputError, match="training and test"):
        benchmark_models(tmp_path, tmp_path / "b", ["unet"], preset="tiny")
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


def test_seeds_run_separately_and_report_their_intervals(export, tmp_path):
    """Two seeds of one network: two runs, two initialisations, a summary of their means and intervals."""
    from scipy import stats

    results = benchmark_models(export, tmp_path / "bench", ["unet"], preset="tiny", epochs=1, seeds=2, seed=5)
    (result,) = results
    assert [r["seed"] for r in result["per_seed"]] == [5, 6]
    assert all((tmp_path / "bench" / "unet" / f"seed_{s}" / "result.json").is_file() for s in (5, 6))
    assert result["n_seeds"] == 2
    train = [r["train_s"] for r in result["per_seed"]]
    # Two runs can record the same rounded time: no spread, no width (SciPy's interval warns on scale 0).
    spread = stats.sem(train)
    half = (np.diff(stats.t.interval(0.95, 1, loc=np.mean(train), scale=spread))[0] / 2) if spread > 0 else 0.0
    assert result["train_s"] == pytest.approx(np.mean(train))
    assert result["ci95"]["train_s"] == pytest.approx(half)
    (summary,) = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))
    assert list(summary) == list(RESULT_KEYS)
    assert set(summary["ci95"]) == {"dice", "hd95", "assd", "dice_largest", "hd95_largest", "assd_largest",
                                    "train_s", "infer_s_per_case", "peak_mem_mb"}
    assert set(summary["hd95_largest"]) == set(summary["hd95"])
    assert set(summary["ci95"]["dice"]) == set(summary["dice"])
    table = (tmp_path / "bench" / "results.md").read_text(encoding="utf-8")
    assert "seeds 5-6" in table and " ± " in table
    for title in ("### Dice per class", "### HD95 (mm) per class", "### ASSD (mm) per class",
                  "### HD95 (mm), each hip class kept to its largest component, per class", "### Cost"):
        assert title in table


def test_aggregate_seeds_matches_scipy_and_skips_missing_values():
    def seed(dice, hd95, train_s, missed):
        return {"model": "segresnet", "dice": {"femoral_head_left": dice, "mean_hips": dice},
                "hd95": {"femoral_head_left": hd95, "mean_hips": hd95},
                "assd": {"femoral_head_left": 1.0, "mean_hips": 1.0}, "train_s": train_s,
                "infer_s_per_case": 2.0, "peak_mem_mb": 1000.0, "parameters": 7, "missed": {"femoral_head_left": missed}}

    per_seed = [seed(0.80, 3.0, 100.0, 0), seed(0.90, None, 110.0, 2), seed(0.85, 5.0, 90.0, 1)]
    summary = aggregate_seeds(per_seed)
    dice = [0.80, 0.90, 0.85]
    low, high = stats_interval(dice)
    assert summary["dice"]["femoral_head_left"] == pytest.approx(0.85)
    assert summary["ci95"]["dice"]["femoral_head_left"] == pytest.approx((high - low) / 2)
    # A seed without a value is left out of the mean and the interval, not counted as 0.
    low, high = stats_interval([3.0, 5.0])
    assert summary["hd95"]["femoral_head_left"] == pytest.approx(4.0)
    assert summary["ci95"]["hd95"]["femoral_head_left"] == pytest.approx((high - low) / 2)
    assert summary["ci95"]["assd"]["femoral_head_left"] == pytest.approx(0.0)
    assert summary["train_s"] == pytest.approx(100.0) and summary["missed"] == {"femoral_head_left": 3}
    assert summary["n_seeds"] == 3 and list(summary) == list(RESULT_KEYS)
    one = aggregate_seeds(per_seed[:1])
    assert one["dice"]["femoral_head_left"] == pytest.approx(0.80) and one["ci95"]["dice"]["femoral_head_left"] is None


def stats_interval(values):
    from scipy import stats
    return stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))


def test_presets_cpu_by_default_without_a_gpu_and_gpu_the_larger():
    """The CPU preset is the default off a GPU; it is coarser and smaller than the GPU one, and both
    run enough seeds for an interval (issue 14: at least 3)."""
    assert default_preset("cpu") == "cpu" and default_preset("gpu") == "gpu"
    cpu, gpu = PRESETS["cpu"], PRESETS["gpu"]
    assert cpu["spacing_mm"] > gpu["spacing_mm"] and cpu["patch_size"] < gpu["patch_size"]
    assert cpu["width"] < gpu["width"]
    assert PRESET_SEEDS["cpu"] >= 3 and PRESET_SEEDS["gpu"] >= 3
    assert {"unet", "segresnet"} <= set(PRESET_MODELS["cpu"])
    assert set(PRESET_MODELS["gpu"]) == {"unet", "attention_unet", "segresnet", "dynunet", "unetr", "swinunetr"}
    # The CPU budget is a real training run, not the smoke test's two epochs; every preset is a valid [aar].
    assert cpu["epochs"] * cpu["samples_per_case"] >= 10 * PRESETS["tiny"]["epochs"] * PRESETS["tiny"]["samples_per_case"]
    for settings in PRESETS.values():
        AARConfig(**settings)


def test_hip_weighted_crops_put_the_hips_in_most_patches():
    """With ``hip_crop_weight`` the training crops centre on each class by weight: a small hip in a
    volume of other bone is in most patches; the plain labelled/unlabelled crops rarely find it."""
    from monai.transforms import RandCropByLabelClassesd, RandCropByPosNegLabeld
    from monai.utils import set_determinism

    from thagpu.aar.train import _crop

    label = np.zeros((96, 96, 96), np.uint8)
    label[8:88, 8:88, 8:40] = 5  # other bone: most labelled voxels
    label[70:76, 70:76, 70:76] = 1  # one small femoral head, far from it
    data = {"image": np.zeros((1, *label.shape), np.float32), "label": label[None]}

    def hip_share(weight):
        set_determinism(seed=0)
        crop = _crop(AARConfig(hip_crop_weight=weight, samples_per_case=200), (16, 16, 16),
                     RandCropByLabelClassesd, RandCropByPosNegLabeld)
        crop.set_random_state(0)
        return np.mean([(np.asarray(p["label"]) == 1).any() for p in crop(data)])

    weighted, plain = hip_share(1.0), hip_share(0.0)
    assert weighted > 0.25 and plain < 0.05  # a third of the crops centre on the head (3 classes present)
    with pytest.raises(ValueError, match="hip_crop_weight"):
        AARConfig(hip_crop_weight=-1.0)


def test_largest_components_drop_stray_voxels_far_from_a_class_and_keep_the_rest():
    """A head with one stray voxel 30 mm away: HD95 counts that voxel, its largest component does not."""
    from thagpu.model_benchmark import _metrics, keep_largest_components
    truth = np.zeros((40, 40, 40), np.uint8)
    truth[5:15, 5:15, 5:15] = 1
    truth[5:15, 20:30, 5:15] = 5
    prediction = truth.copy()
    prediction[35, 35, 35] = 1  # stray voxels of the head class, far away
    prediction[35, 33, 35] = 1
    kept = keep_largest_components(prediction)
    assert prediction[35, 35, 35] == 1  # the prediction itself is left as it was
    assert kept[35, 35, 35] == 0 and kept[35, 33, 35] == 0
    assert np.array_equal(kept == 1, truth == 1) and np.array_equal(kept == 5, truth == 5)  # other bone untouched
    stray = np.zeros_like(prediction)
    stray[30:33, 30:33, 30:33] = 5  # an island of other bone stays: only the hip classes are reduced
    assert np.array_equal(keep_largest_components(prediction | stray) == 5, (truth == 5) | (stray == 5))
    raw, post = _metrics(prediction, truth, (1.0, 1.0, 1.0)), _metrics(kept, truth, (1.0, 1.0, 1.0))
    assert raw["assd"]["femoral_head_left"] > 0.05 and post["assd"]["femoral_head_left"] == pytest.approx(0.0)
    assert post["dice"]["femoral_head_left"] == pytest.approx(1.0)
