"""Bone extraction: exactness of the reduced graph cut, accuracy floors, cleanup rules."""

import numpy as np
import pytest
from scipy import ndimage

from thagpu.bone import build_energy, energy_of, extract_bone, minimum_cut, solve_full_grid
from thagpu.bone.energy import Energy, pairwise_weights
from thagpu.bone.grid import neighbours
from thagpu.bone.reduction import reduce_energy
from thagpu.bone.solver import solve_reduced
from thagpu.config import BoneConfig, Config
from thagpu.geometry import Geometry
from thagpu.metrics import dice
from thagpu.phantom import MATERIALS, make_phantom
from thagpu.volume import Volume


def _volume(array, spacing=(1.0, 1.0, 1.0)):
    geometry = Geometry(size=array.shape, spacing=spacing, origin=(0.0, 0.0, 0.0),
                        direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))  # RAS-ordered stored array
    return Volume.from_stored(array.astype(np.float32), geometry)


@pytest.mark.parametrize("seed,preset,connectivity", [(1, "hard", 6), (2, "osteoporotic", 6),
                                                      (3, "implant", 18), (4, "hard", 26)])
def test_reduced_cut_has_the_full_grid_minimum_energy(seed, preset, connectivity):
    case = make_phantom(seed, size="tiny", preset=preset)
    volume = case.to_volume()
    config = BoneConfig(connectivity=connectivity)
    energy, _, _ = build_energy(volume.array, volume.spacing, config)
    ours, stats = minimum_cut(energy, volume.array, volume.spacing, config)
    full, full_stats = solve_full_grid(energy)
    e_ours, e_full = energy_of(ours, energy), energy_of(full, energy)
    assert np.isfinite(e_ours)  # seeds respected
    assert e_ours == pytest.approx(e_full, rel=1e-9, abs=1e-6)
    assert stats["graph_nodes"] < 0.1 * full_stats["graph_nodes"]


def _random_energy(rng, shape, connectivity):
    image = rng.normal(0, 1, size=shape).astype(np.float32)
    cost_bone = rng.uniform(0, 1.5, size=shape).astype(np.float32)
    cost_background = rng.uniform(0, 1.5, size=shape).astype(np.float32)
    seeds = rng.uniform(size=shape)
    links = pairwise_weights(image, neighbours(shape, (1.0, 0.8, 2.0), connectivity), sigma_hu=1.0, weight=0.3)
    return Energy(cost_bone=cost_bone, cost_background=cost_background, bone_seed=seeds < 0.05,
                  background_seed=seeds > 0.9, links=links)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_reduction_is_exact_on_random_energies(connectivity):
    """Property check on energies unrelated to CT: dominance fixing never loses the minimum."""
    rng = np.random.default_rng(connectivity)
    for _ in range(5):
        energy = _random_energy(rng, (9, 10, 8), connectivity)
        reduction = reduce_energy(energy, max_passes=50)
        ours, _ = solve_reduced(energy, reduction)
        full, _ = solve_full_grid(energy)
        assert energy_of(ours, energy) == pytest.approx(energy_of(full, energy), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("shape", [(1, 9, 8), (9, 1, 8), (9, 10, 1)])
def test_reduction_is_exact_on_a_grid_one_voxel_thick(shape):
    # An axis of one voxel has no links along it (empty weight arrays); later passes list none.
    rng = np.random.default_rng(7)
    for connectivity in (6, 26):
        energy = _random_energy(rng, shape, connectivity)
        ours, _ = solve_reduced(energy, reduce_energy(energy, max_passes=5))
        full, _ = solve_full_grid(energy)
        assert energy_of(ours, energy) == pytest.approx(energy_of(full, energy), rel=1e-9, abs=1e-9)


def test_reduction_keeps_labels_fixed_beforehand_in_any_memory_order():
    # The banded mode hands fixed labels in; the passes write through a flat view of their copy.
    rng = np.random.default_rng(11)
    energy = _random_energy(rng, (9, 10, 8), 6)
    fixed = np.where(rng.uniform(size=energy.shape) < 0.3, 0, -1).astype(np.int8)
    fixed[energy.bone_seed] = 1
    fixed[energy.background_seed] = -1  # left free: the seeds fix themselves
    c_order = reduce_energy(energy, max_passes=3, fixed=fixed)
    for other in (np.asfortranarray(fixed), fixed.T.copy().T):
        reduction = reduce_energy(energy, max_passes=3, fixed=other)
        np.testing.assert_array_equal(reduction.fixed, c_order.fixed)
        np.testing.assert_array_equal(reduction.to_bone, c_order.to_bone)
    assert (fixed == 0).sum() <= (c_order.fixed == 0).sum()  # nothing fixed beforehand came free


def test_energy_counts_seed_violations_as_infinite():
    rng = np.random.default_rng(0)
    energy = _random_energy(rng, (6, 6, 6), 6)
    labels = np.zeros((6, 6, 6), bool)
    assert energy_of(labels, energy) == float("inf")  # bone seeds labelled background


@pytest.mark.parametrize("seed,preset,floor", [(101, "hard", 0.95), (102, "hard", 0.95),
                                               (103, "osteoporotic", 0.83), (104, "implant", 0.94)])
def test_dice_floor_on_small_phantoms(seed, preset, floor):
    """About 2 mm voxels: the floors are below the 1 mm targets of the benchmark."""
    case = make_phantom(seed, size="small", preset=preset)
    result = extract_bone(case.to_volume())
    truth = case.canonical_labels()
    assert dice(result.mask, truth > 0) >= floor
    # Heads stay solid: the truth femoral heads are inside the mask.
    for label in (1, 3):
        head = truth == label
        if head.any():
            assert result.mask[head].mean() > 0.97


def test_table_calcifications_and_metal_are_not_bone():
    case = make_phantom(105, size="small", preset="implant")
    volume = case.to_volume()
    mask = extract_bone(volume).mask
    materials = case.canonical(case.materials)
    table = materials == MATERIALS["table"]
    assert table.sum() > 100  # the table is in the field of view ...
    assert not (mask & table).any()  # ... and not in the mask
    calcified = materials == MATERIALS["calcification"]
    assert calcified.sum() > 0
    assert (mask & calcified).sum() <= 0.2 * calcified.sum()
    assert not (mask & (materials == MATERIALS["metal"])).any()


def test_cavities_are_filled_and_shaft_marrow_open_at_the_ends():
    """A hollow bone ball and a tube that leaves the volume, both in soft tissue."""
    shape = (80, 80, 60)
    image = np.full(shape, -1000.0, np.float32)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    body = (x - 40) ** 2 + (y - 40) ** 2 < 36 ** 2
    image[body] = 40.0
    r_ball = np.sqrt((x - 30) ** 2 + (y - 40) ** 2 + (z - 30) ** 2)
    image[r_ball < 12] = 1200.0
    image[r_ball < 10] = -60.0  # fatty marrow: below the soft tissue level
    r_tube = np.sqrt((x - 55) ** 2 + (y - 40) ** 2)
    image[r_tube < 7] = 1300.0
    image[r_tube < 4] = -40.0
    image += np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    mask = extract_bone(_volume(image)).mask
    assert mask[r_ball < 9.5].all()
    assert mask[r_tube < 3.5].all()
    assert not mask[(r_ball > 13.5) & (r_tube > 8.5) & body].any()


def test_islands_are_removed_but_bones_near_the_skeleton_stay():
    shape = (90, 90, 40)
    image = np.full(shape, -1000.0, np.float32)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    image[(x - 45) ** 2 + (y - 45) ** 2 < 42 ** 2] = 40.0
    # The skeleton (18 ml): a 2 mm cortex around cancellous bone. A uniform block of cortical density
    # this thick is not bone (no cortex is 15 mm thick) but a contrast pool.
    image[20:60, 30:45, 5:35] = 1000.0
    image[22:58, 32:43, 7:33] = 300.0
    image[65:72, 35:42, 15:22] = 1000.0  # a rib-sized bone 5 mm away, cortex over marrow: stays
    image[66:71, 36:41, 16:21] = 300.0
    image[40:42, 75:77, 20:22] = 900.0  # a calcification-sized speck: goes
    image += np.random.default_rng(1).normal(0, 10, shape).astype(np.float32)
    mask = extract_bone(_volume(image)).mask
    assert mask[25:55, 33:42, 10:30].all()
    assert mask[66:71, 36:41, 16:21].all()
    assert not mask[38:44, 73:79, 18:24].any()


def test_anisotropic_spacing_phantom():
    case = make_phantom(106, size="small", preset="hard", spacing=(1.6, 1.6, 4.0))
    result = extract_bone(case.to_volume())
    assert dice(result.mask, case.canonical_labels() > 0) >= 0.93


def test_volume_without_bone_gives_empty_mask_and_warning():
    image = np.full((70, 70, 40), -1000.0, np.float32)
    image[5:65, 5:65, :] = 40.0
    result = extract_bone(_volume(image))
    assert not result.mask.any()
    assert any("no bone" in w for w in result.diagnostics["warnings"])
    air = extract_bone(_volume(np.full((20, 20, 20), -1000.0, np.float32)))
    assert not air.mask.any() and air.diagnostics["warnings"]


def test_banded_mode_runs_and_reports_its_graph():
    case = make_phantom(107, size="tiny", preset="hard")
    exact = extract_bone(case.to_volume(), BoneConfig(mode="exact"))
    banded = extract_bone(case.to_volume(), Config(bone=BoneConfig(mode="banded")))
    assert banded.diagnostics["mode"] == "banded" and "coarse_graph_nodes" in banded.diagnostics
    assert banded.diagnostics["cut_energy"] >= exact.diagnostics["cut_energy"] - 1e-6
    assert dice(banded.mask, exact.mask) > 0.9


def test_bad_bone_settings_are_refused():
    with pytest.raises(ValueError, match="connectivity"):
        BoneConfig(connectivity=8)
    with pytest.raises(ValueError, match="mode"):
        BoneConfig(mode="fast")
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="rim_closing_mm"):
            BoneConfig(rim_closing_mm=bad)
        with pytest.raises(ValueError, match="interior_closing_mm"):
            BoneConfig(interior_closing_mm=bad)
        with pytest.raises(ValueError, match="interior_wall_share"):
            BoneConfig(interior_wall_share=bad)
        with pytest.raises(ValueError, match="coarse_below_mm"):
            BoneConfig(coarse_below_mm=bad)


