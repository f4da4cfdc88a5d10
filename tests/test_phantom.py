"""Phantom determinism, realism checks and truth consistency with label schema v1."""

import json

import numpy as np
import pytest

from thagpu import labels as schema
from thagpu.phantom import PARTS, PRESETS, make_phantom, write_phantom
from thagpu.afs.angles import radiographic_angles
from thagpu.phantom.anatomy import cup_axis


@pytest.fixture(scope="module")
def hard_case():
    return make_phantom(11, size="tiny", preset="hard")


def _ras_of_all_voxels(volume):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    return volume.index_to_ras(idx.reshape(-1, 3)).reshape(volume.shape + (3,))


def test_same_seed_same_phantom_and_different_seed_differs():
    a = make_phantom(5, size="tiny", preset="hard")
    b = make_phantom(5, size="tiny", preset="hard")
    c = make_phantom(6, size="tiny", preset="hard")
    np.testing.assert_array_equal(a.ct, b.ct)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.truth == b.truth
    assert a.geometry == b.geometry
    assert a.ct.shape != c.ct.shape or not np.array_equal(a.ct, c.ct)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_labels_obey_the_schema_exactly(seed):
    """Recompute every label from the parts map, the header geometry and gt.json."""
    case = make_phantom(seed, size="tiny", preset="hard")
    volume = case.to_volume()
    from thagpu.geometry import Orientation
    parts = Orientation.from_geometry(case.geometry).to_canonical(case.parts)
    labels = case.canonical_labels()
    ras = _ras_of_all_voxels(volume)
    expected = np.zeros(labels.shape, np.uint8)
    expected[(parts > 0) & (parts != PARTS["metal"])] = schema.OTHER_BONE
    for side, (head, cup) in schema.SIDE_LABELS.items():
        truth = case.truth["sides"][side]
        dist = np.linalg.norm(ras - np.asarray(truth["head_center_mm"]), axis=-1)
        r = truth["head_radius_mm"]
        # gt.json rounds to 1e-4 mm: keep voxels that sit exactly on a boundary out of the comparison.
        ambiguous = (np.abs(dist - (r + 2.0)) < 1e-3) | (np.abs(dist - 1.5 * r) < 1e-3)
        expected[(parts == PARTS[f"femur_{side}"]) & (dist <= r + schema.HEAD_MARGIN_MM)] = head
        expected[(parts == PARTS[f"hip_{side}"]) & (dist <= schema.ACETABULUM_RADIUS_FACTOR * r)] = cup
        assert not np.any(ambiguous & (labels != expected))
    np.testing.assert_array_equal(labels, expected)
    for side, (head, cup) in schema.SIDE_LABELS.items():
        assert (labels == head).sum() > 50 and (labels == cup).sum() > 50


def test_truth_json_agrees_with_label_image(hard_case):
    counts = np.bincount(hard_case.labels.ravel(), minlength=6)
    for value, name in schema.LABEL_NAMES.items():
        assert hard_case.truth["label_voxels"][name] == counts[value]
    volume = hard_case.to_volume()
    labels = hard_case.canonical_labels()
    ras = _ras_of_all_voxels(volume)
    for side, (head, _) in schema.SIDE_LABELS.items():
        truth = hard_case.truth["sides"][side]
        centroid = ras[labels == head].mean(axis=0)
        # The labelled head is the sphere cut at the neck: its centroid lies near the true centre.
        assert np.linalg.norm(centroid - truth["head_center_mm"]) < 0.35 * truth["head_radius_mm"]
        assert 20.0 <= truth["head_radius_mm"] <= 28.0
        assert truth["acetabulum_radius_mm"] == pytest.approx(truth["head_radius_mm"] + truth["joint_space_mm"], abs=1e-3)
        assert 1.0 <= truth["joint_space_mm"] <= 4.0
        assert 35.0 <= truth["pelvic_inclination_deg"] <= 50.0
        assert 10.0 <= truth["pelvic_anteversion_deg"] <= 25.0
        assert 120.0 <= truth["neck_shaft_angle_deg"] <= 135.0


