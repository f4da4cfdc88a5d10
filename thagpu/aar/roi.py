"""The hip region of a case on a fixed isotropic grid, and the way back.

Networks see every case at the same spacing (``aar.spacing_mm``) in a box of
fixed physical size (``aar.roi_*_mm``) centred on the centroid of the hip
labels (1-4; of all bone when a case has none). The box is axis-aligned with
the canonical (R, A, S) grid, so going there and back is a diagonal affine
map: linear interpolation for the CT, nearest neighbour for labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..config import AARConfig

__all__ = ["HipROI", "hip_roi", "whole_roi", "to_roi", "from_roi", "normalise_hu"]

#: HU window mapped to [0, 1] for the networks (air to dense cortex).
HU_WINDOW = (-1000.0, 2000.0)


@dataclass(frozen=True)
class HipROI:
    """A box on the canonical grid: ROI voxel ``v`` sits at canonical index ``start + v * step``."""

    start: tuple  # canonical index (float) of ROI voxel (0, 0, 0)
    step: tuple  # canonical voxels per ROI voxel, per axis
    shape: tuple  # ROI grid shape
    spacing_mm: float  # ROI voxel size


def hip_roi(labels: np.ndarray, spacing, config: AARConfig) -> HipROI:
    """The hip box of a canonical label map with voxel ``spacing`` (mm)."""
    spacing = np.asarray(spacing, dtype=float)
    hips = (labels >= 1) & (labels <= 4)
    points = np.argwhere(hips if hips.any() else labels > 0)
    centre = points.mean(axis=0) if len(points) else (np.asarray(labels.shape) - 1) / 2.0
    size_mm = np.asarray([config.roi_lr_mm, config.roi_ap_mm, config.roi_si_mm])
    shape = np.maximum(np.round(size_mm / config.spacing_mm).astype(int), 1)
    step = config.spacing_mm / spacing
    start = centre - (shape - 1) / 2.0 * step
    return HipROI(start=tuple(float(v) for v in start), step=tuple(float(v) for v in step),
                  shape=tuple(int(v) for v in shape), spacing_mm=float(config.spacing_mm))


def whole_roi(shape, spacing, spacing_mm: float) -> HipROI:
    """A box covering a whole canonical volume of ``shape`` and voxel ``spacing`` at ``spacing_mm``."""
    spacing = np.asarray(spacing, dtype=float)
    extent = (np.asarray(shape) - 1) * spacing
    roi_shape = np.floor(extent / spacing_mm).astype(int) + 1
    return HipROI(start=(0.0, 0.0, 0.0), step=tuple(float(v) for v in spacing_mm / spacing),
                  shape=tuple(int(v) for v in roi_shape), spacing_mm=float(spacing_mm))


def to_roi(array: np.ndarray, roi: HipROI, *, order: int, cval: float) -> np.ndarray:
    """Sample a canonical array on the ROI grid (``order`` 1 for CT, 0 for labels)."""
    return ndimage.affine_transform(array, np.asarray(roi.step), offset=np.asarray(roi.start),
                                    output_shape=roi.shape, order=order, mode="constant", cval=cval,
                                    prefilter=False)


def from_roi(roi_labels: np.ndarray, roi: HipROI, shape: tuple, outside: np.ndarray) -> np.ndarray:
    """Nearest-neighbour labels of the ROI back on the canonical grid; ``outside`` where the box ends."""
    inverse_step = 1.0 / np.asarray(roi.step)
    out = ndimage.affine_transform(roi_labels.astype(np.int16), inverse_step,
                                   offset=-np.asarray(roi.start) * inverse_step, output_shape=shape,
                                   order=0, mode="constant", cval=-1)
    return np.where(out < 0, outside, out).astype(np.uint8)


def normalise_hu(image: np.ndarray) -> np.ndarray:
    """HU to [0, 1] over :data:`HU_WINDOW` (float32)."""
    low, high = HU_WINDOW
    return np.clip((image.astype(np.float32) - low) / (high - low), 0.0, 1.0)
