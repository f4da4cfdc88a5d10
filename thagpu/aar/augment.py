"""Training augmentation that knows the label schema: mirroring a patient swaps its sides.

The hips come in left/right pairs of classes (:data:`thagpu.labels.SIDE_LABELS`). A random flip of
the patient's left-right axis alone (MONAI's ``RandFlipd``) would teach a network that a left
acetabulum may lie on the right; flipping and swapping each side's labels gives a mirrored patient
instead, a valid case of the other side. Each side's classes then learn from both hips, and the
network tells them apart by what the patch shows of the body (the femur runs laterally, the pelvis
medially), which is how the labels are defined. It was added for one seed of SegResNet in the model
benchmark's CPU preset that learned the right acetabulum and never the left one; it did not cure that
seed (its narrow last layer is the cause, docs/benchmarks.md), but it is the right augmentation for a
schema of paired sides.

Imported where MONAI is (training only): the class derives from MONAI's randomisable transforms, so a
``Compose`` seeds it with the others (``monai.utils.set_determinism``).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from .. import labels as schema

__all__ = ["SIDE_SWAP", "RandMirrorSidesd"]


def _side_swap() -> np.ndarray:
    swap = np.arange(max(schema.LABEL_NAMES) + 1, dtype=np.int64)
    (head_l, cup_l), (head_r, cup_r) = schema.SIDE_LABELS["left"], schema.SIDE_LABELS["right"]
    swap[[head_l, cup_l, head_r, cup_r]] = [head_r, cup_r, head_l, cup_l]
    return swap


#: Label value -> its value in the mirrored patient (left and right hip classes exchanged).
SIDE_SWAP = _side_swap()


class RandMirrorSidesd(RandomizableTransform, MapTransform):
    """With probability ``prob``, mirror the patient: flip the left-right axis and swap the side labels.

    Parameters
    ----------
    keys : sequence of str
        Channel-first arrays (``(C, X, Y, Z)``, NumPy or torch) on the canonical (R, A, S) grid,
        so the first spatial axis runs across the patient.
    label_key : str
        The key among ``keys`` whose values are labels of :mod:`thagpu.labels`.
    prob : float
        Chance that a sample is mirrored.
    """

    def __init__(self, keys, label_key: str = "label", prob: float = 0.5):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        if label_key not in self.keys:
            raise ValueError(f"label_key {label_key!r} must be one of the keys {self.keys}")
        self.label_key = label_key

    def __call__(self, data):
        out = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return out
        for key in self.key_iterator(out):
            value = out[key]
            if isinstance(value, torch.Tensor):
                flipped = torch.flip(value, dims=(1,))  # a MetaTensor stays one, and so its batch
                if key == self.label_key:
                    swap = torch.as_tensor(SIDE_SWAP, device=flipped.device)
                    flipped.copy_(swap[flipped.long()])
            else:
                flipped = np.flip(np.asarray(value), axis=1)
                if key == self.label_key:
                    flipped = SIDE_SWAP[flipped.astype(np.int64)].astype(flipped.dtype)
                flipped = np.ascontiguousarray(flipped)
            out[key] = flipped
        return out
