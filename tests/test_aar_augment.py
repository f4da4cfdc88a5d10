"""Mirrored patients in training: the left-right flip swaps the hip labels, and is seeded."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from thagpu import labels as schema  # noqa: E402
from thagpu.aar.augment import SIDE_SWAP, RandMirrorSidesd  # noqa: E402


def _case():
    """A channel-first label map with each hip class in its own x-slab, and a CT that encodes x."""
    label = np.full((1, 8, 3, 2), schema.OTHER_BONE, dtype=np.float32)
    for x, value in ((0, schema.FEMORAL_HEAD_RIGHT), (1, schema.ACETABULUM_RIGHT),
                     (6, schema.ACETABULUM_LEFT), (7, schema.FEMORAL_HEAD_LEFT)):
        label[0, x] = value
    label[0, 3, 0, 0] = schema.BACKGROUND
    image = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], label.shape).copy()
    return image, label


def test_side_swap_exchanges_left_and_right_and_keeps_the_rest():
    for side, other in (("left", "right"), ("right", "left")):
        for mine, theirs in zip(schema.SIDE_LABELS[side], schema.SIDE_LABELS[other]):
            assert SIDE_SWAP[mine] == theirs
    assert SIDE_SWAP[schema.BACKGROUND] == schema.BACKGROUND and SIDE_SWAP[schema.OTHER_BONE] == schema.OTHER_BONE
    assert np.array_equal(SIDE_SWAP[SIDE_SWAP], np.arange(len(SIDE_SWAP)))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_mirror_flips_across_the_patient_and_swaps_the_sides(as_tensor):
    image, label = _case()
    convert = torch.as_tensor if as_tensor else np.asarray
    out = RandMirrorSidesd(["image", "label"], prob=1.0)({"image": convert(image), "label": convert(label)})
    got_label, got_image = np.asarray(out["label"]), np.asarray(out["image"])
    # The right head (x = 0) is now at x = 7, and is the left head there: the mirrored patient.
    assert got_label[0, 7, 0, 0] == schema.FEMORAL_HEAD_LEFT and got_label[0, 6, 0, 0] == schema.ACETABULUM_LEFT
    assert got_label[0, 0, 0, 0] == schema.FEMORAL_HEAD_RIGHT and got_label[0, 1, 0, 0] == schema.ACETABULUM_RIGHT
    assert got_label[0, 4, 0, 0] == schema.BACKGROUND  # x = 3 went to x = 4, unchanged in value
    assert np.array_equal(got_image[0, :, 0, 0], np.arange(8)[::-1])
    assert got_label.dtype == label.dtype
    again = RandMirrorSidesd(["image", "label"], prob=1.0)(out)
    assert np.array_equal(np.asarray(again["label"]), label) and np.array_equal(np.asarray(again["image"]), image)


def test_mirror_is_seeded_and_mirrors_about_half():
    from monai.transforms import Compose

    image, label = _case()

    def draws(seed):
        chain = Compose([RandMirrorSidesd(["image", "label"], prob=0.5)])
        chain.set_random_state(seed=seed)
        return [bool(np.asarray(chain({"image": image, "label": label})["image"])[0, 0, 0, 0] == 7) for _ in range(200)]

    first = draws(3)
    assert first == draws(3)
    assert 60 < sum(first) < 140


def test_label_key_must_be_a_key():
    with pytest.raises(ValueError, match="label_key"):
        RandMirrorSidesd(["image"], label_key="label")