def test_box_morphology_matches_scipy_away_from_the_border():
    from scipy import ndimage

    from thagpu.morphology import box_closing, box_erosion
    rng = np.random.default_rng(3)
    mask = np.zeros((30, 30, 30), bool)
    mask[8:22, 8:22, 8:22] = rng.uniform(size=(14, 14, 14)) > 0.6
    box = np.ones((5, 5, 3), bool)  # radius 2 mm along i, j at 1 mm; 1 voxel along k at 2 mm
    spacing = (1.0, 1.0, 2.0)
    np.testing.assert_array_equal(box_closing(mask, 2.0, spacing), ndimage.binary_closing(mask, box))
    # Erosion treats outside the array as background, also at the border.
    mask[:12, :12, :6] = True
    np.testing.assert_array_equal(box_erosion(mask, 2.0, spacing), ndimage.binary_erosion(mask, box, border_value=0))


@pytest.mark.parametrize("dtype", [bool, np.float32, np.int32])
def test_extreme_filters_equal_scipys_for_every_window_origin_and_mode(dtype):
    from scipy import ndimage

    from thagpu.morphology import maximum_filter1d, minimum_filter1d
    rng = np.random.default_rng(5)
    # An axis of 2 voxels is shorter than most windows (shifts past the array's end).
    array = (rng.uniform(size=(9, 2, 11)) * 10).astype(dtype)
    for size in range(1, 14):
        for origin in range(-(size // 2), (size - 1) // 2 + 1):
            for axis in range(3):
                for mode, cval in (("nearest", 0), ("constant", 0), ("constant", 1)):
                    for ours, theirs in ((maximum_filter1d, ndimage.maximum_filter1d),
                                         (minimum_filter1d, ndimage.minimum_filter1d)):
                        got = ours(array, size, axis, mode=mode, cval=cval, origin=origin)
                        want = theirs(array, size, axis=axis, mode=mode, cval=cval, origin=origin)
                        assert got.dtype == want.dtype
                        np.testing.assert_array_equal(got, want, err_msg=f"{size} {origin} {axis} {mode} {cval}")
    np.testing.assert_array_equal(maximum_filter1d(array, 3, -1), ndimage.maximum_filter1d(array, 3, axis=-1))
    assert minimum_filter1d(array[:, :0], 7, 1).shape == (9, 0, 11)
    with pytest.raises(ValueError, match="out of range"):
        maximum_filter1d(array, 3, 3)


def test_body_mask_keeps_thick_large_regions_and_fills_slice_holes():
    """The body is what is thick and large (a region the erosion leaves something of); the scanner
    table (a thin plate) and a small blob go; gas inside the body is part of it."""
    from thagpu.bone.seeds import body_mask
    image = np.full((60, 60, 20), -1000.0, dtype=np.float32)
    image[10:50, 10:45, :] = 40.0  # the trunk, 40 x 35 mm
    image[25:30, 20:25, 5:15] = -900.0  # bowel gas inside it
    image[5:55, 50:52, :] = 40.0  # the table: 2 mm thick
    image[2:6, 2:6, 2:6] = 40.0  # a small dense blob (a marker)
    body = body_mask(image, (1.0, 1.0, 1.0), -400.0, min_thickness_mm=10.0, min_volume_ml=1.0)
    expected = np.zeros(image.shape, bool)
    expected[10:50, 10:45, :] = True
    np.testing.assert_array_equal(body, expected)


def test_slice_holes_thin_rings_stay_open_wide_holes_fill():
    from thagpu.morphology import fill_holes_2d
    x, y = np.meshgrid(np.arange(60), np.arange(60), indexing="ij")
    r = np.hypot(x - 30, y - 30)
    ring_gap = (r < 20) & ~((r >= 14) & (r < 16))  # a disk with a 2-pixel ring of background inside
    wide = (r < 20) & ~(r < 8)  # an annulus whose centre hole is 16 pixels wide
    mask = np.stack([ring_gap, wide], axis=2)
    filled = fill_holes_2d(mask, axis=2, max_area_vox=2000, min_width_vox=(5, 5, 1))
    assert not filled[:, :, 0][(r >= 14.2) & (r < 15.8)].any()
    assert filled[:, :, 1][r < 8].all()


@pytest.mark.parametrize("seed,preset", [(11, "hard"), (12, "implant")])
def test_extract_bone_solves_a_box_around_the_bone_exactly(seed, preset):
    """The cut inside the bone region has the full volume's minimum energy."""
    case = make_phantom(seed, size="tiny", preset=preset)
    volume = case.to_volume()
    result = extract_bone(volume)
    energy, _, _ = build_energy(volume.array, volume.spacing, BoneConfig())
    full, _ = solve_full_grid(energy)
    assert energy_of(result.cut, energy) == pytest.approx(energy_of(full, energy), rel=1e-9, abs=1e-6)


def test_the_benchmark_baselines_solve_the_same_energy_to_the_same_minimum():
    """``crop=False`` and ``solver="full_grid"`` (the rows of bench_bone) find the same minimum as ours;
    the cropped full grid solves the same box with every voxel a node, the uncropped one the whole grid."""
    volume = make_phantom(14, size="tiny", preset="hard").to_volume()
    energy, _, _ = build_energy(volume.array, volume.spacing, BoneConfig())
    ours = extract_bone(volume)
    cropped = extract_bone(volume, solver="full_grid")
    uncropped = extract_bone(volume, crop=False, solver="full_grid")
    assert cropped.diagnostics["crop"] == ours.diagnostics["crop"]
    assert uncropped.diagnostics["crop"] == [[0, n] for n in volume.shape]
    box = np.prod([b - a for a, b in ours.diagnostics["crop"]])
    assert cropped.diagnostics["graph_nodes"] == box > ours.diagnostics["graph_nodes"]
    assert uncropped.diagnostics["graph_nodes"] == np.prod(volume.shape) > box
    minimum = energy_of(uncropped.cut, energy)
    for result in (ours, cropped):
        assert energy_of(result.cut, energy) == pytest.approx(minimum, rel=1e-9)
        assert set(result.diagnostics["timings_s"]) == {"energy", "graph_cut", "cleanup"}
    assert cropped.diagnostics["cut_energy"] == pytest.approx(ours.diagnostics["cut_energy"], rel=1e-9)
    with pytest.raises(ValueError, match="solver"):
        extract_bone(volume, solver="maxflow")


def test_extract_bone_falls_back_when_bone_reaches_the_box_side(monkeypatch):
    import thagpu.bone as bone

    case = make_phantom(13, size="tiny", preset="hard")
    volume = case.to_volume()
    reference = extract_bone(volume)

    def too_small(image, *args, **kwargs):  # a box that cuts through the pelvis
        return tuple(slice(n // 3, 2 * n // 3) for n in image.shape)

    monkeypatch.setattr(bone, "_bone_region", too_small)
    result = extract_bone(volume)
    assert any("whole volume" in w for w in result.diagnostics["warnings"])
    np.testing.assert_array_equal(result.cut, reference.cut)


def test_noise_specks_do_not_widen_the_solved_box(monkeypatch):
    """Single bone-like voxels in soft tissue far from bone (noise) carry no half-maximum tilt, so the box
    BE solves in stays around the bone, with the same mask and the full grid's minimum energy."""
    import thagpu.bone as bone

    volume = make_phantom(11, size="small", preset="hard", spacing=(2.0, 2.0, 2.0)).to_volume()
    clean = extract_bone(volume)
    (x0, x1), (y0, y1), _ = clean.diagnostics["crop"]
    model = clean.diagnostics["intensity_model"]
    evidence_hu = min(model["shell_hu"], model["bone_seed_hu"], model["bone_min_hu"] - model["ramp_hu"] / 2)
    image = np.array(volume.array, dtype=np.float32)
    far = clean.body & (ndimage.distance_transform_edt(~clean.mask, sampling=volume.spacing) > 15.0)
    far[x0:x1, y0:y1, :] = False  # outside the box in x or y
    specks = np.argwhere(far)[np.random.default_rng(0).choice(int(far.sum()), 12, replace=False)]
    image[tuple(specks.T)] = np.float32(evidence_hu - 1.0)  # not evidence, but bone-like once smoothed
    noisy = volume.with_array(image)
    result = extract_bone(noisy)
    assert result.diagnostics["crop"] == clean.diagnostics["crop"]
    np.testing.assert_array_equal(result.mask, clean.mask)
    energy, _, _ = build_energy(noisy.array, noisy.spacing, BoneConfig())
    assert energy_of(result.cut, energy) == pytest.approx(energy_of(solve_full_grid(energy)[0], energy), rel=1e-9)
    # Each speck alone is a bone-like piece: counted as one, its tilt widens the box.
    monkeypatch.setattr(bone, "BONE_LIKE_MIN_VOXELS", 1)
    monkeypatch.setattr(bone, "BONE_LIKE_MIN_ML", 0.0)
    assert extract_bone(noisy).diagnostics["crop"] != clean.diagnostics["crop"]


def test_joint_space_stays_open_after_cleanup():
    """A 2.5 mm joint space at 1.5 mm voxels: what the cut leaves open between head and socket stays open.

    The slice-hole fill used to close the gap where axial slices cut it tangentially (the top of the head,
    under the acetabular roof): about 5 % of the gap voxels. The gap voxels are where the phantom paints
    cartilage (between head and socket surface, where the socket covers the head).
    """
    case = make_phantom(109, size="small", preset="hard", spacing=(1.5, 1.5, 1.5), joint_space_mm=2.5)
    result = extract_bone(case.to_volume())
    gap = case.canonical(case.materials) == MATERIALS["cartilage"]
    assert gap.sum() > 1000
    open_cut = float((~result.cut[gap]).mean())
    open_mask = float((~result.mask[gap]).mean())
    assert open_cut > 0.85  # the cut itself resolves the gap ...
    assert open_mask >= open_cut - 0.01  # ... and cavity filling does not close it again
    truth = case.canonical_labels()
    for label in (1, 3):  # while the heads stay solid
        assert result.mask[truth == label].mean() > 0.97


def test_thin_along_slices_marks_shallow_stacks_only():
    from thagpu.bone.cleanup import thin_along_slices
    mask = np.zeros((4, 4, 30), bool)
    mask[:, :, 2:5] = True  # 3 slices at 1 mm: a sheet
    mask[:, :, 10:22] = True  # 12 slices: a cavity
    thin = thin_along_slices(mask, 1.0, 5.0)
    assert thin[:, :, 2:5].all() and not thin[:, :, 10:22].any()
    assert not thin_along_slices(mask, 3.0, 5.0).any()  # 3 mm slices: a sheet is one slice, not tested


def test_dark_sheets_find_a_thin_gap_between_plates_not_pockets_or_edges():
    from thagpu.bone.sheets import dark_sheets
    image = np.full((30, 30, 30), 40.0, np.float32)
    image[8:13, 4:26, 4:26] = 1000.0  # two cortical plates ...
    image[14:19, 4:26, 4:26] = 1000.0
    image[13, 4:26, 4:26] = 250.0  # ... with a 1 mm joint space between them
    image[22:29, 10:17, 10:17] = 1000.0  # a bright block with a dark pocket in it
    image[25, 13, 13] = 250.0
    sheets = dark_sheets(image, (1.0, 1.0, 1.0), dark_hu=418.0, bright_hu=679.0)
    assert sheets[13, 8:22, 8:22].all()
    assert not sheets[25, 13, 13]  # dark in every direction: a pocket, not a sheet
    assert not sheets[:, :3].any() and not sheets[7].any()  # soft tissue, and the outside of a plate
    # With 3 mm slices a gap across the slices is out of reach: nothing is tested along them.
    turned = np.ascontiguousarray(np.transpose(image, (1, 2, 0)))
    assert not dark_sheets(turned, (1.0, 1.0, 3.0), dark_hu=418.0, bright_hu=679.0, reach_mm=2.0).any()


def test_fill_repeats_until_slice_holes_stop_sealing_cavities(monkeypatch):
    """A thin cavity (not a slice hole) that leaks only through a wide slice-enclosed one is filled."""
    import thagpu.bone.cleanup as cleanup
    mask = np.zeros((40, 40, 20), bool)
    mask[5:35, 5:35, 3:17] = True
    mask[10:30, 10:30, 6:13] = False  # wide and 7 slices deep: filled as slice holes
    mask[12:15, 12:28, 13:16] = False  # 3 mm wide: no slice hole, swallowed by the 4 mm closing
    mask[20, 20, 13:17] = False  # the wide cavity's way out through the top
    filled = cleanup.fill_cavities(mask, (1.0, 1.0, 1.0), closing_mm=4.0, max_slice_hole_mm2=2500.0)
    assert filled[10:30, 10:30, 6:13].all() and filled[12:15, 12:28, 13:16].all()
    assert not filled[20, 20, 16]  # the channel to the outside stays open
    monkeypatch.setattr(cleanup, "FILL_PASSES", 1)
    once = cleanup.fill_cavities(mask, (1.0, 1.0, 1.0), closing_mm=4.0, max_slice_hole_mm2=2500.0)
    assert not once[12:15, 12:28, 13:16].any()


def test_local_noise_reads_the_noise_of_one_tissue_not_the_spread_of_several():
    """Two soft tissues 60 HU apart (muscle and an enhanced organ) with 12 HU noise: the noise is 12."""
    from thagpu.bone.intensity import estimate_tissue_levels
    rng = np.random.default_rng(0)
    image = np.full((80, 80, 12), 40.0, np.float32)
    image[40:, :, :] = 100.0
    image += rng.normal(0, 12.0, image.shape).astype(np.float32)
    levels = estimate_tissue_levels(image, np.ones(image.shape, bool))
    assert levels.noise_hu == pytest.approx(12.0, rel=0.1)


def test_soft_tissue_level_holds_at_the_noise_of_a_sharp_kernel():
    """Fat (-100 HU) and muscle (50 HU) in equal shares at a bone kernel's 90 HU noise: the voxels'
    histogram in [-30, 150] HU peaks at its lower end (the fat's tail); the muscle level is 50."""
    from thagpu.bone.intensity import estimate_tissue_levels
    rng = np.random.default_rng(1)
    image = np.full((120, 120, 10), -100.0, np.float32)
    image[:, 60:, :] = 50.0
    image += rng.normal(0, 90.0, image.shape).astype(np.float32)
    levels = estimate_tissue_levels(image, np.ones(image.shape, bool))
    assert 35.0 <= levels.soft_hu <= 65.0
    assert levels.noise_hu == pytest.approx(90.0, rel=0.15)


def test_noise_and_soft_tissue_are_read_on_evenly_spaced_slices_of_a_long_volume(monkeypatch):
    """Past NOISE_SLICES axial slices, the estimate reads a subset and stays the same within noise."""
    from thagpu.bone import intensity
    rng = np.random.default_rng(2)
    image = np.full((60, 60, 200), 45.0, np.float32) + rng.normal(0, 20.0, (60, 60, 200)).astype(np.float32)
    body = np.ones(image.shape, bool)
    seen = []
    real = intensity.axial_sample
    monkeypatch.setattr(intensity, "axial_sample", lambda a, m: seen.append(real(a, m)[0].shape[2]) or real(a, m))
    levels = intensity.estimate_tissue_levels(image, body)
    assert seen and max(seen) <= intensity.NOISE_SLICES
    assert levels.noise_hu == pytest.approx(20.0, rel=0.1) and 35.0 <= levels.soft_hu <= 55.0


def test_half_max_tilt_changes_sign_at_half_way_across_an_edge():
    from thagpu.bone.halfmax import half_max_tilt
    profile = np.array([40.0] * 10 + [100.0, 300.0, 500.0, 700.0] + [760.0] * 10, np.float32)
    image = np.broadcast_to(profile[:, None, None], (profile.size, 8, 8)).copy()
    tilt = half_max_tilt(image, (1.0, 1.0, 1.0), radius_mm=3.0, min_span_hu=150.0)[:, 4, 4]
    assert tilt[11] < 0 < tilt[12]  # 300 HU is below half-way (400) between 40 and 760, 500 above
    assert tilt[2] == 0 and tilt[-3] == 0  # no surface in flat tissue


def test_soft_side_rim_is_the_halo_outside_a_cortex_not_marrow_inside_it():
    """Along x: soft tissue, a blurred 1000 HU cortex, a dark 150 HU marrow pocket, cancellous bone;
    the smoothed region reaches 3 voxels into the soft tissue. The partial-volume voxel there is
    the rim; the pocket, below half-way too, is not (the CT rises outwards from it, towards the
    cortex)."""
    from thagpu.bone.halfmax import half_max_tilt, soft_side_rim
    profile = np.array([40.0] * 10 + [60.0, 150.0, 450.0, 850.0, 1000.0, 1000.0, 600.0, 150.0, 150.0]
                       + [300.0] * 12, np.float32)
    image = np.broadcast_to(profile[:, None, None], (profile.size, 12, 12)).copy()
    region = np.zeros(image.shape, bool)
    region[9:] = True  # reaches from 3 voxels outside the surface (between 11 and 12) inwards
    tilt = half_max_tilt(image, (1.0, 1.0, 1.0), radius_mm=2.0, min_span_hu=150.0)
    rim = soft_side_rim(region, image, tilt, (1.0, 1.0, 1.0), rim_mm=3.5, min_rise_hu_per_mm=150.0)[:, 6, 6]
    assert rim[11]  # the partial-volume halo below half-way, on the steep rise inwards
    assert not rim[9]  # soft tissue, flat: left to the intensity model
    assert not rim[12:].any()  # the cortex, the pocket behind it, the cancellous bone
    # A thin bone (cortex, marrow, cortex) whose region is all rim keeps its marrow.
    thin = np.array([40.0] * 10 + [500.0, 1000.0, 300.0, 250.0, 300.0, 1000.0, 500.0] + [40.0] * 10, np.float32)
    image = np.broadcast_to(thin[:, None, None], (thin.size, 12, 12)).copy()
    region = np.zeros(image.shape, bool)
    region[8:19] = True
    tilt = half_max_tilt(image, (1.0, 1.0, 1.0), radius_mm=2.0, min_span_hu=150.0)
    rim = soft_side_rim(region, image, tilt, (1.0, 1.0, 1.0), rim_mm=3.5, min_rise_hu_per_mm=150.0)[:, 6, 6]
    assert not rim[11:16].any()
    assert rim[9]


def test_soft_side_rim_follows_the_blur_tail_at_fine_pixels():
    """At 0.5 mm pixels a PSF of 0.5 mm SD lifts soft tissue over three voxels outside a 1300 HU cortex,
    too gently for the steep-rise test; the smoothed region holds them all. They are reached from
    outside along a rising CT and join the rim; the marrow behind the cortex (reached only down from
    the cortex) and a hole of the region (dark marrow, not the outside) do not."""
    from scipy import ndimage
    from thagpu.bone.halfmax import half_max_tilt, soft_side_rim
    spacing = (0.5, 0.5, 0.5)
    sharp = np.full((60, 40, 12), 40.0, np.float32)
    sharp[30:34] = 1300.0  # a 2 mm cortex
    sharp[34:46] = 120.0  # dark marrow behind it
    sharp[46:50, 10:30] = 1300.0  # and a cortex around a hole of the region
    sharp[50:56, 10:30] = 60.0
    sharp[56:60, 10:30] = 1300.0
    sharp[46:60, 10:14] = 1300.0
    sharp[46:60, 26:30] = 1300.0
    image = ndimage.gaussian_filter(sharp, (1.0, 1.0, 0.0), mode="nearest")
    region = np.zeros(image.shape, bool)
    region[25:] = True  # 2.5 mm outside the surface (between voxels 29 and 30) inwards
    region[52:54, 17:23] = False  # a hole inside the dark marrow
    tilt = half_max_tilt(image, spacing, radius_mm=2.0, min_span_hu=150.0)
    rise = 0.15 * 1260.0 / 0.5
    steep = soft_side_rim(region, image, tilt, spacing, rim_mm=3.5, min_rise_hu_per_mm=rise)
    rim = soft_side_rim(region, image, tilt, spacing, rim_mm=3.5, min_rise_hu_per_mm=rise, noise_hu=5.0,
                        max_hole_mm2=100.0, follow_mm=1.8)
    assert image[26:29, 20, 6].max() < 450  # the tail, below the half maximum
    assert not steep[26, 20, 6]  # too gentle for the steep rise
    assert rim[26:30, 20, 6].all()  # followed from outside
    assert not rim[30:50, 20, 6].any()  # the cortex, the marrow behind it, the second cortex
    assert not (rim & ~steep)[46:60].any()  # the hole is not outside: nothing followed from it
    assert not rim[:, :, 6][region[:, :, 6] & (np.arange(60)[:, None] < 25)].any()


def test_uphill_from_outside_stops_where_the_ct_falls_and_after_its_steps():
    from thagpu.bone.halfmax import uphill_from_outside
    line = np.array([0, 10, 20, 30, 5, 40, 50, 60, 70, 80], np.float32)
    light = np.broadcast_to(line[:, None, None], (10, 1, 1)).copy()
    outside = np.zeros(light.shape, bool)
    outside[0] = True
    candidates = ~outside
    reached = uphill_from_outside(outside, candidates, light, tolerance_hu=2.0, steps=10)[:, 0, 0]
    assert reached.tolist() == [False, True, True, True, False, False, False, False, False, False]
    reached = uphill_from_outside(outside, candidates, light, tolerance_hu=30.0, steps=5)[:, 0, 0]
    assert reached.tolist() == [False, True, True, True, True, True, False, False, False, False]
    # Steps only along the axes given.
    assert not uphill_from_outside(outside, candidates, light, tolerance_hu=2.0, steps=10, axes=(1, 2)).any()


def _blurred_plate(plate_hu, outside_hu=40.0, shape=(30, 10, 10), plate=(10, 20)):
    """A plate across the array (voxels ``plate`` along x) in tissue, blurred by a Gaussian of one voxel."""
    from scipy import ndimage
    image = np.full(shape, outside_hu, np.float32)
    image[plate[0]:plate[1]] = plate_hu
    return ndimage.gaussian_filter(image, (1.0, 0.0, 0.0), mode="nearest")


def test_resolved_rim_trim_takes_the_partial_volume_layer_outside_a_bright_cortex():
    """A 1500 HU plate blurred by a voxel: the voxel half a voxel outside each face reads about
    490 HU, above the intensity model's bone level at 3 mm; it is below the half maximum between
    its outer neighbour and the plate, and goes. The plate's own voxels, and every voxel of a
    faint plate (peak below ``peak_min_hu``: not resolved), stay."""
    from thagpu.bone.cleanup import trim_resolved_rim
    truth = np.zeros((30, 10, 10), bool)
    truth[10:20] = True
    mask = np.zeros_like(truth)
    mask[9:21] = True  # one partial-volume layer too many on each side
    image = _blurred_plate(1500.0)
    assert image[9, 5, 5] > 400  # the rim reads as bone to an intensity model
    trimmed = trim_resolved_rim(mask, image, (1.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=1.5)
    assert np.array_equal(trimmed, truth)
    faint = trim_resolved_rim(mask, _blurred_plate(600.0), (1.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=1.5)
    assert np.array_equal(faint, mask)


def test_rim_trim_along_a_coarse_axis_judges_faint_plates_too():
    """Along a 3 mm axis a voxel averages what it holds: the outer voxel of a faint plate (its peak
    unresolved) goes when it reads below 0.6 of the way from outside to inside, and stays above;
    along a 1 mm axis the faint plate is left alone."""
    from thagpu.bone.cleanup import COARSE_RIM_LEVEL, trim_resolved_rim
    truth = np.zeros((30, 10, 10), bool)
    truth[10:20] = True
    mask = np.zeros_like(truth)
    mask[9:21] = True
    faint = _blurred_plate(600.0)
    level = (faint[9, 5, 5] - faint[8, 5, 5]) / (faint[10, 5, 5] - faint[8, 5, 5])
    assert 0.3 < level < COARSE_RIM_LEVEL
    coarse = trim_resolved_rim(mask, faint, (3.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=4.0)
    assert np.array_equal(coarse, truth)
    assert np.array_equal(trim_resolved_rim(mask, faint, (1.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=1.5), mask)
    # An outer voxel reading 0.7 of the way holds more than half a voxel of bone: it stays.
    full = faint.copy()
    full[9] = faint[8] + 0.7 * (faint[10] - faint[8])
    full[20] = faint[21] + 0.7 * (faint[19] - faint[21])
    assert np.array_equal(trim_resolved_rim(mask, full, (3.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=4.0), mask)


def test_resolved_rim_trim_spares_gaps_in_a_cortex_and_bone_next_to_metal():
    """Inside a bone, a pocket that a cortex gap opens to the outside is not a soft side (the
    closing encloses it); a voxel between bone and brighter metal is not on a bone's outer slope."""
    from thagpu.bone.cleanup import trim_resolved_rim
    # A box of cortex (1500 HU) around darker cancellous bone (200 HU), the mask missing a pocket
    # of it behind a one-voxel gap in the cortex.
    image = np.full((30, 30, 12), 40.0, np.float32)
    image[5:25, 5:25, :] = 1500.0
    image[7:23, 7:23, :] = 200.0
    image[5:7, 13:16, :] = 40.0  # a gap 3 mm wide
    image[8:11, 12:17, :] = 90.0  # a darker pocket of it, which the cut missed ...
    mask = image > 100
    mask[7, 13:16, :] = False  # ... open through the gap
    trimmed = trim_resolved_rim(mask, image, (1.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=1.5)
    assert np.array_equal(trimmed, mask)
    # A closing too small to bridge the gap leaves the pocket outside, and the cancellous voxels
    # between it and the cortex would go.
    assert not trim_resolved_rim(mask, image, (1.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=1.0)[7, 12].any()
    # Bone, a voxel of partial volume, then metal beyond: the voxel's trough is the metal, brighter.
    metal = _blurred_plate(1500.0)
    metal[:9] = 3000.0
    mask = np.zeros(metal.shape, bool)
    mask[9:21] = True
    trimmed = trim_resolved_rim(mask, metal, (1.0, 1.0, 1.0), peak_min_hu=900.0, closing_mm=1.5)
    assert trimmed[9].all() and not trimmed[20].any()


def test_cancellous_region_keeps_bone_behind_a_thin_cortex_not_a_vessel_beside_it():
    """A low-density body (200 HU) behind a partial cortex is kept; a contrast vessel (200 HU) 1 voxel
    from the cortex through a 1-voxel contact is not."""
    from thagpu.bone.seeds import cancellous_region
    image = np.full((60, 40, 40), 40.0, np.float32)
    image[10:30, 10:30, 10:30] = 200.0  # cancellous bone
    image[9, 10:30, 10:30] = 800.0  # cortex on one side only
    image[35:45, 15:25, 15:25] = 200.0  # a vessel
    image[30:35, 20, 20] = 800.0  # a calcified plaque touching both
    bright = image >= 500
    region = cancellous_region(image, bright, np.zeros(image.shape, bool), low_hu=120.0)
    assert region[12:28, 12:28, 12:28].all()
    assert not region[37:43, 17:23, 17:23].any()


def test_a_contrast_vessel_lying_on_a_bone_is_not_cancellous_bone():
    """A 300 HU artery touching a bone's cortex along its length hangs together with the bone's
    cancellous region; no brighter rim encloses it, so it is dropped. The cancellous bone (250 HU)
    inside its cortex, and faint marrow (130 HU) inside a faint cortex (450 HU), stay."""
    from thagpu.bone.seeds import cancellous_region, unenclosed_pieces
    image = np.full((70, 60, 50), 40.0, np.float32)
    image[10:40, 10:40, 5:45] = 1000.0  # cortex
    image[12:38, 12:38, 5:45] = 250.0  # cancellous bone (the bone leaves the volume along z)
    x, y = np.mgrid[0:70, 0:60]
    tube = (((x - 43.0) ** 2 + (y - 25.0) ** 2) <= 4.6 ** 2) & (image[:, :, 20] == 40.0)
    image[tube] = 300.0  # round, along z, pressed onto the face x = 40 (6 voxels of contact)
    image[50:66, 10:30, 5:45] = 450.0  # a faint (osteoporotic) cortex
    image[52:64, 12:28, 5:45] = 130.0  # and its marrow
    bright = image >= 400.0
    region = cancellous_region(image, bright, np.zeros(image.shape, bool), low_hu=100.0)
    assert region[42:46, 24:27, 10:40].all()  # the vessel hangs together with the bone
    dropped = unenclosed_pieces(region, bright, image, (1.0, 1.0, 1.0), margin_hu=50.0)
    assert dropped[42:46, 24:27, 10:40].all()
    assert not dropped[12:38, 12:38].any() and not dropped[52:64, 12:28].any()


def test_joint_valleys_mark_a_dark_gap_between_plates_not_marrow():
    from thagpu.bone.sheets import joint_valleys
    profile = np.array([40.0] * 6 + [900.0, 900.0, 80.0, 80.0, 900.0, 900.0] + [300.0] * 4 + [900.0] * 2
                       + [40.0] * 6, np.float32)
    image = np.broadcast_to(profile[:, None, None], (profile.size, 10, 10)).copy()
    valleys = joint_valleys(image, (1.0, 1.0, 1.0), bright_hu=500.0, soft_hu=40.0, reach_mm=3.0)[:, 5, 5]
    assert valleys[8] and valleys[9]  # cartilage between two plates
    assert not valleys[12:16].any()  # 300 HU marrow between two cortices is bone


def _tube(size: int, inner: float, outer: float, depth: int):
    """A tube of bone along the slice axis, centred in a ``size`` x ``size`` slice: its wall
    (``inner`` <= r < ``outer`` pixels) and its lumen (r < ``inner``), ``depth`` slices deep."""
    x, y = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    r = np.hypot(x - size // 2, y - size // 2)
    return (np.repeat(((r >= inner) & (r < outer))[:, :, None], depth, axis=2),
            np.repeat((r < inner)[:, :, None], depth, axis=2))


def test_fluid_in_a_slice_hole_is_not_filled_but_marrow_is():
    """A ring of bone around water (a spinal canal inside its arch) stays open; around fat, it fills."""
    from thagpu.bone.cleanup import fill_cavities, fluid_voxels
    ring, inside = _tube(50, 8, 11, 14)
    ring[:, :, 0] = ring[:, :, -1] = False  # open at both ends: no 3-D cavity
    for inside_hu, filled in ((10.0, False), (-80.0, True), (250.0, True)):
        image = np.where(ring, 900.0, np.where(inside, inside_hu, 40.0)).astype(np.float32)
        out = fill_cavities(ring, (1.0, 1.0, 1.0), max_slice_hole_mm2=2500.0, fluid=fluid_voxels(image))
        assert bool(out[25, 25, 7]) is filled


def test_noise_scattered_fluid_voxels_cost_the_bone_interior_themselves_only():
    """Through a sharp kernel (130 HU of noise), a tenth of a femoral shaft's 55 HU marrow smooths into
    the fluid range in scattered voxels. The bone interior (the prior that holds such marrow) loses
    those voxels, not their neighbours too: taken out before the interior's one-voxel erosion, each
    cost 26 more, and the prior kept 60 % of the rest. Water in the same ring (a spinal canal closed
    off) stays out of the interior wherever it reads as fluid."""
    from thagpu.bone.cleanup import fluid_voxels
    from thagpu.bone.seeds import bone_interior
    config = BoneConfig()
    shell, inside = _tube(48, 9, 12, 16)  # meets both end faces: a 3-D cavity
    rng = np.random.default_rng(0)
    for inside_hu, noise_hu in ((55.0, 130.0), (10.0, 20.0)):
        image = np.where(shell, 1200.0, np.where(inside, inside_hu, 40.0)) + rng.normal(0.0, noise_hu, shell.shape)
        image = image.astype(np.float32)
        fluid = fluid_voxels(image)
        interior = bone_interior(image, shell, np.zeros_like(shell), (1.0, 1.0, 1.0),
                                 closing_mm=config.fill_closing_mm, max_slice_hole_mm2=config.max_slice_hole_mm2,
                                 soft_max_hu=60.0, fluid=fluid)
        assert not interior[inside & fluid].any()
        if inside_hu > 35.0:
            assert 0.05 < fluid[inside].mean() < 0.2  # the case described: scattered voxels
            assert interior[inside & ~fluid].mean() > 0.98
        else:
            assert fluid[inside].mean() > 0.5  # the canal reads as fluid (its rim is lifted by the cortex)


def test_a_contrast_filled_bladder_is_not_bone_but_a_bone_next_to_it_is():
    """Settled contrast (600 HU, as uniform as the noise) is dropped; a bone of cortex and cancellous
    bone of the same size stays."""
    from thagpu.bone.cleanup import remove_non_skeletal
    rng = np.random.default_rng(4)
    image = np.full((60, 60, 40), 40.0, np.float32)
    bladder = np.zeros(image.shape, bool)
    bladder[5:25, 10:50, 10:30] = True
    image[bladder] = 600.0
    bone = np.zeros(image.shape, bool)
    bone[35:55, 10:50, 10:30] = True
    image[bone] = 300.0
    image[35:55, 10:50, 10:12] = 1200.0  # a cortex on two sides
    image[35:55, 10:50, 28:30] = 1200.0
    image += rng.normal(0, 15.0, image.shape).astype(np.float32)
    kept, report = remove_non_skeletal(bladder | bone, np.ones(image.shape, bool), (1.0, 1.0, 1.0),
                                       min_island_ml=0.2, skeleton_min_ml=1.0, max_gap_mm=25.0,
                                       image=image, noise_hu=15.0)
    assert not kept[bladder].any() and kept[bone].all()
    assert report["dropped_homogeneous"] == 1


def test_a_contrast_vessel_is_judged_by_its_inside_not_its_partial_volume_rim():
    """A contrast-filled artery (350 HU, 4.5 mm radius, a 0.6 mm PSF): a quarter of its voxels are rim
    between 350 HU and the soft tissue (only 74 % of all lie within 3 noise SDs of the median), yet
    it is as uniform as the noise inside, and has no cortex: dropped."""
    from scipy import ndimage

    from thagpu.bone.cleanup import remove_non_skeletal
    rng = np.random.default_rng(5)
    x, y = np.mgrid[0:40, 0:40].astype(np.float32)
    tube = ((x - 20) ** 2 + (y - 20) ** 2 <= 4.5 ** 2)[:, :, None] & np.ones(60, bool)
    image = np.where(tube, 350.0, 40.0).astype(np.float32)
    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, 15.0, image.shape).astype(np.float32)
    mask = image > 120.0
    kept, report = remove_non_skeletal(mask, np.ones(image.shape, bool), (1.0, 1.0, 1.0), min_island_ml=0.2,
                                       skeleton_min_ml=1.0, max_gap_mm=25.0, image=image, noise_hu=15.0)
    assert not kept.any() and report["dropped_homogeneous"] == 1


def test_thin_cortex_level_rises_from_the_half_maximum_as_the_blur_outgrows_the_cortex():
    from thagpu.bone.halfmax import thin_cortex_level
    level = lambda h, t: thin_cortex_level((h, h, h), cortex_mm=t, psf_sigma_mm=0.6, smooth_vox=0.5)  # noqa: E731
    assert 0.5 <= level(0.5, 6.0) < 0.53  # thick cortex, fine voxels: the half maximum
    assert 0.58 < level(1.0, 2.0) < 0.66
    assert 0.76 < level(3.0, 2.0) < 0.86
    assert level(1.0, 2.0) < level(2.0, 2.0) < level(3.0, 2.0)
    assert level(3.0, 1.0) > level(3.0, 3.0)


def _thin_cortex_ball(spacing, radius_mm=22.0, cortex_mm=1.5, seed=0, fine=5, noise_smooth_vox=1.0):
    """A ball (cancellous 250 HU under a 1200 HU cortex) in soft tissue, rendered as CT is: each voxel
    the mean of ``fine``^3 sample points, a 0.6 mm PSF, noise of 12 HU SD correlated over
    ``noise_smooth_vox`` voxels (a standard kernel's; 0: white, a sharp kernel's); and its truth
    (voxel centres in the ball)."""
    from scipy import ndimage
    n = [int(round(80.0 / s)) for s in spacing]
    axes = [(np.arange(k * fine) + 0.5) / fine * s - 40.0 for k, s in zip(n, spacing)]
    r = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    hu = np.where(r > radius_mm, 40.0, np.where(r > radius_mm - cortex_mm, 1200.0, 250.0)).astype(np.float32)
    hu = hu.reshape(n[0], fine, n[1], fine, n[2], fine).mean(axis=(1, 3, 5))
    hu = ndimage.gaussian_filter(hu, [0.6 / s for s in spacing])
    noise = np.random.default_rng(seed).normal(0, 1.0, hu.shape)
    if noise_smooth_vox > 0:
        noise = ndimage.gaussian_filter(noise, noise_smooth_vox)
    hu += (12.0 * noise / noise.std()).astype(np.float32)
    centres = [(np.arange(k) + 0.5) * s - 40.0 for k, s in zip(n, spacing)]
    rc = np.sqrt(centres[0][:, None, None] ** 2 + centres[1][None, :, None] ** 2 + centres[2][None, None, :] ** 2)
    return hu, rc <= radius_mm


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 3.0, 3.0)])
def test_a_thin_cortex_keeps_its_true_size_where_the_half_maximum_swells_it(spacing):
    """The blurred peak of a 1.5 mm cortex is far below 1200 HU at 3 mm voxels: the half maximum lies
    outside the bone and takes in the first layer of soft tissue; the thin-cortex level does not."""
    hu, truth = _thin_cortex_ball(spacing)
    volume = _volume(hu, spacing)
    ours = np.asarray(extract_bone(volume, BoneConfig(half_max_level="auto", rim_closing_mm=0.0)).mask)
    half = np.asarray(extract_bone(volume, BoneConfig(half_max_level=0.5, rim_closing_mm=0.0)).mask)
    assert abs(int(ours.sum()) - int(truth.sum())) < 0.04 * truth.sum()
    assert dice(ours, truth) > 0.97
    assert dice(ours, truth) > dice(half, truth) + (0.01 if spacing[0] > 2 else 0.005)
    # The default: the half maximum, then the rim of a resolved cortex trimmed (the peak near the
    # case's cortical level, here the ball's own). At 1 mm that is most of the swelling.
    default = np.asarray(extract_bone(volume).mask)
    assert dice(default, truth) > dice(half, truth) + (0.0 if spacing[0] > 2 else 0.005)


def _faint_bone_and_contrast_bladder(seed=6):
    """A faint osteoporotic tube (400 HU cortex, 2 mm, around 150 HU marrow) beside a bladder of settled
    contrast (800 HU, 30 mm across, more voxels than the top 0.2 % of the body), 1 mm voxels."""
    rng = np.random.default_rng(seed)
    image = np.full((100, 100, 60), 40.0, np.float32)
    x, y = np.mgrid[0:100, 0:100].astype(np.float32)
    r = np.sqrt((x - 30) ** 2 + (y - 50) ** 2)[:, :, None] * np.ones(60)
    tube = r <= 12.0
    image[tube] = 150.0
    image[tube & (r > 10.0)] = 400.0
    bladder = np.zeros(image.shape, bool)
    bladder[55:85, 35:65, 15:45] = True
    image[bladder] = 800.0
    image += rng.normal(0, 15.0, image.shape).astype(np.float32)
    return image, tube, bladder


def test_a_contrast_filled_bladder_does_not_set_the_cortical_level():
    """The top 0.2 % of the body is the bladder's contrast; without it the level is the faint cortex's."""
    from thagpu.bone.intensity import estimate_tissue_levels
    image, _, _ = _faint_bone_and_contrast_bladder()
    body = np.ones(image.shape, bool)
    assert estimate_tissue_levels(image, body).cortical_hu > 750.0  # the bladder, without the spacing
    assert 380.0 < estimate_tissue_levels(image, body, spacing=(1.0, 1.0, 1.0)).cortical_hu < 500.0


def test_a_faint_skeleton_beside_a_contrast_filled_bladder_is_bone_and_the_bladder_is_not():
    """The bladder, brighter than every bone voxel and uniform, is dropped though its median lies above
    the cortical seed level: no cortex is 30 mm thick. The faint bone is kept whole."""
    image, tube, bladder = _faint_bone_and_contrast_bladder()
    mask = extract_bone(_volume(image)).mask
    assert not mask[bladder].any()
    assert mask[tube].mean() > 0.95


def test_osteoporotic_marrow_at_3mm_voxels_is_bone_not_a_vessel():
    """At 3 mm voxels a thin osteoporotic cortex reads 250 HU over 140 HU marrow, with 40 HU noise: the
    step (110 HU) is less than 3 noise SDs of the raw CT, but the rim is judged on the lightly smoothed
    CT, in its own noise SDs, so the marrow is enclosed bone, not a contrast vessel."""
    rng = np.random.default_rng(7)
    image = np.full((50, 50, 40), 40.0, np.float32)
    x, y, z = np.mgrid[0:50, 0:50, 0:40].astype(np.float32)
    r = np.sqrt(((x - 25) / 9.0) ** 2 + ((y - 25) / 7.0) ** 2 + ((z - 20) / 12.0) ** 2)
    bone = r <= 1.0
    image[bone] = 140.0
    image[bone & ~ndimage_erosion(bone)] = 250.0
    image += rng.normal(0, 40.0, image.shape).astype(np.float32)
    mask = extract_bone(_volume(image, spacing=(3.0, 3.0, 3.0))).mask
    assert mask[ndimage_erosion(bone, 2)].mean() > 0.95


def ndimage_erosion(mask, iterations=1):
    from scipy import ndimage
    return ndimage.binary_erosion(mask, iterations=iterations)


def test_slice_holes_as_large_as_an_iliac_body_are_filled_but_not_a_ring_around_the_pelvis():
    """A leaking bone section of 35 cm^2 (the iliac body above the acetabulum; the sacrum at S1) is
    filled slice by slice; a 1 mm ring of bone around 80 cm^2 (the true pelvis) is not."""
    from thagpu.bone.cleanup import fill_cavities
    from thagpu.config import BoneConfig
    area = BoneConfig().max_slice_hole_mm2
    x, y = np.mgrid[0:160, 0:160].astype(np.float32) + 0.5

    def ring(a, b):
        r = np.sqrt(((x - 80) / a) ** 2 + ((y - 80) / b) ** 2)
        inside = np.sqrt(((x - 80) / (a - 1.5)) ** 2 + ((y - 80) / (b - 1.5)) ** 2) <= 1.0
        return (r <= 1.0) & ~inside, inside

    for (a, b), filled_expected in (((38.0, 30.0), True), ((56.0, 46.0), False)):
        wall, inside = ring(a, b)
        assert (inside.sum() / 100.0 < 40.0) == filled_expected  # 36 cm^2 and 81 cm^2 (1 mm pixels)
        mask = np.repeat(wall[:, :, None], 20, axis=2)
        mask[:, 70:90, 0:10] = False  # a gap wider than the closing bridges: the 3-D cavity leaks
        out = fill_cavities(mask, (1.0, 1.0, 1.0), closing_mm=4.0, max_slice_hole_mm2=area)
        share = out[:, :, 14][inside].mean()
        assert share == (1.0 if filled_expected else 0.0), (a, b, share)


def test_a_layer_of_settled_contrast_brighter_than_the_cortex_is_dropped_whatever_its_gradient():
    """Settled contrast (950-1150 HU across its 14 mm depth, so not uniform as the noise) above the
    cortical seed level, lying apart from bone, is dropped: it is thicker than any cortex and has no
    brighter rim. A bone of cortex over cancellous bone beside it stays."""
    from thagpu.bone.cleanup import remove_non_skeletal
    rng = np.random.default_rng(8)
    image = np.full((70, 60, 40), 40.0, np.float32)
    layer = np.zeros(image.shape, bool)
    layer[5:45, 10:50, 13:27] = True
    image[layer] = (950.0 + 200.0 * (np.arange(40) - 13) / 13.0)[None, None, :].repeat(70, 0).repeat(60, 1)[layer]
    bone = np.zeros(image.shape, bool)
    bone[50:66, 10:50, 8:32] = True
    image[bone] = 300.0
    image[50:66, 10:50, 8:10] = image[50:66, 10:50, 30:32] = 1200.0
    image += rng.normal(0, 30.0, image.shape).astype(np.float32)
    kept, report = remove_non_skeletal(layer | bone, np.ones(image.shape, bool), (1.0, 1.0, 1.0),
                                       min_island_ml=0.2, skeleton_min_ml=1.0, max_gap_mm=25.0,
                                       image=image, noise_hu=30.0, fluid_max_hu=330.0)
    assert not kept[layer].any() and kept[bone].all()


def test_a_ring_with_one_voxel_gaps_encloses_its_cancellous_bone_but_not_a_fat_pocket():
    """A thin cortex cut obliquely by 3 mm slices reads low in single voxels: a ring whose only gaps
    are one voxel wide (one straight, one diagonal) still encloses its cancellous bone, slice by slice,
    while a fat pocket behind such gaps (the acetabular fossa between head and socket) stays open,
    and at fine in-plane pixels nothing is bridged."""
    from thagpu.bone.cleanup import fill_cavities, fluid_voxels
    ring, inside = _tube(40, 9, 10.5, 8)
    ring[:, :, 0] = ring[:, :, -1] = False  # open at both ends: no 3-D cavity
    ring[29:31, 20] = False  # a straight gap one voxel wide (the ring is 2 voxels thick there)
    ring[20, 29:31] = False
    spacing = (3.0, 3.0, 3.0)
    for inside_hu, filled in ((90.0, True), (-90.0, False)):
        image = np.where(ring, 300.0, np.where(inside, inside_hu, 40.0)).astype(np.float32)
        plain = fill_cavities(ring, spacing, max_slice_hole_mm2=5000.0, fluid=fluid_voxels(image))
        assert not plain[20, 20, 4]  # the gaps open the ring: no hole without bridging
        out = fill_cavities(ring, spacing, max_slice_hole_mm2=5000.0, fluid=fluid_voxels(image), bridge_gaps=True,
                            image=image)
        assert bool(out[20, 20, 4]) is filled
        assert not out[29:31, 20, 4].any() and not out[35, 20, 4]  # the gaps themselves and the outside
        # At 0.8 mm pixels the cortex is resolved and a one-pixel gap is a real opening: not bridged.
        fine = fill_cavities(ring, (0.8, 0.8, 3.0), max_slice_hole_mm2=5000.0, fluid=fluid_voxels(image),
                             bridge_gaps=True, image=image)
        assert not fine[20, 20, 4]


def _slab_with_gap(slit_in_plane: bool):
    """A hollow slab (a thin bone like an iliac wing, interior 8 voxels wide) whose wall has a gap:
    one slice deep along z, or one pixel wide along y through every slice."""
    shell = np.zeros((30, 30, 12), bool)
    shell[10:20, 5:25, 2:10] = True
    shell[11:19, 6:24, 3:9] = False
    if slit_in_plane:
        shell[10, 14, :] = False
    else:
        shell[10, 8:21, 5] = False
    interior = np.zeros_like(shell)
    interior[11:19, 6:24, 3:9] = True
    return shell, interior


def test_coarse_axis_gap_bridged_for_the_narrow_interior_the_closing_swallows():
    """At 0.8 x 0.8 x 3 mm a gap of one slice in a thin cortex is a blur artefact: the interior behind
    it (too narrow for the 4 mm closing's box, which swallows it) is filled when it reads above fat.
    A fat interior, a one-pixel slit at 0.8 mm pixels, and the same gap at 1 mm voxels stay open."""
    from thagpu.bone.cleanup import fill_cavities, fluid_voxels
    shell, interior = _slab_with_gap(slit_in_plane=False)
    aniso = (0.8, 0.8, 3.0)

    def fill(mask, spacing, inside_hu, bridge):
        image = np.where(mask, 400.0, np.where(interior, inside_hu, 40.0)).astype(np.float32)
        return fill_cavities(mask, spacing, closing_mm=4.0, max_slice_hole_mm2=5000.0, fluid=fluid_voxels(image),
                             bridge_gaps=bridge, image=image)

    assert not fill(shell, aniso, 90.0, bridge=False)[interior].any()  # the closing swallows it, adds nothing
    assert fill(shell, aniso, 90.0, bridge=True)[interior].all()
    assert not fill(shell, aniso, -90.0, bridge=True)[interior].any()  # fat stays open
    assert not fill(shell, (1.0, 1.0, 1.0), 90.0, bridge=True)[interior].any()  # no coarse axis
    slit, _ = _slab_with_gap(slit_in_plane=True)
    assert not fill(slit, aniso, 90.0, bridge=True)[interior].any()  # a gap along a fine axis is real


def test_coarse_axis_bridge_never_crosses_a_dark_sheet():
    """The one-slice gap that the coarse bridge closes stays open where the energy found a dark sheet
    between two cortices there: a joint space under 3 mm slices, cartilage (above fat) between head
    and socket, which bridged would join them."""
    from thagpu.bone.cleanup import fill_cavities, fluid_voxels
    shell, interior = _slab_with_gap(slit_in_plane=False)
    image = np.where(shell, 400.0, np.where(interior, 90.0, 40.0)).astype(np.float32)
    sheet = np.zeros_like(shell)
    sheet[10, 8:21, 5] = True  # the gap itself

    def fill(barrier):
        return fill_cavities(shell, (0.8, 0.8, 3.0), closing_mm=4.0, max_slice_hole_mm2=5000.0,
                             fluid=fluid_voxels(image), bridge_gaps=True, image=image, barrier=barrier)

    assert fill(None)[interior].all()
    assert not fill(sheet)[interior].any()


_RING_GAPS = ((22, 12), (22, 38), (10, 25), (35, 25))  # one per side of the ring


def _broken_ring(inside_hu: float = 100.0, specks: bool = True):
    """Slices of a faint cortex read as a ring with four 3-pixel gaps around a blotchy interior (mask
    specks, unless ``specks`` is False, in cancellous bone of ``inside_hu``), beside a bone whose outer surface has a shallow notch
    (4 pixels wide, 2 deep) of soft tissue; at 0.8 x 0.8 x 3 mm."""
    x, y, _ = np.meshgrid(np.arange(80), np.arange(50), np.arange(6), indexing="ij")
    r = np.hypot(x - 22, y - 25)
    ring = (r >= 12) & (r < 14)
    for cx, cy in _RING_GAPS:
        ring[cx - 1:cx + 2, cy - 1:cy + 2] = False
    marrow = r < 12
    specks = marrow & (x % 5 == 0) & (y % 5 == 0) & specks
    block = (x >= 50) & (x < 70) & (y >= 10) & (y < 40)
    notch = (x >= 50) & (x < 52) & (y >= 23) & (y < 27)
    mask = ring | specks | (block & ~notch)
    image = np.where(mask, 300.0, np.where(marrow, inside_hu, 40.0)).astype(np.float32)
    return mask, image, marrow & ~specks, notch


def test_closed_interior_fills_the_marrow_a_broken_cortex_rings_in():
    """Osteoporotic bone through a sharp kernel: the cortex a ring with gaps, the cancellous bone
    blobs. The small closing rings its marrow in; a fat interior, a concavity of a bone's outer
    surface (facing the tissue outside along its mouth) and a ring whose gaps are a joint space
    stay open."""
    from thagpu.bone.cleanup import closed_interior, fill_cavities, fluid_voxels
    mask, image, marrow, notch = _broken_ring()
    spacing = (0.8, 0.8, 3.0)

    def interior(mask, image, share=0.8, barrier=None):
        return closed_interior(mask, image, spacing, closing_mm=2.0, max_slice_hole_mm2=5000.0,
                               min_wall_share=share, barrier=barrier)

    # The plain fill leaves it open: the gaps join the marrow to the outside.
    assert not fill_cavities(mask, spacing, max_slice_hole_mm2=5000.0, fluid=fluid_voxels(image))[marrow].any()
    out = interior(mask, image)
    assert out[marrow].all()
    assert not (out & mask).any()
    assert not out[notch].any() and interior(mask, image, share=0.0)[notch].all()  # the gate decides
    fat_mask, fat_image, fat_marrow, _ = _broken_ring(inside_hu=-100.0)
    assert not interior(fat_mask, fat_image)[fat_marrow].any()
    # Without the specks (which the closing covers whole), the marrow is a slice hole of the closed
    # ring; where its gaps are a joint space's dark sheet, the closing does not bridge them.
    mask, image, marrow, _ = _broken_ring(specks=False)
    gaps = np.zeros_like(mask)
    for cx, cy in _RING_GAPS:
        gaps[cx - 2:cx + 3, cy - 2:cy + 3] = True
    gaps &= ~mask
    assert interior(mask, image)[marrow].all()
    assert not interior(mask, image, barrier=gaps)[marrow].any()


def test_closed_interior_never_takes_a_joint_spaces_own_voxels():
    """Two plates 2 pixels apart (a joint space of 1.6 mm at 0.8 mm pixels), the energy's dark sheet
    over the middle half of the gap only: the closing bridges the gap's ends, and the closed mask
    then encloses the sheet in its slices; the sheet stays open all the same."""
    from thagpu.bone.cleanup import closed_interior
    mask = np.zeros((40, 20, 4), bool)
    mask[5:35, 4:8] = True
    mask[5:35, 10:14] = True  # columns 8-9: the gap
    image = np.where(mask, 400.0, 80.0).astype(np.float32)
    sheet = np.zeros_like(mask)
    sheet[13:27, 8:10] = True
    out = closed_interior(mask, image, (0.8, 0.8, 3.0), closing_mm=2.0, max_slice_hole_mm2=5000.0,
                          min_wall_share=0.8, barrier=sheet)
    assert not (out & sheet).any()


def test_extract_bone_closes_the_interior_only_at_coarse_voxels(monkeypatch):
    """At 1 mm voxels a thin cortex is resolved and its gaps are real (the closing joined head and
    socket there), so the closed interior runs only where an axis is 2 mm or coarser, and not at all
    when turned off."""
    import thagpu.bone as bone
    real, seen = bone.closed_interior, []

    def spy(mask, image, spacing, **kwargs):
        seen.append(tuple(spacing))
        return real(mask, image, spacing, **kwargs)

    monkeypatch.setattr(bone, "closed_interior", spy)
    for spacing in ((1.0, 1.0, 1.0), (1.0, 1.0, 2.0)):
        extract_bone(make_phantom(3, size="tiny", preset="easy", spacing=spacing).to_volume())
    extract_bone(make_phantom(3, size="tiny", preset="easy", spacing=(1.0, 1.0, 2.0)).to_volume(),
                 BoneConfig(interior_closing_mm=0.0))
    assert seen == [(1.0, 1.0, 2.0)]


def _bone_and_vessel(cortex_hu: float, with_vessel: bool = True, noise_hu: float = 10.0):
    """A round bone (cortex 3 voxels thick around uniform osteoporotic marrow of 140 HU) and a
    contrast-filled vessel (250 HU) lying on it, in muscle, with ``noise_hu`` of noise."""
    rng = np.random.default_rng(3)
    x, y, _ = np.meshgrid(np.arange(64), np.arange(60), np.arange(40), indexing="ij")
    r = np.hypot(x - 25, y - 30)
    bone = r < 14
    cortex = bone & (r >= 11)
    vessel = (np.hypot(x - 43, y - 30) < 5) & ~bone if with_vessel else np.zeros_like(bone)
    image = np.full(bone.shape, 40.0, np.float32)
    image[bone] = 140.0
    image[cortex] = cortex_hu
    image[vessel] = 250.0
    image += rng.normal(0.0, noise_hu, image.shape).astype(np.float32)
    return bone, cortex, vessel, image


def test_contrast_vessel_on_a_bone_is_fluid_and_the_marrow_is_not():
    """A vessel lumen touching a bone has no brighter rim around it and goes; the marrow inside a
    bright cortex, as uniform as the lumen, has one and stays."""
    from thagpu.bone.cleanup import unenclosed_fluid
    bone, cortex, vessel, image = _bone_and_vessel(cortex_hu=900.0)
    out = unenclosed_fluid(bone | vessel, image, (1.0, 1.0, 1.0), bright_hu=600.0, noise_hu=10.0)
    assert not (out & bone).any()
    assert out[vessel].mean() > 0.9  # all but its voxels next to the cortex


def test_faint_cortex_bone_is_not_fluid():
    """An osteoporotic bone whose cortex (220 HU over 140 HU marrow) is below the seed level is one
    piece with its cortex. With noise as at 3 mm voxels (40 HU; a rim must be 120 HU brighter than
    the piece's mean) nothing around it counts as brighter, and it is as uniform as the noise, so
    only its own cortex (``_homogeneous``'s brighter outer layer) keeps it, alone or with a vessel on
    it."""
    from thagpu.bone.cleanup import unenclosed_fluid
    from thagpu.bone.seeds import unenclosed_pieces
    for with_vessel in (False, True):
        bone, _, vessel, image = _bone_and_vessel(cortex_hu=220.0, with_vessel=with_vessel, noise_hu=40.0)
        mask = bone | vessel
        bright = image >= np.float32(600.0)
        assert unenclosed_pieces(mask, bright, image, (1.0, 1.0, 1.0), margin_hu=120.0)[bone].mean() > 0.9
        out = unenclosed_fluid(mask, image, (1.0, 1.0, 1.0), bright_hu=600.0, noise_hu=40.0)
        assert not (out & bone).any()


def test_bridging_never_fills_a_one_voxel_channel():
    """A joint space one voxel wide between two plates stays open: no square that the outside cannot
    reach covers it, though none that it can reach does either."""
    from thagpu.morphology import fill_holes_2d
    bars = np.zeros((20, 20, 1), bool)
    bars[4:16, 8, 0] = bars[4:16, 10, 0] = True  # a channel one voxel wide between two plates
    assert not (fill_holes_2d(bars, 2, 1e9, bridge_gaps=True) & ~bars).any()


def _bone_and_bladder(texture_hu: float, cortex_vox: int = 3, far_half_hu: float = 850.0):
    """A round bone (a cortex ``cortex_vox`` voxels thick at 1200 HU around marrow of 950 HU with
    trabecular texture of SD ``texture_hu``, thick above a 600 HU level) and a bladder of contrast
    (850 HU, its far half ``far_half_hu``; 24 ml) beyond a wall of muscle 2 mm thick, in muscle,
    with 20 HU of noise. Returns the bone, the bladder, the CT and the mask a cut would give: both,
    joined across the wall where they are closest."""
    rng = np.random.default_rng(5)
    x, y, _ = np.meshgrid(np.arange(90), np.arange(60), np.arange(40), indexing="ij")
    r = np.hypot(x - 25, y - 30)
    bone = r < 16
    cortex = bone & (r >= 16 - cortex_vox)
    bladder = np.zeros_like(bone)
    bladder[43:83, 15:45, 10:30] = True
    joined = bone | bladder
    joined[41:43, 27:34, 10:30] = True  # partial volume across the wall
    image = np.full(bone.shape, 40.0, np.float32)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, bone.shape), 1.0)
    image[bone] = 950.0 + texture_hu * (texture / texture.std())[bone]
    image[cortex] = 1200.0
    image[bladder] = 850.0
    image[63:83, 15:45, 10:30] = far_half_hu
    image += rng.normal(0.0, 20.0, image.shape).astype(np.float32)
    return bone, bladder, image, joined


def test_bladder_contrast_on_a_bone_goes_and_a_dense_bone_core_stays():
    """A uniform pool of contrast brighter than the seed level, joined to a bone, is not bone; the
    thick cancellous core of that bone, as bright but textured, is."""
    from thagpu.bone.cleanup import bright_pools
    bone, bladder, image, joined = _bone_and_bladder(texture_hu=120.0)
    pools = bright_pools(joined, image, (1.0, 1.0, 1.0), level_hu=600.0, noise_hu=20.0)
    assert not (pools & bone).any()
    assert pools[bladder].mean() > 0.99
    # The same bone read as uniform as the noise inside a cortex one voxel thick: its inner voxels
    # are as uniform as a pool's, but the cortex keeps its 99th percentile far above its median.
    bone, _, image, _ = _bone_and_bladder(texture_hu=0.0, cortex_vox=1)
    assert not bright_pools(bone, image, (1.0, 1.0, 1.0), level_hu=600.0, noise_hu=20.0).any()


def test_the_part_of_a_pool_near_the_level_goes_with_it():
    """Where a pool reads just above the level (635 HU over 600, noise 20) the noise keeps the box
    from fitting; that part is as uniform and within 3 noise SDs of the rest of the pool (690 HU),
    and goes with it."""
    from thagpu.bone.cleanup import bright_pools, thick_bright
    bone, bladder, image, joined = _bone_and_bladder(texture_hu=120.0, far_half_hu=635.0)
    image[43:63, 15:45, 10:30] += 690.0 - 850.0
    near = np.zeros_like(bladder)
    near[63:83, 15:45, 10:30] = True
    assert thick_bright(image, (1.0, 1.0, 1.0), 600.0, 3.0)[near].mean() < 0.5
    pools = bright_pools(joined, image, (1.0, 1.0, 1.0), level_hu=600.0, noise_hu=20.0)
    assert not (pools & bone).any()
    assert pools[bladder].mean() > 0.99


def test_band_tilt_equals_the_whole_volume_tilt_at_its_voxels():
    from thagpu.bone.halfmax import half_max_tilt
    from thagpu.bone.refine import band_half_max_tilt
    rng = np.random.default_rng(5)
    light = rng.normal(40.0, 20.0, (23, 41, 27)).astype(np.float32)
    light[8:15, 10:20, 5:12] += rng.uniform(300.0, 1500.0, (7, 10, 7)).astype(np.float32)  # a noisy bright block
    points = np.nonzero(rng.uniform(size=light.shape) < 0.2)
    for spacing, radius in (((0.6, 0.6, 0.8), 2.0), ((1.0, 1.0, 3.0), 2.0), ((0.3, 0.5, 2.0), 1.2)):
        whole = half_max_tilt(light, spacing, radius_mm=radius, min_span_hu=150.0)[points]
        band = band_half_max_tilt(light, points, spacing, radius_mm=radius, min_span_hu=150.0)
        np.testing.assert_array_equal(band, whole)
        assert 0 < np.count_nonzero(band) < band.size  # both sides of the span test are exercised


def test_sub_mm_pixels_are_solved_coarse_to_fine_and_placed_at_full_resolution():
    """At 0.6 mm pixels BE solves 1.2 mm block means, then re-decides the voxels along its surface:
    the ball keeps its true size, and only voxels within a fine voxel of the coarse surface change."""
    from thagpu.bone.refine import surface_band, upsample_mask
    from thagpu.morphology import block_reduce_mean
    spacing = (0.6, 0.6, 1.0)
    hu, truth = _thin_cortex_ball(spacing, fine=3)
    volume = _volume(hu, spacing)
    result = extract_bone(volume)
    refined = np.asarray(result.mask)
    info = result.diagnostics["coarse_to_fine"]
    assert info["factors"] == [2, 2, 1] and result.diagnostics["shape"] == list(hu.shape)
    assert info["added"] + info["removed"] > 0
    coarse = extract_bone(_volume(block_reduce_mean(hu, (2, 2, 1)), (1.2, 1.2, 1.0))).mask
    repeated = upsample_mask(np.asarray(coarse), (2, 2, 1), hu.shape)
    assert not np.any((refined != repeated) & ~surface_band(repeated, (2, 2, 1)))
    assert dice(refined, truth) > dice(repeated, truth) + 0.005
    assert abs(int(refined.sum()) - int(truth.sum())) < 0.03 * truth.sum()
    full = extract_bone(volume, BoneConfig(coarse_below_mm=0.0))
    assert "coarse_to_fine" not in full.diagnostics
    full = np.asarray(full.mask)
    assert dice(refined, truth) >= dice(full, truth) - 0.005
    # Uncropped, the check estimates the levels over the whole coarse grid, as the coarse solve would.
    from thagpu.bone import _noise_ratio
    from thagpu.bone.intensity import estimate_tissue_levels
    means = block_reduce_mean(hu, (2, 2, 1))
    config = BoneConfig()
    _, body, levels, _ = _noise_ratio(hu, means, (1.2, 1.2, 1.0), (2, 2, 1), config, crop=False)
    assert levels == estimate_tissue_levels(means, body, metal_hu=config.metal_hu, spacing=(1.2, 1.2, 1.0))
    uncropped = extract_bone(volume, crop=False)
    assert not uncropped.diagnostics["coarse_to_fine"]["fell_back"]
    assert dice(np.asarray(uncropped.mask), refined) > 0.99


def test_a_sharp_kernel_is_solved_at_full_resolution(monkeypatch):
    """Block means take a white noise (a sharp kernel's) down by about the block's square root and
    the detail such a kernel keeps with it: that volume is solved at full resolution, and says so."""
    spacing = (0.6, 0.6, 1.0)
    hu, _ = _thin_cortex_ball(spacing, fine=3, noise_smooth_vox=0.0)  # white noise
    volume = _volume(hu, spacing)
    import thagpu.bone as bone_module
    grids, solve = [], bone_module._extract_on_grid
    monkeypatch.setattr(bone_module, "_extract_on_grid",
                        lambda image, grid, *args, **kwargs: grids.append(tuple(grid)) or solve(image, grid, *args, **kwargs))
    result = extract_bone(volume)
    assert grids == [spacing]  # the full grid only: the check comes before any coarse solve
    info = result.diagnostics["coarse_to_fine"]
    assert info["fell_back"] and info["noise_ratio"] > 1.5
    assert "sharp_check" in result.diagnostics["timings_s"]
    assert any("sharp kernel" in w for w in result.diagnostics["warnings"])
    full = extract_bone(volume, BoneConfig(coarse_below_mm=0.0))
    np.testing.assert_array_equal(np.asarray(result.mask), np.asarray(full.mask))
    smooth_noise = extract_bone(_volume(_thin_cortex_ball(spacing, fine=3)[0], spacing)).diagnostics["coarse_to_fine"]
    assert not smooth_noise["fell_back"] and smooth_noise["noise_ratio"] < 1.2
