"""AFS midline: from the body outline, the bone's symmetry, a cut border or the femur itself.

One-hip views are cut out of the small hard phantom: the cropped CT is stored
under a real header (LPS or RAS) with its affine kept exact, so the side can
only come from the direction cosines.
"""

import numpy as np
import pytest

from thagpu.afs import segment_hips
from thagpu.afs.midline import estimate_midline
from thagpu.bone import extract_bone
from thagpu.geometry import LPS_TO_RAS, Geometry, Orientation
from thagpu.phantom import SIZES, make_phantom
from thagpu.volume import Volume

#: Direction cosines (columns: stored axes in LPS) of an array stored in LPS or RAS order.
HEADERS = {"LPS": np.eye(3), "RAS": np.diag([-1.0, -1.0, 1.0])}


def _stored_volume(canonical, affine, header):
    """A Volume as load_ct returns it for ``canonical`` (R, A, S) at ``affine`` stored under ``header``."""
    direction = tuple(float(d) for d in HEADERS[header].ravel())
    spacing_ras = np.linalg.norm(affine[:3, :3], axis=0)
    orientation = Orientation.from_geometry(Geometry(size=(1, 1, 1), spacing=(1.0, 1.0, 1.0),
                                                     origin=(0.0, 0.0, 0.0), direction=direction))
    stored = np.ascontiguousarray(orientation.from_canonical(canonical))
    spacing = [0.0, 0.0, 0.0]
    for world, axis in enumerate(orientation.order):
        spacing[axis] = float(spacing_ras[world])
    at_zero = Geometry(size=stored.shape, spacing=tuple(spacing), origin=(0.0, 0.0, 0.0), direction=direction)
    shift_ras = affine[:3, 3] - orientation.canonical_affine(at_zero)[:3, 3]
    geometry = Geometry(size=stored.shape, spacing=tuple(spacing), origin=tuple(LPS_TO_RAS @ shift_ras),
                        direction=direction)
    volume = Volume.from_stored(stored, geometry, source=f"crop:{header}")
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    return volume


def _crop_x(volume, lo_mm, hi_mm, *, air_mm=0.0):
    """The part of a canonical (axis-aligned) volume with RAS x in [lo_mm, hi_mm], air_mm of air added on
    each side (a scan's field of view around the body). Returns the canonical array and its affine."""
    array = np.asarray(volume.array)
    x = volume.index_to_ras(np.stack([np.arange(array.shape[0]), np.zeros(array.shape[0]),
                                      np.zeros(array.shape[0])], axis=1))[:, 0]
    keep = np.flatnonzero((x >= lo_mm) & (x <= hi_mm))
    first = int(keep[0])
    array = array[first:int(keep[-1]) + 1]
    affine = np.array(volume.affine, dtype=float)
    affine[:3, 3] += affine[:3, 0] * first
    pad = int(round(air_mm / volume.spacing[0]))
    if pad:
        array = np.pad(array, [(pad, pad), (0, 0), (0, 0)], constant_values=-1000.0)
        affine[:3, 3] -= affine[:3, 0] * pad
    return np.ascontiguousarray(array, dtype=np.float32), affine


@pytest.fixture(scope="module")
def phantom():
    """A small hard phantom stored in LPS, axis-aligned (its pose is still rotated and shifted)."""
    return make_phantom(4011, size="small", preset="hard", header="LPS")


def _one_hip(case, side, header, *, tight):
    """Only ``side``'s hip and thigh in view, its head cut medially by the field of view.

    tight=False: the lateral side of the thigh is in view (air beyond it); tight=True: the thigh is cut
    on both sides too (80 mm lateral of the head), so only the femur can tell the side.
    """
    volume = case.to_volume()
    truth = case.truth["sides"][side]
    sign = 1.0 if side == "right" else -1.0
    x, r = truth["head_center_mm"][0], truth["head_radius_mm"]
    medial = x - sign * 0.4 * r  # through the head
    lateral = x + sign * (80.0 if tight else 400.0)
    array, affine = _crop_x(volume, min(medial, lateral), max(medial, lateral), air_mm=0.0 if tight else 30.0)
    if not tight:  # air only beyond the lateral border: the medial border cuts the body
        n = int(round(30.0 / volume.spacing[0]))
        array = array[n:] if sign > 0 else array[:-n]
        if sign > 0:
            affine[:3, 3] += affine[:3, 0] * n
    return _stored_volume(array, affine, header)


