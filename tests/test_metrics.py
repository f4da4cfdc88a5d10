"""Tests of thagpu.metrics, checked against MONAI's surface-distance metrics."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from thagpu.labels import BACKGROUND, LABEL_NAMES
from thagpu.metrics import (
    assd,
    dice,
    hd95,
    label_metrics,
    sphere_errors,
    surface_distances,
)

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")

TOL_MM = 1e-3


def _ball(shape, center, radius_mm, spacing):
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, center, spacing)],
                        indexing="ij")
    return sum(g * g for g in grids) <= radius_mm ** 2


def _monai(pred, true, spacing):
    """MONAI's (hd95, assd) of two boolean masks."""
    def one_hot(mask):
        mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
        return torch.stack([1.0 - mask, mask])[None]  # (B=1, C=2, X, Y, Z)

    yp, yt = one_hot(pred), one_hot(true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = monai_metrics.compute_hausdorff_distance(yp, yt, percentile=95, spacing=list(spacing))
        asd = monai_metrics.compute_average_surface_distance(yp, yt, symmetric=True,
                                                             spacing=list(spacing))
    return float(hd[0, 0]), float(asd[0, 0])


# --------------------------------------------------------------------------- dice

def test_dice_known_cases():
    a = np.zeros((6, 6, 8), bool)
    a[1:5, 1:5, 1:5] = True  # 64 voxels
    assert dice(a, a) == 1.0
    disjoint = np.zeros_like(a)
    disjoint[5, 5, 5:] = True
    assert dice(a, disjoint) == 0.0
    # The same box shifted by half its width: 2 * 32 / (64 + 64) = 0.5 exactly.
    shifted = np.roll(a, 2, axis=2)
    assert np.count_nonzero(a & shifted) == 32
    assert dice(a, shifted) == 0.5
    # Half of a, nested in it: 2 * 32 / (64 + 32) = 2/3.
    half = np.zeros_like(a)
    half[1:5, 1:5, 1:3] = True
    assert dice(a, half) == pytest.approx(2.0 / 3.0)
    assert type(dice(a, half)) is float
    # Non-boolean input counts non-zero as inside.
    assert dice(a.astype(np.uint8) * 3, half.astype(np.float32)) == pytest.approx(2.0 / 3.0)
    empty = np.zeros_like(a)
    assert dice(empty, empty) == 1.0
    assert dice(a, empty) == 0.0
    assert dice(empty, a) == 0.0


def test_dice_shape_mismatch():
    with pytest.raises(ValueError):
        dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))


# ------------------------------------------------------------ surface distances

def test_surface_distances_simple_shift():
    a = np.zeros((8, 8, 8), bool)
    a[2:5, 2:5, 2:5] = True
    b = np.roll(a, 1, axis=2)
    d_ab, d_ba = surface_distances(a, b, (1.0, 1.0, 2.0))
    # 3x3x3 cube: 26 surface voxels (all but the centre). Each lies on b's
    # surface (0), one z step below it (2 mm), or at b's interior centre
    # line, 1 mm (one x/y step) from b's surface.
    assert d_ab.shape == (26,) and d_ba.shape == (26,)
    assert sorted(set(np.round(d_ab, 9))) == [0.0, 1.0, 2.0]
    assert np.count_nonzero(d_ab == 2.0) == 9  # a's bottom face
    assert np.count_nonzero(d_ab == 1.0) == 1  # a's top-face centre, inside b


def test_surface_distances_touching_border():
    # The outside of the array is background: a mask filling a whole face is
    # still bounded there, and a full array has every boundary voxel as surface.
    full = np.ones((4, 5, 6), bool)
    d, _ = surface_distances(full, full, 1.0)
    assert d.size == full.size - 2 * 3 * 4
    assert np.all(d == 0.0)


def test_surface_distances_empty():
    a = np.zeros((5, 5, 5), bool)
    b = a.copy()
    b[2, 2, 2] = True
    d_ab, d_ba = surface_distances(a, b, 1.0)
    assert d_ab.size == 0 and d_ba.shape == (1,) and np.isinf(d_ba[0])
    d_aa = surface_distances(a, a, 1.0)
    assert d_aa[0].size == 0 and d_aa[1].size == 0
    assert math.isnan(hd95(a, b, 1.0)) and math.isnan(assd(a, b, 1.0))
    assert math.isnan(hd95(a, a, 1.0)) and math.isnan(assd(b, a, 1.0))


def test_spacing_validation():
    a = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError):
        surface_distances(a, a, (1.0, 1.0))
    with pytest.raises(ValueError):
        hd95(a, a, (1.0, 0.0, 1.0))


# ------------------------------------------------------------ MONAI agreement

SPACING = (0.8, 0.8, 2.0)


def _concentric_spheres():
    shape = (40, 40, 34)
    center = (19.5, 20.0, 16.3)
    unit = (1.0, 1.0, 1.0)  # radii in voxels
    return _ball(shape, center, 10, unit), _ball(shape, center, 12, unit)


def _shifted_cubes():
    a = np.zeros((30, 28, 20), bool)
    a[5:20, 6:18, 3:12] = True
    b = np.zeros_like(a)
    b[8:24, 4:17, 5:15] = True
    return a, b


