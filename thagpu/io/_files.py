"""Reading one image file (NIfTI, NRRD, MetaImage, or a multi-frame DICOM file).

The header is read and checked first; the pixels only then, and they are
validated as HU before the :class:`~thagpu.volume.Volume` is built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ._lazy import sitk
from ._native import native_note, native_stderr

from ..geometry import Geometry
from ..volume import Volume
from ._checks import (
    UNREADABLE, _check_header, _check_nifti_data, _format_size, _itk_reason, _refuse, _validate_values,
)


def _itk_read(path, read):
    """``read()``, an ITK read of ``path``, or the one-line refusal naming ``path`` when it fails.

    The refusal holds ITK's reason and what the native libraries below it printed meanwhile
    (:func:`thagpu.io._native.native_stderr`), which would otherwise precede it on the terminal.
    """
    said = []
    try:
        with native_stderr(said):
            return read()
    except RuntimeError as error:
        raise _refuse(path, UNREADABLE + _itk_reason(error, path) + native_note(said)) from None


def _open_reader(path: Path, io_name: str) -> sitk.ImageFileReader:
    """An ImageFileReader of ``path`` that has read the header only."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io_name)
    reader.SetFileName(str(path))
    _itk_read(path, reader.ReadImageInformation)
    return reader


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
    image = _itk_read(path, reader.Execute)
    pixels = _pixels(image)
    del image
    return _to_volume(path, *pixels, {"format": fmt})
