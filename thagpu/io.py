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

import contextlib
import gzip
import logging
import math
import os
import re
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ._atomic import atomic_path
from .errors import InputError, OutputError
from .geometry import Geometry
from .volume import Volume

__all__ = [
    "DEFAULT_MAX_VOXELS", "SUPPORTED_SUFFIXES", "load_ct", "save_labels",
    "save_volume", "write_image",
]

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

#: Plausible-CT rule (see ``load_ct``).
AIR_HU = -900.0
AIR_MIN_FRACTION = 0.001
FAT_HU = -50.0
FAT_MIN_FRACTION = 0.01
CT_RANGE_HU = (-1100.0, 4000.0)
#: Values below this (scanner padding outside the reconstruction circle) are clipped to it.
PADDING_FLOOR_HU = -1024.0

#: Slice gaps may differ from the median gap by this much (the larger of the two).
_GAP_TOL_MM = 0.01
_GAP_TOL_REL = 0.01

_DICOM_TAGS = {
    "modality": "0008|0060",
    "description": "0008|103e",
    "position": "0020|0032",
    "orientation": "0020|0037",
}

_CHUNK = 1 << 24  # voxels per block when scanning values


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _refuse(path, reason: str) -> InputError:
    """An InputError whose message is one line."""
    return InputError(path, " ".join(str(reason).split()))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


_ITK_ERROR = re.compile(r"^(?:ITK ERROR|itk::ERROR|sitk::ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?")


def _itk_reason(error: Exception, path=None) -> str:
    """One line saying why SimpleITK/ITK failed, from its multi-line message.

    The "ITK ERROR" line, completed by the last detail line of libraries that
    add their own trail (NRRD's "[nrrd] ..."); ``path`` is shortened to its name.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    reason = lines[-1]
    for line in lines:
        match = _ITK_ERROR.match(line)
        if match:
            reason = line[match.end():]
            detail = lines[-1]
            if detail.startswith("[") and detail != line:
                reason = f"{reason.rstrip(': ')}: {detail.split(': ', 1)[-1]}"
            break
    if path is not None:
        reason = reason.replace(str(path), Path(path).name)
    return reason


def _as_numpy(array) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array."""
    if hasattr(array, "get") and not isinstance(array, np.ndarray):
        array = array.get()
    return np.asarray(array)


def _format_size(size) -> str:
    return "x".join(str(int(n)) for n in size)


def _format_count(n: float) -> str:
    return f"{int(n)}" if n < 1e6 else f"{n:.3g}"


def _format_hu(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"


# --------------------------------------------------------------------------
# Header checks
# --------------------------------------------------------------------------

def _check_header(path, size, spacing, components: int, max_voxels: float) -> None:
    """Refuse a header before its pixels are read (dimension already 3)."""
    n_voxels = math.prod(int(n) for n in size)
    if n_voxels == 0:
        raise _refuse(path, f"image of size {_format_size(size)} holds no voxels")
    if n_voxels > max_voxels:
        raise _refuse(path, f"image of {_format_size(size)} = {_format_count(n_voxels)} voxels "
                            f"exceeds the limit of {_format_count(max_voxels)} voxels")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise _refuse(path, f"voxel spacing ({shown}) mm is not finite and positive")
    if components != 1:
        raise _refuse(path, f"{components} components per pixel (colour or vector image); "
                            "a CT has one value per voxel")


def _open_reader(path: Path, io_name: str) -> sitk.ImageFileReader:
    """An ImageFileReader of ``path`` that has read the header only."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io_name)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise _refuse(path, "could not be read (truncated or corrupt file?): "
                            + _itk_reason(error, path)) from None
    return reader


#: NIfTI datatype code -> NumPy type, for the float types whose values are scanned.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes):
    """(byte order, datatype, bitpix, data offset, voxel count) of a NIfTI-1/2 header, or None."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack_from(endian + "i", header, 0)[0] == 348:
            dim = struct.unpack_from(endian + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 70)
            offset = max(int(struct.unpack_from(endian + "f", header, 108)[0]), 352)
            break
        if len(header) >= 540 and struct.unpack_from(endian + "i", header, 0)[0] == 540:
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 12)
            dim = struct.unpack_from(endian + "8q", header, 16)
            offset = max(int(struct.unpack_from(endian + "q", header, 168)[0]), 544)
            break
    else:
        return None
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    n_voxels = math.prod(max(int(n), 1) for n in dim[1:ndim + 1])
    return endian, int(datatype), int(bitpix), offset, n_voxels


