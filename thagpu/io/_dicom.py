"""Reading a DICOM series from a folder.

Series discovery (the CT series with the most slices), per-file header
reading, sorting the slices along their normal, refusing duplicated, missing,
unevenly spaced or sheared slices, and reading the series into a Volume.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
from ._lazy import sitk

from ..volume import Volume
from ._checks import _check_header, _format_size, _refuse
from ._files import _itk_read, _open_reader, _pixels, _read_file, _to_volume
from ._native import native_stderr

log = logging.getLogger("thagpu.io")

#: Slice gaps may differ from the median gap by this much (the larger of the two).
_GAP_TOL_MM = 0.01
_GAP_TOL_REL = 0.01

_DICOM_TAGS = {
    "modality": "0008|0060",
    "description": "0008|103e",
    "position": "0020|0032",
    "orientation": "0020|0037",
}


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
    with native_stderr([]):
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise _refuse(folder, "no DICOM series found")
    series = []
    for uid in uids:
        with native_stderr([]):
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
    image = _itk_read(folder, reader.Execute)
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
