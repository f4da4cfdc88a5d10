"""Checks that ``load_ct`` makes, and the one-line messages it refuses with.

Header checks (size, voxel limit, spacing, components) run before any pixel
is read; the NIfTI data scan catches what ITK's NIfTI reader lets through
(truncated files, NaN or infinite floats); the value check applies the
plausible-CT rule and clips scanner padding.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Plausible-CT rule (see ``load_ct``).
AIR_HU = -900.0
AIR_MIN_FRACTION = 0.001
FAT_HU = -50.0
FAT_MIN_FRACTION = 0.01
CT_RANGE_HU = (-1100.0, 4000.0)
#: Values below this (scanner padding outside the reconstruction circle) are clipped to it.
PADDING_FLOOR_HU = -1024.0
#: Values above this are clipped to it: no scanner's scale goes higher (the extended 16-bit CT scale
#: ends near it), and a corrupt voxel of 1e30 would overflow float32 in a local variance.
CEILING_HU = 65535.0
#: Voxels smaller than this are refused: no clinical CT resolves them, and a header in metres (or a
#: corrupt one) would make every millimetre-sized step span thousands of voxels.
MIN_SPACING_MM = 0.05

_CHUNK = 1 << 24  # voxels per block when scanning values


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------

#: How every refusal of a file that ITK or the integrity scans could not read begins.
UNREADABLE = "could not be read (truncated or corrupt file?): "

def _refuse(path, reason: str) -> InputError:
    """An InputError whose message is one line."""
    return InputError(path, " ".join(str(reason).split()))


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
    shown = ", ".join(f"{s:g}" for s in spacing)
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise _refuse(path, f"voxel spacing ({shown}) mm is not finite and positive")
    if min(spacing) < MIN_SPACING_MM:
        raise _refuse(path, f"voxel spacing ({shown}) mm is below {MIN_SPACING_MM:g} mm: not a clinical CT "
                            "(a header in metres?)")
    if components != 1:
        raise _refuse(path, f"{components} components per pixel (colour or vector image); "
                            "a CT has one value per voxel")


# --------------------------------------------------------------------------
# NIfTI data
# --------------------------------------------------------------------------

#: NIfTI datatype code -> NumPy type, for the float types whose values are scanned.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes):
    """(byte order, datatype, bitpix, data offset, voxel count, pixdim[1:4]) of a NIfTI-1/2 header, or None."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack_from(endian + "i", header, 0)[0] == 348:
            dim = struct.unpack_from(endian + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 70)
            pixdim = struct.unpack_from(endian + "8f", header, 76)
            offset = max(int(struct.unpack_from(endian + "f", header, 108)[0]), 352)
            break
        if len(header) >= 540 and struct.unpack_from(endian + "i", header, 0)[0] == 540:
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 12)
            dim = struct.unpack_from(endian + "8q", header, 16)
            pixdim = struct.unpack_from(endian + "8d", header, 104)
            offset = max(int(struct.unpack_from(endian + "q", header, 168)[0]), 544)
            break
    else:
        return None
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    n_voxels = math.prod(max(int(n), 1) for n in dim[1:ndim + 1])
    return endian, int(datatype), int(bitpix), offset, n_voxels, tuple(float(p) for p in pixdim[1:4])


def _quaternion_rotation(b: float, c: float, d: float, qfac: float) -> np.ndarray:
    """The NIfTI-1 qform's rotation (columns: the array axes' directions), ``qfac`` flipping the third."""
    a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    rotation[:, 2] *= -1.0 if qfac < 0 else 1.0
    return rotation


