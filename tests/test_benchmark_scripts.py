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
