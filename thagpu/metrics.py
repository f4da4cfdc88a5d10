"""Segmentation metrics in millimetres for 3-D label maps.

Everything here runs on NumPy and SciPy only (no torch at import or run
time), so the metrics can be computed in light workers. The surface-distance
metrics reproduce MONAI's ``compute_hausdorff_distance`` and
``compute_average_surface_distance`` (``distance_metric="euclidean"``, with
``spacing``); ``tests/test_metrics.py`` checks the agreement.

Surface definition
------------------
The surface of a mask is the set of its voxels that have at least one face
(6-) neighbour outside the mask, the outside of the array counting as
background::

    surface = mask & ~binary_erosion(mask, border_value=0)

This is MONAI's ``get_mask_edges`` (without sub-voxel areas): it crops both
masks to the bounding box of their union plus a one-voxel margin (padding
with zeros where the margin leaves the array) and takes
``binary_erosion(mask) ^ mask`` with SciPy's default cross-shaped structuring
element and ``border_value=0``. The crop does not change the edges, so the
two definitions give the same voxels.

Distances
---------
The distance from a surface voxel of one mask to the other mask is the
Euclidean distance, in millimetres, between voxel centres, to the nearest
*surface* voxel of the other mask, computed with
``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)`` (MONAI
gets the same exact values from a KD-tree on CPU or an EDT on GPU). The
distance of a surface voxel lying inside the other mask is therefore its
distance to the other surface, not zero.

``spacing`` is always given in the order of the array axes, like
:attr:`thagpu.volume.Volume.spacing`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .labels import BACKGROUND, LABEL_NAMES

__all__ = [
    "dice",
    "surface_distances",
    "hd95",
    "assd",
    "label_metrics",
    "sphere_errors",
]

# Structuring elements of the surface (face connectivity), by number of axes.
_CROSS_CACHE: dict = {}


def _as_numpy(array) -> np.ndarray:
    """A NumPy view or copy of a NumPy or CuPy array."""
    if type(array).__module__.split(".")[0] == "cupy":
        array = array.get()
    return np.asarray(array)


def _as_mask(mask) -> np.ndarray:
    return _as_numpy(mask).astype(bool, copy=False)


def _check_pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred, true = _as_mask(pred), _as_mask(true)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} != {true.shape}")
    return pred, true


def _check_spacing(spacing, ndim: int) -> tuple:
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,):
        raise ValueError(f"spacing {tuple(np.ravel(spacing))} does not match {ndim} array axes")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be positive and finite, got {tuple(values)}")
    return tuple(float(v) for v in values)


def _structure(ndim: int) -> np.ndarray:
    if ndim not in _CROSS_CACHE:
        _CROSS_CACHE[ndim] = ndimage.generate_binary_structure(ndim, 1)
    return _CROSS_CACHE[ndim]


def _union_crop(pred: np.ndarray, true: np.ndarray) -> tuple:
    """Slices of the union bounding box grown by one voxel, clipped to the array."""
    union = pred | true
    slices = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hit = np.flatnonzero(union.any(axis=other))
        start = max(int(hit[0]) - 1, 0)
        stop = min(int(hit[-1]) + 2, union.shape[axis])
        slices.append(slice(start, stop))
    return tuple(slices)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face neighbour outside the mask (or the array)."""
    eroded = ndimage.binary_erosion(mask, structure=_structure(mask.ndim), border_value=0)
    return mask & ~eroded


def dice(pred_mask, true_mask) -> float:
    """Dice similarity coefficient of two boolean masks.

    Parameters
    ----------
    pred_mask, true_mask : array_like of bool
        Masks of the same shape (non-zero counts as inside).

    Returns
    -------
    float
        ``2 |P & T| / (|P| + |T|)``. **1.0 when both masks are empty** (the
        prediction agrees perfectly with an absent structure); 0.0 when
        exactly one is empty.
    """
    pred, true = _check_pair(pred_mask, true_mask)
    n_pred = int(np.count_nonzero(pred))
    n_true = int(np.count_nonzero(true))
    if n_pred + n_true == 0:
        return 1.0
    overlap = int(np.count_nonzero(pred & true))
    return float(2.0 * overlap / (n_pred + n_true))