def _random_blobs():
    from scipy import ndimage

    rng = np.random.default_rng(1234)
    field = ndimage.gaussian_filter(rng.standard_normal((36, 32, 24)), 2.0)
    a = field > 0.05
    field_b = field + 0.03 * ndimage.gaussian_filter(rng.standard_normal(field.shape), 1.0)
    b = field_b > 0.08
    # Make a touch the array border so the edge-of-array convention is exercised.
    a[0, 10:20, 5:15] = True
    return a, b


@pytest.mark.parametrize("make", [_concentric_spheres, _shifted_cubes, _random_blobs],
                         ids=["concentric_spheres", "shifted_cubes", "random_blobs"])
def test_agrees_with_monai(make):
    pred, true = make()
    assert pred.any() and true.any() and not np.array_equal(pred, true)
    ref_hd, ref_asd = _monai(pred, true, SPACING)
    got_hd, got_asd = hd95(pred, true, SPACING), assd(pred, true, SPACING)
    assert got_hd == pytest.approx(ref_hd, abs=TOL_MM)
    assert got_asd == pytest.approx(ref_asd, abs=TOL_MM)
    assert got_hd > 0 and got_asd > 0
    # The metrics are symmetric.
    assert hd95(true, pred, SPACING) == pytest.approx(got_hd, abs=1e-9)
    assert assd(true, pred, SPACING) == pytest.approx(got_asd, abs=1e-9)


def test_cropping_does_not_change_result():
    # The same pair embedded in a larger array gives the same numbers.
    pred, true = _shifted_cubes()
    big_pred = np.zeros((60, 50, 40), bool)
    big_true = np.zeros_like(big_pred)
    big_pred[10:40, 7:35, 9:29] = pred
    big_true[10:40, 7:35, 9:29] = true
    assert hd95(big_pred, big_true, SPACING) == pytest.approx(hd95(pred, true, SPACING))
    assert assd(big_pred, big_true, SPACING) == pytest.approx(assd(pred, true, SPACING))


def test_physical_spheres_2mm_apart():
    spacing = (0.5, 0.5, 0.5)
    shape = (100, 100, 100)
    center = (49.5, 49.5, 49.5)
    inner = _ball(shape, center, 20.0, spacing)
    outer = _ball(shape, center, 22.0, spacing)
    assert assd(inner, outer, spacing) == pytest.approx(2.0, abs=0.5)
    assert hd95(inner, outer, spacing) == pytest.approx(2.0, abs=0.5)


# ---------------------------------------------------------------- label_metrics

def test_label_metrics_keys_and_volumes():
    spacing = (0.7, 0.9, 1.5)
    true = np.zeros((20, 18, 12), np.uint8)
    true[2:8, 2:8, 2:6] = 1
    true[2:8, 9:15, 2:6] = 2
    true[10:16, 2:8, 6:10] = 3
    true[10:16, 9:15, 6:10] = 5  # label 4 absent from both
    pred = true.copy()
    pred[2:8, 2:8, 6] = 1  # one slab grown
    pred[pred == 5] = 0  # label 5 missed
    pred[12, 12, 8] = 4  # a spurious label 4 voxel

    result = label_metrics(pred, true, spacing)
    expected_names = [LABEL_NAMES[v] for v in LABEL_NAMES if v != BACKGROUND]
    assert list(result) == expected_names
    keys = {"name", "dice", "hd95_mm", "assd_mm", "volume_pred_ml", "volume_true_ml"}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for value in range(1, 6):
        name = LABEL_NAMES[value]
        entry = result[name]
        assert set(entry) == keys and entry["name"] == name
        for key in keys - {"name"}:
            assert type(entry[key]) is float
        assert entry["volume_pred_ml"] == pytest.approx(np.count_nonzero(pred == value) * voxel_ml)
        assert entry["volume_true_ml"] == pytest.approx(np.count_nonzero(true == value) * voxel_ml)
        assert entry["dice"] == pytest.approx(dice(pred == value, true == value))

    assert result["acetabulum_left"]["dice"] == 1.0
    assert result["acetabulum_left"]["hd95_mm"] == 0.0
    assert result["femoral_head_left"]["hd95_mm"] == pytest.approx(
        hd95(pred == 1, true == 1, spacing))
    assert result["femoral_head_left"]["assd_mm"] == pytest.approx(
        assd(pred == 1, true == 1, spacing))
    assert result["other_bone"]["dice"] == 0.0
    assert math.isnan(result["other_bone"]["hd95_mm"])
    assert math.isnan(result["acetabulum_right"]["assd_mm"])
    json.dumps(result)  # serialisable (NaN allowed)

    only = label_metrics(pred, true, spacing, labels=[3])
    assert list(only) == ["femoral_head_right"]


# ---------------------------------------------------------------- sphere_errors

def test_sphere_errors():
    err = sphere_errors((1.0, 2.0, 3.0), 24.0, (4.0, 6.0, 3.0), 25.5)
    assert err == {"center_error_mm": pytest.approx(5.0), "radius_error_mm": pytest.approx(1.5)}
    assert type(err["center_error_mm"]) is float and type(err["radius_error_mm"]) is float
    same = sphere_errors([0, 0, 0], 10, [0, 0, 0], 10)
    assert same == {"center_error_mm": 0.0, "radius_error_mm": 0.0}
