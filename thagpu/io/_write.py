"""Writing internals: host copies of device arrays, SimpleITK writes whose
errors are one line, and header + data pairs (``.mhd``, ``.nhdr``) moved into
place data first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from ._lazy import sitk

from ..errors import OutputError
from ._checks import _itk_reason


def _as_numpy(array) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array."""
    if hasattr(array, "get") and not isinstance(array, np.ndarray):
        array = array.get()
    return np.asarray(array)


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
