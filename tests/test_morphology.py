"""The CPU ndimage of thagpu.morphology: SciPy's filters spread over threads, with SciPy's result bit for bit."""

import numpy as np
import pytest
from scipy import ndimage

from thagpu import morphology


@pytest.fixture
def three_threads(monkeypatch):
    """Split every array over 3 threads (more than this machine may have), and count the splits."""
    splits = []
    pool = morphology._pool
    monkeypatch.setattr(morphology, "_threads", lambda: 3)
    monkeypatch.setattr(morphology, "THREADED_MIN_VOXELS", 1)
    monkeypatch.setattr(morphology, "_pool", lambda threads: splits.append(threads) or pool(threads))
    return splits


def test_the_cpu_ndimage_is_the_threaded_one_and_scipys_other_names_pass_through():
    assert morphology.ndimage_for(np.zeros(3)) is morphology.threaded_ndimage
    assert morphology.threaded_ndimage.watershed_ift is ndimage.watershed_ift
    assert morphology.threaded_ndimage.binary_fill_holes is ndimage.binary_fill_holes


def test_threaded_filters_equal_scipys_bit_for_bit(three_threads):
    rng = np.random.default_rng(3)
    image = rng.normal(size=(17, 12, 9)).astype(np.float32)
    mask = (image > 0.3).astype(np.uint8)
    cases = [
        ("gaussian_filter", (image, 1.3), {}),
        ("gaussian_filter", (image, (0.5, 0.0, 2.0)), {"mode": "nearest"}),
        ("gaussian_filter", (image, 1.0), {"mode": ["nearest", "reflect", "constant"], "cval": 3.0, "truncate": 2.5}),
        ("gaussian_filter", (image.astype(np.float64), 1.0), {"output": np.float32}),
        ("gaussian_filter", (image, 0.0), {}),  # no axis to filter: a copy
        ("gaussian_filter", (rng.random((5, 8, 7, 6)).astype(np.float32), (1.0, 1.5, 1.5, 1.5)), {}),
        ("gaussian_filter1d", (image, 1.5), {"axis": 0}),
        ("gaussian_filter1d", (image, 1.5), {"axis": -1, "mode": "mirror"}),
        ("uniform_filter", (image, (3, 1, 5)), {"mode": "nearest"}),
        ("uniform_filter", (mask, 3), {}),
        ("uniform_filter1d", (image, 4), {"axis": 1, "origin": 1}),
        ("correlate1d", (image, [1.0, 2.0, 3.5]), {"axis": 2, "mode": "wrap"}),
        ("correlate1d", (image[:, :1, :], [1.0, -1.0]), {"axis": 0}),  # an axis of one voxel
        ("correlate1d", (image, [1j, 1.0]), {"axis": 1}),  # complex weights: a complex result
        ("gaussian_filter", (image.astype(">f4"), 1.0), {}),  # byte-swapped: native output
        ("uniform_filter1d", (np.asfortranarray(image), 3), {"axis": 0}),
    ]
    for name, args, kwargs in cases:
        want = getattr(ndimage, name)(*args, **kwargs)
        got = getattr(morphology.threaded_ndimage, name)(*args, **kwargs)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=f"{name} {kwargs}")
    assert three_threads, "no filter was split"
    # In place, as SciPy's own multi-axis filters run their later axes.
    work = image.copy()
    assert morphology.threaded_ndimage.gaussian_filter1d(work, 1.2, axis=1, output=work) is work
    np.testing.assert_array_equal(work, ndimage.gaussian_filter1d(image, 1.2, axis=1))
    with pytest.raises(RuntimeError):
        morphology.threaded_ndimage.gaussian_filter(image, (1.0, 1.0))
    with pytest.raises(RuntimeError):
        morphology.threaded_ndimage.uniform_filter(image, 3, output=np.zeros((2, 2, 2), np.float32))


@pytest.mark.parametrize("dtype", [bool, np.float32])
def test_threaded_extreme_filters_equal_scipys(three_threads, dtype):
    rng = np.random.default_rng(4)
    array = (rng.uniform(size=(11, 7, 10)) * 10).astype(dtype)
    for size in (1, 2, 5, 9):
        for origin in sorted({0, -(size // 2), (size - 1) // 2}):
            for axis in range(3):
                for mode in ("nearest", "constant"):
                    for ours, theirs in ((morphology.maximum_filter1d, ndimage.maximum_filter1d),
                                         (morphology.minimum_filter1d, ndimage.minimum_filter1d)):
                        got = ours(array, size, axis, mode=mode, cval=0, origin=origin)
                        want = theirs(array, size, axis=axis, mode=mode, cval=0, origin=origin)
                        assert got.dtype == want.dtype
                        np.testing.assert_array_equal(got, want, err_msg=f"{size} {origin} {axis} {mode}")
    assert three_threads
    # C order whatever the input's, as on one thread (callers write through .ravel()).
    assert morphology.maximum_filter1d(np.asfortranarray(array), 3, 0).flags.c_contiguous


def test_central_differences_at_chosen_voxels_equal_scipys_whole_array_pass():
    from thagpu.bone.halfmax import central_difference_at
    rng = np.random.default_rng(6)
    array = (rng.normal(size=(9, 7, 5)) * 300).astype(np.float32)
    at = np.nonzero(rng.uniform(size=array.shape) < 0.4)  # borders included
    weights = np.array([-0.5, 0.0, 0.5], dtype=np.float32)
    for axis in range(3):
        want = ndimage.correlate1d(array, weights, axis=axis, mode="nearest")[at]
        got = central_difference_at(array, at, axis)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("structure", [None, "6", "18", "26", "in-plane", "2-d"])
def test_labels_equal_scipys_in_the_same_order(structure):
    # cc3d for the 3-D 6/18/26-connected structures, SciPy otherwise: the same labels either way, as
    # callers index sizes and flags by label.
    rng = np.random.default_rng(5)
    mask = ndimage.uniform_filter(rng.random((23, 19, 17)), 3) > 0.56
    structures = {None: None, "6": ndimage.generate_binary_structure(3, 1),
                  "18": ndimage.generate_binary_structure(3, 2), "26": np.ones((3, 3, 3), dtype=int),
                  "in-plane": morphology.in_plane_structure(2), "2-d": None}
    if structure == "2-d":
        mask = mask[:, :, 3]
    assert ndimage.label(mask, structures[structure])[1] > 3
    by_cc3d = morphology._cc3d_connectivity(structures[structure], mask.ndim) is not None
    assert by_cc3d == (structure in (None, "6", "18", "26"))
    for image in (mask, mask.astype(np.uint8) * 7, ~mask[::2][..., ::-1], np.asfortranarray(mask), mask.T):
        # any nonzero value, any strides and memory order (cc3d numbers in memory order: given C order)
        expected, expected_count = ndimage.label(image, structures[structure])
        labels, count = morphology.threaded_ndimage.label(image, structure=structures[structure])
        assert count == expected_count
        assert labels.dtype == expected.dtype
        np.testing.assert_array_equal(labels, expected)
    out = np.zeros(mask.shape, dtype=np.int32)  # SciPy's output argument: the count returned
    assert morphology.threaded_ndimage.label(mask, output=out) == ndimage.label(mask)[1]
