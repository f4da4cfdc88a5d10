"""Reading CT volumes and writing label maps, with SimpleITK.

``load_ct`` turns a NIfTI, NRRD or MetaImage file, or a folder holding a DICOM
series, into a :class:`~thagpu.volume.Volume` in canonical RAS orientation. It
refuses, with a one-line :class:`~thagpu.errors.InputError`, anything that is
not a usable 3-D CT in Hounsfield units: the header is checked before a single
pixel is read, and the values are checked before the volume is returned.

``save_labels``, ``save_volume`` and ``write_image`` write arrays back in the
original header (size, spacing, origin, direction), atomically: a failed write
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ._lazy import sitk

from .._atomic import atomic_path
from ..geometry import Geometry
from ..volume import Volume
from ._checks import (  # noqa: F401  (the plausible-CT rule, re-exported)
    AIR_HU,
    AIR_MIN_FRACTION,
    CT_RANGE_HU,
    FAT_HU,
    FAT_MIN_FRACTION,
    PADDING_FLOOR_HU,
    _format_size,
    _refuse,
)
from ._dicom import _read_dicom
from ._files import _itk_read, _read_file
from ._write import _as_numpy, _sitk_write, _write_detached

__all__ = [
    "DEFAULT_MAX_VOXELS", "SUPPORTED_SUFFIXES", "load_ct", "load_labels", "save_labels",
    "save_volume", "write_image",
]

#: The package's logger (``_dicom`` logs the series it picks under this name).
log = logging.getLogger("thagpu.io")

#: Largest volume ``load_ct`` reads by default (1.5e9 voxels: 6 GB as float32).
DEFAULT_MAX_VOXELS = 1.5e9

#: File suffix -> (format name recorded in ``Volume.info``, SimpleITK ImageIO).
_FORMATS = {
    ".nii": ("nifti", "NiftiImageIO"),
    ".nii.gz": ("nifti", "NiftiImageIO"),
    ".nrrd": ("nrrd", "NrrdImageIO"),
    ".nhdr": ("nrrd", "NrrdImageIO"),
    ".mha": ("metaimage", "MetaImageIO"),
    ".mhd": ("metaimage", "MetaImageIO"),
}
#: Suffixes that ``load_ct`` reads and ``write_image`` writes.
SUPPORTED_SUFFIXES = tuple(_FORMATS)
#: Formats whose header and pixel data live in two files.
_DETACHED = (".mhd", ".nhdr")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

def load_ct(path, *, max_voxels: float = DEFAULT_MAX_VOXELS) -> Volume:
    """Read a CT volume in Hounsfield units and return it in canonical RAS order.

    Parameters
    ----------
    path : str or Path
        A NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or
        MetaImage (``.mha``, ``.mhd``) file, or a folder holding a DICOM
        series. In a folder with several series, the CT series with the most
        slices is read and the choice recorded in ``info["dicom_series"]``.
    max_voxels : float, optional
        Refuse images with more voxels than this (checked from the header,
        before any pixel is read or memory allocated).

    Returns
    -------
    Volume
        ``array`` holds float32 HU in (R, A, S) order; ``original`` keeps the
        stored header so that labels can be written back voxel for voxel.
        ``info`` holds ``format`` (``"nifti"``, ``"nrrd"``, ``"metaimage"``
        or ``"dicom"``), ``pixel_type``, ``hu_range`` (before clipping),
        ``clipped_padding_voxels``, ``clipped_high_voxels`` and, for DICOM, ``n_slices`` and
        ``dicom_series`` (``series_uid``, ``n_slices``, ``description``,
        ``modality``, ``other_series``, ``unreadable_files``: files of the
        folder in no series), plus ``dicom_geometry_fixed`` if ITK's
        geometry had to be corrected from the sorted slice positions.

    Raises
    ------
    InputError
        With a one-line message naming ``path``, when the input is missing,
        empty, of an unknown format, truncated or corrupt, not 3-D (a 4-D
        image whose last axis has size 1 is read as 3-D), larger than
        ``max_voxels``, has non-positive or non-finite spacing (for NIfTI
        also in the header's pixdim, which ITK would read as 1 mm) or voxels
        under 0.05 mm, more than one
        value per voxel, non-finite values, or values that do not look like
        CT; for DICOM also when no series is found, or slices are duplicated,
        missing, unevenly spaced (a gap differing from the median gap by more
        than max(0.01 mm, 1 %)) or sheared by a gantry tilt.

    Notes
    -----
    Plausible CT rule: the values are accepted as HU when at least 0.1 % of
    the voxels are <= -900 HU (air is present), or when all values lie in
    [-1100, 4000] HU and at least 1 % of the voxels are <= -50 HU (fat or
    air is present). An MR image (all values >= 0) fails both. After that,
    values below -1024 HU (scanner padding outside the reconstruction
    circle, e.g. -2048 or -3024) are clipped to -1024 HU and counted in
    ``info["clipped_padding_voxels"]``; values above 65535 HU (beyond any
    scanner's scale: corrupt voxels) are clipped to it and counted in
    ``info["clipped_high_voxels"]``.

    DICOM slices are sorted by ImagePositionPatient projected onto the slice
    normal (row x column of ImageOrientationPatient), so the file names and
    instance numbers do not matter; GDCM applies RescaleSlope/Intercept.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom(path, max_voxels)
    if not path.exists():
        raise _refuse(path, "no such file or folder")
    if not path.is_file():
        raise _refuse(path, "not a regular file or a folder")
    suffix = _suffix(path)
    if suffix not in _FORMATS:
        shown = f"file type '{suffix}'" if suffix else "file without a suffix"
        raise _refuse(path, f"unrecognised {shown} (expected "
                            f"{', '.join(SUPPORTED_SUFFIXES)} or a DICOM series folder)")
    if path.stat().st_size == 0:
        raise _refuse(path, "file is empty (0 bytes)")
    fmt, io_name = _FORMATS[suffix]
    return _read_file(path, fmt, io_name, max_voxels)


def write_image(array_ijk, geometry: Geometry, path, *, dtype=None) -> Path:
    """Write a stored-order (i, j, k) array with ``geometry``, atomically.

    Parameters
    ----------
    array_ijk : (I, J, K) array
        Values in ITK index order; ``array_ijk.shape`` must equal
        ``geometry.size``. NumPy or CuPy (copied to the host).
    geometry : Geometry
        Size, spacing, origin and direction written to the header.
    path : str or Path
        Destination; the format follows the suffix (one of
        ``SUPPORTED_SUFFIXES``). ``.nii.gz`` is gzip-compressed. Its folder
        is created if missing.
    dtype : numpy dtype, optional
        Cast the values to this type first. Boolean arrays are written as
        uint8.

    Returns
    -------
    Path
        ``path``. Nothing is left under it, nor beside it, if writing fails;
        a file already there is then left untouched.

    Raises
    ------
    ValueError
        If the shape does not match the geometry or the suffix is not supported.
    OutputError
        If the file cannot be written (an ``OSError`` too).
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in _FORMATS:
        raise ValueError(f"{path}: cannot write file type '{suffix}' "
                         f"(expected one of {', '.join(SUPPORTED_SUFFIXES)})")
    array = _as_numpy(array_ijk)
    if array.shape != tuple(geometry.size):
        raise ValueError(f"array shape {array.shape} != geometry size {tuple(geometry.size)}")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    geometry.apply_to(image)
    compress = suffix == ".nii.gz"
    if suffix in _DETACHED:
        _write_detached(image, path, compress)
    else:
        with atomic_path(path) as tmp:
            _sitk_write(image, tmp, path, compress)
    return path


def save_labels(labels, volume: Volume, path) -> Path:
    """Write a canonical label map in the original header of ``volume``.

    Parameters
    ----------
    labels : (R, A, S) integer or boolean array
        Labels on ``volume.array``'s grid (``labels.shape == volume.shape``),
        values 0..255. NumPy or CuPy.
    volume : Volume
        The volume the labels were computed on.
    path : str or Path
        Destination (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``...), written
        atomically as uint8 with the input's size, spacing, origin and
        direction, voxel for voxel in its stored order.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the shape differs from the volume's, the array is not integer or
        boolean, or a value lies outside 0..255.
    """
    labels = _as_numpy(labels)
    if labels.shape != volume.shape:
        raise ValueError(f"labels shape {labels.shape} != volume shape {volume.shape} "
                         "(labels must be on the canonical (R, A, S) grid of the volume)")
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer or boolean array, not {labels.dtype}")
    if labels.size and labels.dtype != np.bool_:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > 255:
            raise ValueError(f"label values {low}..{high} do not fit in uint8 (0..255)")
    stored = volume.to_stored(labels)
    return write_image(stored, volume.original, path, dtype=np.uint8)


def _same_geometry(a: Geometry, b: Geometry) -> str:
    """'' when two headers describe the same grid (to 1e-3 of a voxel), else what differs."""
    if tuple(a.size) != tuple(b.size):
        return f"size {_format_size(a.size)} != {_format_size(b.size)}"
    if not np.allclose(a.spacing, b.spacing, rtol=1e-4, atol=1e-5):
        return f"spacing {tuple(round(s, 4) for s in a.spacing)} != {tuple(round(s, 4) for s in b.spacing)}"
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        return "direction cosines differ"
    if not np.allclose(a.origin, b.origin, atol=1e-3 * min(b.spacing)):
        return f"origin {tuple(round(o, 3) for o in a.origin)} != {tuple(round(o, 3) for o in b.origin)}"
    return ""


def load_labels(path, volume: Volume, *, allowed=None) -> np.ndarray:
    """Read a label map made for ``volume`` and return it on its canonical grid.

    Parameters
    ----------
    path : str or Path
        A label image (any format ``load_ct`` reads; not DICOM).
    volume : Volume
        The CT the labels belong to; the label header must describe the same
        grid (size, spacing, direction, origin to 1e-3 of a voxel).
    allowed : iterable of int, optional
        The label values that may occur (for example the schema's 0-5).

    Returns
    -------
    (R, A, S) uint8 ndarray

    Raises
    ------
    InputError
        One line naming the file: unreadable, not 3-D, another grid, not
        integer, or a value outside ``allowed``.
    """
    path = Path(path)
    if not path.is_file():
        raise _refuse(path, "no such label file")
    suffix = _suffix(path)
    if suffix not in _FORMATS:
        raise _refuse(path, f"unrecognised label file type '{suffix}' (expected {', '.join(SUPPORTED_SUFFIXES)})")
    image = _itk_read(path, lambda: sitk.ReadImage(str(path), imageIO=_FORMATS[suffix][1]))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise _refuse(path, f"{image.GetDimension()}-D image with {image.GetNumberOfComponentsPerPixel()} "
                            "value(s) per voxel; a 3-D label map is needed")
    differs = _same_geometry(Geometry.from_sitk(image), volume.original)
    if differs:
        raise _refuse(path, f"label map is not on the CT's grid: {differs}")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise _refuse(path, f"label values must be integers (found {array.dtype} fractions)")
        array = rounded
    values = np.unique(array)
    if allowed is not None:
        unknown = sorted(set(values.tolist()) - set(int(v) for v in allowed))
        if unknown:
            shown = ", ".join(str(int(v)) for v in unknown[:8])
            raise _refuse(path, f"unknown label value(s) {shown} (allowed: {', '.join(str(v) for v in sorted(allowed))})")
    elif values.size and (values.min() < 0 or values.max() > 255):
        raise _refuse(path, f"label values {values.min()}..{values.max()} do not fit in 0..255")
    return np.ascontiguousarray(volume.orientation.to_canonical(array).astype(np.uint8))


def save_volume(volume: Volume, path) -> Path:
    """Write the HU array of ``volume`` as int16 in its original header, atomically.

    Values are rounded to the nearest integer and clipped to the int16 range.

    Parameters
    ----------
    volume : Volume
        The CT to write (NumPy or CuPy array).
    path : str or Path
        Destination; the format follows the suffix.

    Returns
    -------
    Path
        ``path``.
    """
    array = _as_numpy(volume.array)
    info = np.iinfo(np.int16)
    hu = np.clip(np.rint(array), info.min, info.max).astype(np.int16)
    return write_image(volume.to_stored(hu), volume.original, path)