def test_patient_left_has_smaller_ras_x(hard_case):
    left = hard_case.truth["sides"]["left"]["head_center_mm"][0]
    right = hard_case.truth["sides"]["right"]["head_center_mm"][0]
    assert left < right


def test_hu_look_like_ct(hard_case):
    volume = hard_case.to_volume()
    labels = hard_case.canonical_labels()
    a = volume.array
    assert (a < -900).mean() > 0.05  # air around the body
    assert -130 < np.median(a[(a > -200) & (a < 0)]) < -50  # fat
    bone_median = np.median(a[labels == schema.OTHER_BONE])
    assert 150 < bone_median < 1800
    assert a.min() >= -1024 and a.max() <= 3071
    assert hard_case.ct.dtype == np.int16


def test_cup_angles_round_trip():
    for sign in (-1.0, 1.0):
        for inc, ant in [(35.0, 10.0), (45.0, 20.0), (50.0, 25.0)]:
            got = radiographic_angles(cup_axis(sign, inc, ant))
            assert got == pytest.approx((inc, ant), abs=1e-9)


@pytest.mark.parametrize("side", ["left", "right"])
def test_implant_side_has_metal_and_no_hip_labels(side):
    case = make_phantom(21, size="tiny", preset="implant", implant_side=side)
    other = "right" if side == "left" else "left"
    assert case.truth["implant_side"] == side
    assert case.truth["sides"][side]["status"] == "implant"
    head, cup = schema.SIDE_LABELS[side]
    assert not np.any(np.isin(case.labels, [head, cup]))
    assert np.any(case.labels == schema.SIDE_LABELS[other][0])
    volume = case.to_volume()
    metal = volume.array > 2500
    assert metal.sum() > 20
    metal_x = volume.index_to_ras(np.argwhere(metal))[:, 0].mean()
    centres = {s: case.truth["sides"][s]["head_center_mm"][0] for s in ("left", "right")}
    assert abs(metal_x - centres[side]) < abs(metal_x - centres[other])


def test_truncated_preset_cuts_through_one_head():
    case = make_phantom(31, size="tiny", preset="truncated", truncate_side="right")
    right = case.truth["sides"]["right"]
    assert right["status"] == "truncated"
    assert 0.4 < right["head_visible_fraction"] < 1.0
    assert case.truth["sides"]["left"]["head_visible_fraction"] == 1.0


def test_osteoporotic_bone_is_darker():
    normal = make_phantom(41, size="tiny", preset="hard")
    weak = make_phantom(41, size="tiny", preset="osteoporotic")
    assert weak.truth["tissue_hu"]["cancellous"] < 200 < normal.truth["tissue_hu"]["cancellous"]


def test_joint_space_override_and_touching_bone():
    case = make_phantom(51, size="tiny", preset="hard", joint_space_mm=0.0)
    for side in ("left", "right"):
        assert case.truth["sides"][side]["joint_space_mm"] == 0.0


def test_every_preset_renders_and_has_both_sides():
    for preset in PRESETS:
        case = make_phantom(61, size="tiny", preset=preset)
        assert set(case.truth["sides"]) == {"left", "right"}
        assert case.truth["preset"] == preset


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="size"):
        make_phantom(0, size="huge")
    with pytest.raises(ValueError, match="preset"):
        make_phantom(0, preset="nightmare")


def test_write_phantom_files(tmp_path, hard_case):
    paths = write_phantom(hard_case, tmp_path)
    assert paths["ct"].name == "ct.nii.gz" and paths["ct"].exists()
    assert paths["gt"].exists()
    truth = json.loads(paths["truth"].read_text(encoding="utf-8"))
    assert truth["case_id"] == hard_case.case_id
    assert not [p for p in paths["ct"].parent.iterdir() if p.name.startswith(".")]