@pytest.mark.parametrize("side,header,tight", [("right", "LPS", False), ("left", "RAS", False),
                                               ("left", "LPS", True), ("right", "RAS", True)])
def test_one_hip_in_view_is_found_on_its_side(phantom, side, header, tight):
    volume = _one_hip(phantom, side, header, tight=tight)
    labels, measurements = segment_hips(volume, extract_bone(volume).mask)
    midline = measurements["afs"]["midline"]
    assert midline["method"] == ("femur_anatomy" if tight else "cut_border"), midline
    other = "left" if side == "right" else "right"
    found = measurements["sides"][side]
    assert found["status"] in ("ok", "truncated", "low_confidence"), found["message"]
    assert found["head_visible_fraction"] < 0.999
    truth = phantom.truth["sides"][side]["head_center_mm"]
    assert np.linalg.norm(np.subtract(found["head_center_mm"], truth)) < 2.0
    assert measurements["sides"][other]["status"] == "not_found"


def _true_midline(case):
    """RAS x and z halfway between the true head centres (the heads are placed symmetrically)."""
    truth = case.truth["sides"]
    return (np.add(truth["left"]["head_center_mm"], truth["right"]["head_center_mm"]) / 2.0)[[0, 2]]


@pytest.mark.parametrize("seed", [4001, 4013])
def test_full_view_midline_from_the_body_outline(seed, monkeypatch):
    """A field of view with air beside the body, as a scan has: the outline's centre is the midline.

    The small phantom's body fills its 380 mm field of view; this one is drawn 480 mm wide.
    """
    monkeypatch.setitem(SIZES, "wide", ((480.0, 320.0, 230.0), SIZES["small"][1], None))
    case = make_phantom(seed, size="wide", preset="hard", header="RAS")
    volume = case.to_volume()
    midline = estimate_midline(volume, extract_bone(volume).mask)
    true_x, true_z = _true_midline(case)
    assert midline.method == "body_outline", midline.detail
    assert midline.detail["clean_slices"] >= 0.8 * midline.detail["slices"]
    assert abs(midline.x_at(true_z) - true_x) < 3.0
    report = midline.report()
    assert report["method"] == "body_outline" and report["x_mm"] == pytest.approx(midline.x_mm, abs=0.05)


def test_cut_outline_midline_from_the_bone_symmetry(phantom):
    """The small phantom's body touches both x borders: the bone's mirror symmetry places the midline."""
    volume = phantom.to_volume()
    midline = estimate_midline(volume, extract_bone(volume).mask)
    true_x, true_z = _true_midline(phantom)
    assert midline.method == "bone_symmetry", midline.detail
    assert abs(midline.x_at(true_z) - true_x) < 10.0


def test_few_clean_slices_give_no_tilt():
    """The demo's first phantom: its outline clears the field of view on 5 of 58 slices, over 19 mm of z,
    well above the hips. Their centres alone read a 25 degree roll, which put the midline 60 mm off at
    the heads, 30 mm from the right one (refused as too near the midline; a trochanter chosen instead).
    Too short a stretch for a tilt: the bone's symmetry plane places the midline."""
    case = make_phantom(1000, size="small", preset="anatomic")
    volume = case.to_volume()
    midline = estimate_midline(volume, extract_bone(volume).mask)
    assert midline.detail["clean_slices"] == 5 and midline.detail["clean_span_mm"] < 60.0
    assert midline.method == "bone_symmetry" and abs(midline.report()["tilt_deg"]) < 10.0
    for truth in case.truth["sides"].values():
        x, _, z = truth["head_center_mm"]
        assert 80.0 < abs(x - midline.x_at(z)) < 105.0  # heads lie 75-100 mm either side
    true_x, true_z = _true_midline(case)
    assert abs(midline.x_at(true_z) - true_x) < 3.0