def _open_maybe_gzip(path: Path, compressed: bool):
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _gzip_complete(path: Path, expected: int) -> bool:
    """Whether the gzip trailer states the expected uncompressed size (modulo 2**32).

    A file cut short ends with arbitrary bytes instead, so a match is a
    cheap proof of completeness; a mismatch (e.g. a multi-member file) needs
    the full decompression to decide.
    """
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return struct.unpack("<I", handle.read(4))[0] == expected % 2**32


def _scan_nifti_floats(path: Path, compressed: bool, offset: int, count: int, dtype: str):
    """(values present, non-finite values, NaN values) in a float NIfTI's data."""
    itemsize = np.dtype(dtype).itemsize
    present = bad = nans = 0
    with _open_maybe_gzip(path, compressed) as handle:
        handle.seek(offset)
        while present < count:
            want = min(_CHUNK, count - present) * itemsize
            block = handle.read(want)
            values = np.frombuffer(block, dtype, count=len(block) // itemsize)
            finite = np.isfinite(values)
            bad += int(values.size - np.count_nonzero(finite))
            if bad:
                nans += int(np.count_nonzero(np.isnan(values)))
            present += values.size
            if len(block) < want:
                break
    return present, bad, nans


def _check_nifti_data(path: Path) -> None:
    """Refuse a truncated NIfTI file, or one holding NaN or infinite values.

    ITK's NIfTI reader notices neither: it fills the voxels missing from a
    file that ends early with zeros (``.nii`` and ``.nii.gz`` alike), and
    niftilib replaces non-finite float values by 0.
    """
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    prefix = "could not be read (truncated or corrupt file?): "
    try:
        with _open_maybe_gzip(path, compressed) as handle:
            layout = _nifti_layout(handle.read(544))
        if layout is None:
            return  # ITK accepted the header; nothing more to check here
        endian, datatype, bitpix, offset, count = layout
        expected = offset + count * (bitpix // 8)
        dtype = _NIFTI_FLOATS.get(datatype)
        if dtype is not None:
            present, bad, nans = _scan_nifti_floats(path, compressed, offset, count,
                                                    endian + dtype)
            actual = offset + present * (bitpix // 8)
        elif not compressed:
            actual = path.stat().st_size
        elif _gzip_complete(path, expected):
            return
        else:
            actual = 0
            with gzip.open(path, "rb") as handle:
                while block := handle.read(_CHUNK):
                    actual += len(block)
    except (OSError, EOFError, zlib.error) as error:
        raise _refuse(path, f"{prefix}gzip: {error}") from None
    if actual < expected:
        raise _refuse(path, f"{prefix}data ends after {actual} of {expected} bytes")
    if dtype is not None and bad:
        if nans == count:
            raise _refuse(path, "all values are NaN")
        raise _refuse(path, f"{bad} of {count} values are not finite (NaN or inf)")


# --------------------------------------------------------------------------
# Pixel checks
# --------------------------------------------------------------------------

def _validate_values(path, array: np.ndarray) -> dict:
    """Refuse non-finite or non-CT values; clip scanner padding in place.

    ``array`` is a writable float32 array. Returns notes for ``Volume.info``.
    """
    flat = array.reshape(-1)
    n = flat.size
    vmin, vmax = math.inf, -math.inf
    n_air = n_fat = n_padding = 0
    finite = True
    for start in range(0, n, _CHUNK):
        block = flat[start:start + _CHUNK]
        bmin, bmax = float(block.min()), float(block.max())
        if not (math.isfinite(bmin) and math.isfinite(bmax)):
            finite = False
            break
        vmin, vmax = min(vmin, bmin), max(vmax, bmax)
        n_air += int(np.count_nonzero(block <= AIR_HU))
        n_fat += int(np.count_nonzero(block <= FAT_HU))
        n_padding += int(np.count_nonzero(block < PADDING_FLOOR_HU))
    if not finite:
        blocks = [flat[s:s + _CHUNK] for s in range(0, n, _CHUNK)]
        bad = sum(int(b.size - np.count_nonzero(np.isfinite(b))) for b in blocks)
        if sum(int(np.count_nonzero(np.isnan(b))) for b in blocks) == n:
            raise _refuse(path, "all values are NaN")
        raise _refuse(path, f"{bad} of {n} values are not finite (NaN or inf)")
    shown = f"values {_format_hu(vmin)}..{_format_hu(vmax)}"
    has_air = n_air >= AIR_MIN_FRACTION * n
    has_fat = n_fat >= FAT_MIN_FRACTION * n
    in_range = CT_RANGE_HU[0] <= vmin and vmax <= CT_RANGE_HU[1]
    if not (has_air or (in_range and has_fat)):
        if has_fat:
            why = (f"no air near -1000 HU, and values outside "
                   f"{CT_RANGE_HU[0]:.0f}..{CT_RANGE_HU[1]:.0f} HU")
        else:
            why = "no air near -1000 HU, no fat below -50 HU"
        raise _refuse(path, f"{shown} do not look like CT in HU ({why})")
    if n_padding:
        for start in range(0, n, _CHUNK):
            block = flat[start:start + _CHUNK]
            np.maximum(block, PADDING_FLOOR_HU, out=block)
    return {"hu_range": [vmin, vmax], "clipped_padding_voxels": n_padding}


def _pixels(image: sitk.Image) -> tuple:
    """(array (k, j, i), geometry, pixel type name) of a 3-D SimpleITK image.

    The caller drops its image right after, so that the pixels are held
    once, not twice, while they are converted to float32.
    """
    return (sitk.GetArrayFromImage(image), Geometry.from_sitk(image),
            image.GetPixelIDTypeAsString())


def _to_volume(path, array: np.ndarray, geometry: Geometry, pixel_type: str,
               info: dict) -> Volume:
    """Validate a (k, j, i) array of HU and build the Volume."""
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 -> inf, refused
        array = array.astype(np.float32, copy=False)
    info["pixel_type"] = pixel_type
    info.update(_validate_values(path, array))
    return Volume.from_stored(array.transpose(2, 1, 0), geometry, source=str(path), info=info)


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def _read_file(path: Path, fmt: str, io_name: str, max_voxels: float) -> Volume:
    reader = _open_reader(path, io_name)
    size = tuple(reader.GetSize())
    dimension = reader.GetDimension()
    if dimension == 4 and size[3] == 1:
        reader.SetExtractIndex([0, 0, 0, 0])
        reader.SetExtractSize([*size[:3], 0])  # 0 collapses the last axis
        size, spacing = size[:3], tuple(reader.GetSpacing())[:3]
    elif dimension != 3:
        raise _refuse(path, f"{dimension}-D image of size {_format_size(size)}; "
                            "a 3-D CT volume is needed")
    else:
        spacing = tuple(reader.GetSpacing())
    _check_header(path, size, spacing, reader.GetNumberOfComponents(), max_voxels)
    if fmt == "nifti":
        _check_nifti_data(path)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise _refuse(path, "could not be read (truncated or corrupt file?): "
                            + _itk_reason(error, path)) from None
    pixels = _pixels(image)
    del image
    return _to_volume(path, *pixels, {"format": fmt})


# --------------------------------------------------------------------------
# DICOM series
# --------------------------------------------------------------------------

def _floats(text: str, count: int):
    try:
        values = [float(v) for v in text.replace(",", ".").split("\\")]
    except ValueError:
        return None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


def _dicom_header(path) -> dict:
    """The few tags ``load_ct`` needs from one DICOM file, without its pixels."""
    reader = _open_reader(Path(path), "GDCMImageIO")
    tags = {}
    for name, key in _DICOM_TAGS.items():
        tags[name] = reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
    return {
        "file": str(path),
        "modality": tags["modality"].upper(),
        "description": tags["description"],
        "position": _floats(tags["position"], 3),
        "orientation": _floats(tags["orientation"], 6),
        "size": tuple(reader.GetSize()),
        "dimension": reader.GetDimension(),
        "spacing": tuple(reader.GetSpacing()),
        "components": reader.GetNumberOfComponents(),
    }


def _choose_series(folder: Path) -> tuple:
    """(series uid, file names, first header, info) of the CT series with most slices."""
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise _refuse(folder, "no DICOM series found")
    series = []
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        if files:
            series.append((uid, tuple(files), _dicom_header(files[0])))
    if not series:
        raise _refuse(folder, "no DICOM series found")
    listed = {os.path.abspath(f) for s in series for f in s[1]}
    unlisted = sum(1 for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and os.path.abspath(p) not in listed)
    ct = [s for s in series if s[2]["modality"] == "CT"]
    candidates = ct or series
    uid, files, first = max(candidates, key=lambda s: len(s[1]))  # first of equals wins
    choice = {"series_uid": uid, "n_slices": len(files),
              "description": first["description"], "modality": first["modality"],
              "other_series": len(series) - 1, "unreadable_files": unlisted}
    if len(series) > 1:
        log.info("%s: %d DICOM series; using %s (%d slices, %r, modality %s)",
                 folder, len(series), uid or "<no uid>", len(files),
                 first["description"], first["modality"] or "?")
    return uid, files, first, choice


def _sort_slices(folder: Path, headers: list, unreadable: int = 0) -> tuple:
    """Sort slice headers along the slice normal; refuse gaps and duplicates.

    ``unreadable`` (files of the folder in no series, e.g. truncated slices
    that GDCM skips) is mentioned when a slice is missing. Returns the sorted
    headers, the unit row, column and normal vectors, and the median gap (mm).
    """
    first = headers[0]
    for header in headers:
        if header["position"] is None:
            raise _refuse(header["file"], "no valid ImagePositionPatient (0020|0032)")
        if header["orientation"] is None:
            raise _refuse(header["file"], "no valid ImageOrientationPatient (0020|0037)")
        if header["size"][:2] != first["size"][:2]:
            raise _refuse(folder, f"slices of different sizes in one series "
                                  f"({_format_size(first['size'][:2])} and "
                                  f"{_format_size(header['size'][:2])})")
        if not np.allclose(header["orientation"], first["orientation"], atol=1e-4):
            raise _refuse(folder, "slices of different orientations in one series "
                                  f"({Path(first['file']).name} and {Path(header['file']).name})")
    row = np.asarray(first["orientation"][:3])
    col = np.asarray(first["orientation"][3:])
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    positions = np.array([h["position"] for h in headers])
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    headers = [headers[i] for i in order]
    heights, positions = heights[order], positions[order]
    gaps = np.diff(heights)

    def _between(index: int) -> str:
        return (f"between slice positions z={heights[index]:.2f} and "
                f"z={heights[index + 1]:.2f} mm")

    duplicates = np.flatnonzero(gaps < _GAP_TOL_MM)
    if duplicates.size:
        i = int(duplicates[0])
        raise _refuse(folder, f"duplicate slice position z={heights[i]:.2f} mm "
                              f"({Path(headers[i]['file']).name} and "
                              f"{Path(headers[i + 1]['file']).name})")
    median = float(np.median(gaps))
    tolerance = max(_GAP_TOL_MM, _GAP_TOL_REL * median)
    uneven = np.flatnonzero(np.abs(gaps - median) > tolerance)
    if uneven.size:
        i = int(uneven[0])
        gap = float(gaps[i])
        more = f" ({uneven.size - 1} more uneven gap(s))" if uneven.size > 1 else ""
        multiple = round(gap / median)
        kind = ("missing slice(s)"
                if multiple >= 2 and abs(gap - multiple * median) <= multiple * tolerance
                else "uneven slice spacing")
        if unreadable:
            more += (f"; {unreadable} file(s) in the folder are not in any readable "
                     "DICOM series (truncated or corrupt?)")
        raise _refuse(folder, f"{kind}: gap of {gap:.2f} mm {_between(i)} "
                              f"(expected {median:.2f} mm){more}")
    # Slices must be stacked along their normal: a gantry tilt shears the stack.
    offsets = positions - positions[0]
    drift = offsets - np.outer(heights - heights[0], normal)
    shear = float(np.linalg.norm(drift, axis=1).max())
    if shear > 0.5 * min(first["spacing"][:2]):
        raise _refuse(folder, f"slice positions drift {shear:.2f} mm within the slice plane "
                              "(gantry tilt?); resample the series to an orthogonal grid first")
    return headers, row, col, normal, median


def _read_dicom(folder: Path, max_voxels: float) -> Volume:
    uid, files, first, choice = _choose_series(folder)
    if len(files) == 1:
        if first["dimension"] == 3 and first["size"][2] > 1:  # multi-frame file
            volume = _read_file(Path(files[0]), "dicom", "GDCMImageIO", max_voxels)
            volume.source = str(folder)
            choice["n_slices"] = volume.info["n_slices"] = int(first["size"][2])
            volume.info["dicom_series"] = choice
            return volume
        raise _refuse(folder, f"the DICOM series {uid or '<no uid>'} has a single slice; "
                              "a 3-D CT series is needed")
    if first["dimension"] != 3 or first["size"][2] != 1:
        raise _refuse(folder, f"DICOM files of size {_format_size(first['size'])} in a "
                              "multi-file series (expected one slice per file)")
    rows_cols = first["size"][:2]
    _check_header(folder, (*rows_cols, len(files)), (*first["spacing"][:2], 1.0),
                  first["components"], max_voxels)
    headers = [first] + [_dicom_header(f) for f in files[1:]]
    headers, row, col, normal, gap = _sort_slices(folder, headers, choice["unreadable_files"])
    _check_header(folder, (*rows_cols, len(files)), (*first["spacing"][:2], gap),
                  first["components"], max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([h["file"] for h in headers])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise _refuse(folder, "could not be read (truncated or corrupt file?): "
                              + _itk_reason(error, folder)) from None
    if image.GetDimension() != 3 or image.GetSize()[2] != len(headers):
        raise _refuse(folder, f"the series read as an image of size "
                              f"{_format_size(image.GetSize())}, expected {len(headers)} slices")
    # ITK derives the slice axis from the first and last file; make sure it is
    # the sorted normal (right-handed), the median gap and the first position.
    fixed = []
    spacing = list(image.GetSpacing())
    if abs(spacing[2] - gap) > 1e-4:
        spacing[2] = gap
        image.SetSpacing(spacing)
        fixed.append("spacing")
    direction = np.column_stack([row, col, normal])
    if not np.allclose(np.asarray(image.GetDirection()).reshape(3, 3), direction, atol=1e-4):
        image.SetDirection(direction.ravel().tolist())
        fixed.append("direction")
    origin = headers[0]["position"]
    if not np.allclose(image.GetOrigin(), origin, atol=1e-3):
        image.SetOrigin(origin)
        fixed.append("origin")
    info = {"format": "dicom", "n_slices": len(headers), "dicom_series": choice}
    if fixed:
        info["dicom_geometry_fixed"] = fixed
    pixels = _pixels(image)
    del image
    return _to_volume(folder, *pixels, info)


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
        ``clipped_padding_voxels`` and, for DICOM, ``n_slices`` and
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
        ``max_voxels``, has non-positive or non-finite spacing, more than one
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
    ``info["clipped_padding_voxels"]``.

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


def _sitk_write(image, tmp: Path, path: Path, compress: bool) -> None:
    try:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    except RuntimeError as error:
        raise OutputError(path, f"could not be written: {_itk_reason(error, tmp)}") from None


def _write_detached(image, path: Path, compress: bool) -> None:
    """Write a header + data pair (.mhd/.nhdr) in a temporary folder, then move it.

    The data file moves first and the header last, so the header only appears
    once its data is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp_dir.mkdir()
    try:
        _sitk_write(image, tmp_dir / path.name, path, compress)
        for part in sorted(tmp_dir.iterdir()):
            if part.name != path.name:
                os.replace(part, path.parent / part.name)
        os.replace(tmp_dir / path.name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp_dir)


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
