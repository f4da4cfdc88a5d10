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
from thagpu.phantom import make_phantom
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