def surface_distances(pred_mask, true_mask, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm between the surfaces of two masks, in both directions.

    Parameters
    ----------
    pred_mask, true_mask : array_like of bool
        Masks of the same shape.
    spacing : float or sequence of float
        Millimetres between voxel centres along each array axis (one number
        means isotropic).

    Returns
    -------
    d_pred_to_true : (N_pred,) ndarray of float64
        For each surface voxel of ``pred_mask`` (in C order), the distance to
        the nearest surface voxel of ``true_mask``.
    d_true_to_pred : (N_true,) ndarray of float64
        The same from ``true_mask`` to ``pred_mask``.

    Notes
    -----
    The surface is the set of mask voxels with a face neighbour outside the
    mask, the outside of the array counting as background (MONAI's
    ``get_mask_edges``); see the module docstring. Both masks are cropped to
    the bounding box of their union plus a one-voxel margin before the
    erosion and the distance transforms, which does not change the result.

    When one mask is empty, the distances from the other one's surface are
    ``inf`` (MONAI's convention) and the distances from the empty one are an
    empty array. Both empty: two empty arrays.
    """
    pred, true = _check_pair(pred_mask, true_mask)
    sampling = _check_spacing(spacing, pred.ndim)
    has_pred, has_true = bool(pred.any()), bool(true.any())
    if not (has_pred or has_true):
        return np.zeros(0), np.zeros(0)
    crop = _union_crop(pred, true)
    pred, true = pred[crop], true[crop]
    surf_pred = _surface(pred) if has_pred else np.zeros(pred.shape, dtype=bool)
    surf_true = _surface(true) if has_true else np.zeros(true.shape, dtype=bool)

    def directed(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        n_source = int(np.count_nonzero(source))
        if not target.any():
            return np.full(n_source, np.inf)
        if n_source == 0:
            return np.zeros(0)
        distance = ndimage.distance_transform_edt(~target, sampling=sampling)
        return np.asarray(distance[source], dtype=np.float64)

    return directed(surf_pred, surf_true), directed(surf_true, surf_pred)


def _both_present(pred: np.ndarray, true: np.ndarray) -> bool:
    return bool(pred.any()) and bool(true.any())


def hd95(pred_mask, true_mask, spacing) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm.

    Parameters
    ----------
    pred_mask, true_mask : array_like of bool
        Masks of the same shape.
    spacing : float or sequence of float
        Millimetres between voxel centres along each array axis.

    Returns
    -------
    float
        ``max(q95(d_pred_to_true), q95(d_true_to_pred))`` with linearly
        interpolated percentiles, as MONAI's
        ``compute_hausdorff_distance(..., percentile=95)`` (which uses
        ``torch.quantile``, also linear). **NaN when either mask is empty**;
        MONAI returns ``inf`` when exactly one is empty and ``nan`` when both
        are.
    """
    pred, true = _check_pair(pred_mask, true_mask)
    if not _both_present(pred, true):
        return math.nan
    d_pt, d_tp = surface_distances(pred, true, spacing)
    return float(max(np.percentile(d_pt, 95.0), np.percentile(d_tp, 95.0)))


def assd(pred_mask, true_mask, spacing) -> float:
    """Average symmetric surface distance in mm.

    Parameters
    ----------
    pred_mask, true_mask : array_like of bool
        Masks of the same shape.
    spacing : float or sequence of float
        Millimetres between voxel centres along each array axis.

    Returns
    -------
    float
        The mean of the distances of both directions concatenated (each
        surface voxel weighs the same), as MONAI's
        ``compute_average_surface_distance(..., symmetric=True)``. **NaN when
        either mask is empty** (MONAI gives ``inf`` when exactly one is empty
        and ``nan`` when both are).
    """
    pred, true = _check_pair(pred_mask, true_mask)
    if not _both_present(pred, true):
        return math.nan
    d_pt, d_tp = surface_distances(pred, true, spacing)
    return float(np.concatenate([d_pt, d_tp]).mean())


def label_metrics(pred_labels, true_labels, spacing, labels=None) -> dict:
    """Per-label Dice, HD95, ASSD and volumes of two label maps.

    Parameters
    ----------
    pred_labels, true_labels : array_like of int
        Label maps of the same shape (schema of :mod:`thagpu.labels`).
    spacing : float or sequence of float
        Millimetres between voxel centres along each array axis.
    labels : iterable of int, optional
        Label values to score. Defaults to every non-background value of
        :data:`thagpu.labels.LABEL_NAMES` (1..5).

    Returns
    -------
    dict
        ``{name: {"name", "dice", "hd95_mm", "assd_mm", "volume_pred_ml",
        "volume_true_ml"}}`` keyed by the label name (``"label_<v>"`` for a
        value outside the schema). All numbers are Python floats. ``dice``
        is 1.0 when the label is absent from both maps; ``hd95_mm`` and
        ``assd_mm`` are NaN when it is absent from either (write JSON with
        ``allow_nan=True``, the default of :func:`json.dumps`, or map NaN to
        ``null``). Volumes are voxel counts times ``prod(spacing) / 1000``.
    """
    pred = _as_numpy(pred_labels)
    true = _as_numpy(true_labels)
    if pred.shape != true.shape:
        raise ValueError(f"label map shapes differ: {pred.shape} != {true.shape}")
    sampling = _check_spacing(spacing, pred.ndim)
    voxel_ml = float(np.prod(sampling)) / 1000.0
    if labels is None:
        labels = [value for value in LABEL_NAMES if value != BACKGROUND]
    result = {}
    for value in labels:
        value = int(value)
        name = LABEL_NAMES.get(value, f"label_{value}")
        pred_mask = pred == value
        true_mask = true == value
        if _both_present(pred_mask, true_mask):
            d_pt, d_tp = surface_distances(pred_mask, true_mask, sampling)
            hd = float(max(np.percentile(d_pt, 95.0), np.percentile(d_tp, 95.0)))
            asd = float(np.concatenate([d_pt, d_tp]).mean())
        else:
            hd = asd = math.nan
        result[name] = {
            "name": name,
            "dice": dice(pred_mask, true_mask),
            "hd95_mm": hd,
            "assd_mm": asd,
            "volume_pred_ml": float(np.count_nonzero(pred_mask)) * voxel_ml,
            "volume_true_ml": float(np.count_nonzero(true_mask)) * voxel_ml,
        }
    return result


def sphere_errors(pred_center, pred_radius, true_center, true_radius) -> dict:
    """Errors of a fitted sphere (e.g. a femoral head) against a reference.

    Parameters
    ----------
    pred_center, true_center : sequence of 3 float
        Sphere centres in millimetres, in the same frame.
    pred_radius, true_radius : float
        Radii in millimetres.

    Returns
    -------
    dict
        ``{"center_error_mm": |c_pred - c_true|, "radius_error_mm":
        |r_pred - r_true|}`` as Python floats.
    """
    pc = np.asarray(pred_center, dtype=np.float64)
    tc = np.asarray(true_center, dtype=np.float64)
    if pc.shape != tc.shape:
        raise ValueError(f"centre shapes differ: {pc.shape} != {tc.shape}")
    return {
        "center_error_mm": float(np.linalg.norm(pc - tc)),
        "radius_error_mm": float(abs(float(pred_radius) - float(true_radius))),
    }