@pytest.mark.parametrize("tight", [False, True])
def test_implant_with_only_its_hip_in_view(tight):
    """The metal's side from the cut border, or (cut on both sides) from the femur the stem stands in."""
    case = make_phantom(4012, size="small", preset="implant", implant_side="right", header="RAS")
    volume = _one_hip(case, "right", "LPS", tight=tight)
    _, measurements = segment_hips(volume, extract_bone(volume).mask)
    assert measurements["afs"]["midline"]["method"] == ("femur_anatomy" if tight else "cut_border")
    assert measurements["sides"]["right"]["status"] == "implant"
    assert measurements["sides"]["left"]["status"] == "not_found"


def test_side_not_told_is_not_guessed(phantom):
    """A tight view of one hip ending just below the head: no shaft in view, so no side is claimed."""
    volume = phantom.to_volume()
    truth = phantom.truth["sides"]["left"]
    x, z = truth["head_center_mm"][0], truth["head_center_mm"][2]
    array, affine = _crop_x(volume, x - 80.0, x + 0.4 * truth["head_radius_mm"])
    k = volume.ras_to_index([[x, 0.0, z - 45.0]])[0][2]
    first = int(np.ceil(k))
    array = np.ascontiguousarray(array[:, :, first:])
    affine[:3, 3] += affine[:3, 2] * first
    short = _stored_volume(array, affine, "RAS")
    _, measurements = segment_hips(short, extract_bone(short).mask)
    assert measurements["afs"]["midline"]["method"] == "femur_anatomy"
    for side in ("left", "right"):
        found = measurements["sides"][side]
        assert found["status"] == "not_found"
        assert "could not be determined" in found["message"]


def test_narrow_view_holding_both_hips_takes_its_symmetry_plane(phantom):
    """A view under 240 mm wide, cut on both borders just beyond the two heads, holds both hips: the
    femur-anatomy rule (one side in view) would put both on one side. Two of the strongest head
    candidates mirror each other about the bone's symmetry plane, so it is the midline, and each head
    is found on its own side."""
    volume = phantom.to_volume()
    truth = phantom.truth["sides"]
    xs = sorted(truth[side]["head_center_mm"][0] for side in ("left", "right"))
    lo, hi = xs[0] - 25.0, xs[1] + 25.0
    assert hi - lo < 240.0
    array, affine = _crop_x(volume, lo, hi)
    narrow = _stored_volume(array, affine, "LPS")
    _, measurements = segment_hips(narrow, extract_bone(narrow).mask)
    midline = measurements["afs"]["midline"]
    assert midline["method"] == "bone_symmetry" and midline["symmetry_alternative"]["adopted"], midline
    for side in ("left", "right"):
        found = measurements["sides"][side]
        assert found["status"] in ("ok", "truncated", "low_confidence"), found["message"]
        assert np.linalg.norm(np.subtract(found["head_center_mm"], truth[side]["head_center_mm"])) < 2.0


def test_one_hip_view_refuses_a_symmetry_plane_through_its_own_head():
    """A one-hip view mirrors onto itself about a plane through its head: no two strong candidates
    mirror each other about it, and it is refused; two heads about a plane between them are not."""
    from thagpu.afs.midline import Midline
    # The strongest three of anatomic_truncated seed 9212 (one hip in view): 8 mm medial, 38 and 60 mm lateral.
    head, trochanter, shaft = np.array([85.0, 0.0, 0.0]), np.array([131.0, 0.0, -40.0]), np.array([153.0, 0.0, -90.0])
    midline = Midline(None, "femur_anatomy", alternative=Midline(93.0, "bone_symmetry"))
    assert midline.adopt_alternative([head, trochanter, shaft]) is midline
    assert midline.detail["symmetry_alternative"]["adopted"] is False
    sacrum, other_head = np.array([-3.0, 30.0, 20.0]), np.array([-92.0, 0.0, 0.0])
    between = Midline(None, "femur_anatomy", alternative=Midline(-5.0, "bone_symmetry"))
    assert between.adopt_alternative([sacrum, head, other_head]).method == "bone_symmetry"
    lopsided = Midline(None, "femur_anatomy", alternative=Midline(-5.0, "bone_symmetry"))
    assert lopsided.adopt_alternative([sacrum, head, np.array([-40.0, 0.0, 0.0])]) is lopsided
