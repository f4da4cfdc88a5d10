"""The benchmark scripts, dry-run on the CPU: the GPU session's (so they are known to work before a GPU is
lent) and the side-by-side rows of the bone benchmark."""

import json

import numpy as np

from benchmarks import gpu_pipeline


def test_gpu_pipeline_dry_run_on_the_cpu(tmp_path, capsys):
    gpu_pipeline.main(["--device", "cpu", "--size", "small", "--repeats", "1", "--seed", "4001",
                       "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_pipeline.json").read_text(encoding="utf-8"))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    # A dry run compares the CPU with itself, so its parity figures say nothing about a GPU: check that
    # the fields a GPU run reports are there and well formed (tests/test_gpu_parity.py checks parity).
    assert result["device"] == "cpu" and result["repeats"] == 1
    assert isinstance(result["labels_differing_voxels"], int)
    assert 0.0 <= result["labels_differing_fraction"] <= 1.0
    assert result["gpu_s"] > 0 and result["cpu_s"] > 0 and result["hip_voxels"] > 0
    assert result["target_met"] == (result["gpu_s"] <= result["target_gpu_s"])
    # Where the time goes: both stages' own steps.
    assert {"bone.energy", "bone.graph_cut", "afs.candidates", "afs.boundary", "afs.split"} <= set(
        result["gpu_substage_s"])
    assert set(result["gpu_stage_s"]) == {"bone", "afs"}
    for side in ("left", "right"):
        entry = result["sides"][side]
        assert {"status_gpu", "status_cpu"} <= set(entry)
        if "centre_diff_mm" in entry:  # both runs found a head
            assert entry["centre_diff_mm"] >= 0 and entry["radius_diff_mm"] >= 0


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


def test_bone_speed_rows_solve_the_same_energy_to_the_same_minimum(capsys):
    """The three side-by-side rows of bench_bone on a coarse grid: the same stages, the same minimum
    energy on the whole volume, the cropped full grid solving ours' box with every voxel a node."""
    from benchmarks import bone_worker
    from benchmarks.bench_bone import add_speed_figures

    rows = []
    for method in ("fullgrid_uncropped", "fullgrid_cropped", "ours"):
        bone_worker.main([method, "2000", "hard", "4.5,4.5,4.5", "cpu"])
        rows.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    uncropped, cropped, ours = add_speed_figures(rows)
    for row in rows:
        assert set(row["stages_s"]) == {"energy", "graph_cut", "cleanup"}  # no refine: 4.5 mm is not coarse to fine
        assert row["time_s"] == round(sum(row["stages_s"].values()), 3)
        assert abs(row["energy_gap_rel"]) < 1e-9 and row["dice"] > 0.8
    assert uncropped["solved_shape"] == uncropped["shape"] and uncropped["graph_nodes"] == np.prod(uncropped["shape"])
    assert cropped["solved_shape"] == ours["solved_shape"] and cropped["graph_nodes"] == np.prod(cropped["solved_shape"])
    assert ours["graph_nodes"] < cropped["graph_nodes"] < uncropped["graph_nodes"]
    assert abs(ours["box_energy_gap_rel"]) < 1e-9
    assert {"speedup_vs_uncropped", "speedup_vs_cropped"} <= set(ours)


def test_partial_volume_case_accounts_for_every_acetabulum_error():
    """One 3 mm phantom: the perfect partial-volume reader agrees with the centre truth almost
    everywhere, our acetabulum's false and missed voxels are each counted once, and the summary
    gives them per 100 true voxels."""
    from benchmarks.bench_partial_volume import run_case, summarise

    row = run_case(9003, "anatomic", (3.0, 3.0, 3.0))
    assert 0.5 < row["bone_dice"] < 1.0 and row["bone_dice_reader"] > 0.98
    ok = [s for s in row["sides"] if s["status"] == "ok"]
    assert ok, "this seed's sides are read at 3 mm (bench_accuracy)"
    for side in ok:
        assert side["dice_acetabulum_reader"] >= side["dice_acetabulum"] - 0.02
        false = side["acet_fp_soft"] + side["acet_fp_partial"] + side["acet_fp_mostly_bone"]
        missed = side["acet_fn_unmasked"] + side["acet_fn_other_label"]
        # Dice = 2 TP / (2 TP + FP + FN), with TP = truth - FN.
        tp = side["acet_voxels"] - missed
        assert side["dice_acetabulum"] == 2 * tp / (2 * tp + false + missed)
        assert 0 <= side["acet_fn_beyond_reach"] <= side["acet_fn_other_label"]
    summary = summarise([dict(row, experiment="x")])
    assert summary["ok_sides"] == len(ok)
    assert summary["acet_fp_partial_per_100"] == round(
        100.0 * sum(s["acet_fp_partial"] for s in ok) / sum(s["acet_voxels"] for s in ok), 2)


def test_real_slabs_average_thin_slices_and_read_the_thin_mask_by_majority(abdomen_dicom):
    """A slab is the mean of its slices, centred where they are; its reference is their majority vote."""
    from benchmarks.bench_real_slabs import majority_of, slabs_of
    from thagpu import load_ct

    volume = load_ct(abdomen_dicom)
    axis = int(np.argmax(volume.spacing))
    slab_volume, slab_axis, count = slabs_of(volume, 3, 1)
    assert slab_axis == axis and count == (volume.array.shape[axis] - 1) // 3
    assert slab_volume.spacing[axis] == 3 * volume.spacing[axis]
    second = np.take(slab_volume.array, 1, axis=axis)
    assert np.allclose(second, np.take(volume.array, [4, 5, 6], axis=axis).mean(axis=axis), atol=1e-3)
    # The affine puts the slab's voxel at its middle slice's position.
    middle_of_second = np.asarray(volume.affine) @ np.array([*(5.0 if a == axis else 0.0 for a in range(3)), 1.0])
    assert np.allclose(slab_volume.affine @ np.array([*(1.0 if a == axis else 0.0 for a in range(3)), 1.0]),
                       middle_of_second)
    thin = np.zeros(volume.array.shape, dtype=bool)
    index = [slice(None)] * 3
    index[axis] = [4, 5]  # two of the second slab's three slices
    thin[tuple(index)] = True
    index[axis] = [7]  # one of the third slab's
    thin[tuple(index)] = True
    votes = majority_of(thin, axis, 3, 1, count)
    assert np.take(votes, 1, axis=axis).all() and not np.take(votes, 2, axis=axis).any()
    assert int(votes.sum()) == np.take(votes, 1, axis=axis).size  # no other slab has a majority


def test_result_files_record_the_command_that_made_them(tmp_path, monkeypatch):
    from benchmarks.common import write_results
    monkeypatch.setattr("sys.argv", ["/somewhere/benchmarks/bench_bone.py", "--quick", "--runs", "1"])
    path, _ = write_results("x", {"rows": []}, "| a |", folder=tmp_path)
    assert json.loads(path.read_text())["command"] == "python -m benchmarks.bench_bone --quick --runs 1"
    path, _ = write_results("y", {"command": "given"}, "| a |", folder=tmp_path)
    assert json.loads(path.read_text())["command"] == "given"
    monkeypatch.setattr("sys.argv", ["pytest"])
    path, _ = write_results("z", {}, "| a |", folder=tmp_path)
    assert "command" not in json.loads(path.read_text())
