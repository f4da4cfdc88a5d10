"""The GPU session's scripts, dry-run on the CPU so they are known to work before a GPU is lent."""

import json

from benchmarks import gpu_pipeline


def test_gpu_pipeline_dry_run_on_the_cpu(tmp_path, capsys):
    gpu_pipeline.main(["--device", "cpu", "--size", "small", "--repeats", "1", "--seed", "4001",
                       "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_pipeline.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["device"] == "cpu" and result["labels_differing_voxels"] == 0  # the CPU against itself
    assert result["gpu_s"] > 0 and result["hip_voxels"] > 0
    # Where the time goes: both stages' own steps.
    assert {"bone.energy", "bone.graph_cut", "afs.candidates", "afs.boundary", "afs.split"} <= set(
        result["gpu_substage_s"])
    for side in ("left", "right"):
        assert result["sides"][side]["status_gpu"] == result["sides"][side]["status_cpu"]
        assert result["sides"][side].get("centre_diff_mm") == 0.0  # absent if a side had no head


def test_accuracy_summary_counts_confidently_wrong_sides_and_the_ok_share():
    from benchmarks.bench_accuracy import summarise_sides

    def side(status, centre, truth_status="ok", radius=0.2):
        return {"side": "left", "status": status, "truth_status": truth_status, "dice_head": 0.96,
                "dice_acetabulum": 0.93, "centre_err_mm": centre, "radius_err_mm": radius}

    cases = [{"bone_dice": 0.98, "bone_s": 1.0, "afs_s": 1.0, "sides": [side("ok", 0.4), side("ok", 2.5)]},
             {"bone_dice": 0.96, "bone_s": 1.0, "afs_s": 1.0,
              "sides": [side("low_confidence", 9.0), side("truncated", None, truth_status="truncated")]}]
    summary = summarise_sides(cases, 1.0)
    assert summary["natural_sides"] == 3 and summary["ok_share"] == 2 / 3
    assert summary["confidently_wrong"] == 2  # 2.5 mm off, and a truncated side with no centre
    assert summary["ok_max_centre_mm"] == 2.5 and summary["min_bone_dice"] == 0.96
    assert not summary["targets"]["confidently wrong = 0"] and not summary["targets"]["ok sides >= 90%"]
    assert "ok centre <= 1.5 mm" in summarise_sides(cases, 3.0)["targets"]  # coarser voxels, looser limit