def _nifti_transform_disagreement(header: bytes, endian: str) -> str:
    """Why a NIfTI-1 header's sform cannot be trusted as ITK reads it, or ``""``.

    ITK takes the voxel size from pixdim and, where the sform is sheared, the geometry from the
    qform; other readers (nibabel, most viewers) take the sform. Where the two disagree the same file
    means different places to different tools, and millimetre measurements would silently be wrong:
    a sform whose voxel size differs from pixdim by more than 1 %, a sheared sform (axes more than
    0.5 deg from perpendicular), or a qform whose orientation (0.5 deg) or origin (half a voxel)
    differs from the sform's is refused. NIfTI-2 headers are not checked.
    """
    if len(header) < 348 or struct.unpack_from(endian + "i", header, 0)[0] != 348:
        return ""
    qform_code, sform_code = struct.unpack_from(endian + "2h", header, 252)
    if sform_code <= 0:
        return ""
    pixdim = struct.unpack_from(endian + "4f", header, 76)
    srow = np.array(struct.unpack_from(endian + "12f", header, 280), dtype=float).reshape(3, 4)
    if not np.all(np.isfinite(srow)):
        return "its sform holds non-finite values"
    matrix = srow[:, :3]
    sizes = np.linalg.norm(matrix, axis=0)
    if np.any(sizes <= 0):
        return "its sform maps an array axis to no direction"
    directions = matrix / sizes
    skew = np.degrees(np.arcsin(np.clip(np.abs(directions.T @ directions - np.eye(3)).max(), 0.0, 1.0)))
    if skew > 0.5:
        return (f"its sform is sheared (array axes {skew:.1f} deg from perpendicular: a gantry tilt?); "
                "resample it onto a rectangular grid first")
    stated = np.abs(np.array(pixdim[1:4], dtype=float))
    if np.any(np.abs(sizes / stated - 1.0) > 0.01):
        return (f"its sform gives voxels of ({', '.join(f'{v:.4g}' for v in sizes)}) mm but its pixdim "
                f"({', '.join(f'{v:.4g}' for v in stated)}) mm, which ITK reads: the header disagrees with itself")
    if qform_code > 0:
        b, c, d = struct.unpack_from(endian + "3f", header, 256)
        rotation = _quaternion_rotation(b, c, d, pixdim[0])
        relative = rotation.T @ directions
        angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)))
        if angle > 0.5 or np.linalg.det(relative) < 0:
            return (f"its qform and sform orient the image {angle:.1f} deg apart"
                    f"{' and mirrored' if np.linalg.det(relative) < 0 else ''}; readers differ in which they "
                    "take, so fix the header")
        origin_gap = float(np.linalg.norm(np.array(struct.unpack_from(endian + "3f", header, 268)) - srow[:, 3]))
        if origin_gap > 0.5 * float(sizes.min()):
            return (f"its qform and sform place the image {origin_gap:.1f} mm apart; readers differ in which "
                    "they take, so fix the header")
    return ""


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
    try:
        with _open_maybe_gzip(path, compressed) as handle:
            header = handle.read(544)
        layout = _nifti_layout(header)
        if layout is None:
            return  # ITK accepted the header; nothing more to check here
        endian, datatype, bitpix, offset, count, pixdim = layout
        if not all(math.isfinite(p) and p != 0 for p in pixdim):
            # niftilib reads a voxel size of 0 or NaN as 1 mm, and ITK passes that on: refuse it here.
            shown = ", ".join(f"{p:g}" for p in pixdim)
            raise _refuse(path, f"voxel size in the header (pixdim {shown}) is not finite and non-zero")
        disagreement = _nifti_transform_disagreement(header, endian)
        if disagreement:
            raise _refuse(path, disagreement)
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
        raise _refuse(path, f"{UNREADABLE}gzip: {error}") from None
    if actual < expected:
        raise _refuse(path, f"{UNREADABLE}data ends after {actual} of {expected} bytes")
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
    n_air = n_fat = n_padding = n_high = 0
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
        n_high += int(np.count_nonzero(block > CEILING_HU))
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
    if n_padding or n_high:
        for start in range(0, n, _CHUNK):
            block = flat[start:start + _CHUNK]
            np.clip(block, PADDING_FLOOR_HU, CEILING_HU, out=block)
    return {"hu_range": [vmin, vmax], "clipped_padding_voxels": n_padding, "clipped_high_voxels": n_high}
