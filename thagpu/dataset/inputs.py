"""Finding the CT inputs of a dataset build and fingerprinting their content.

An input is an image file (NIfTI, NRRD, MetaImage) or a folder that directly
holds DICOM files (one series folder). ``discover_inputs`` takes a folder,
searched recursively, or a manifest (CSV with a ``path`` column, or JSON: a
list of paths or of objects with ``path``); relative manifest paths are taken
from the manifest's folder.

Label maps that sit beside the images (phantom ``gt.nii.gz``, earlier
``labels.nii.gz`` outputs, ``*_seg``/``*_mask``/``*_label`` files) are not CT
and are left out of a folder search; a manifest is taken as given.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, describe
from ..io import SUPPORTED_SUFFIXES
from ..pipeline import unique_case_ids

__all__ = ["CaseInput", "discover_inputs", "label_files_by_case", "input_signature", "content_hash", "unique_case_ids"]

#: Stems (lower case) of files that are label maps, not CT.
_LABEL_STEMS = {"gt", "label", "labels", "seg", "segmentation", "mask", "truth"}
_LABEL_SUFFIXES = ("_gt", "_seg", "_label", "_labels", "_mask", "_segmentation")
#: Detached-header data files: read through their header, never on their own.
_DATA_ONLY = (".raw", ".zraw", ".raw.gz")
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class CaseInput:
    """One input of a build: where it is and what it contains."""

    path: Path
    #: Size and modification time of every file that makes it (cheap change test).
    signature: str


def _image_stem(name: str) -> str | None:
    """The file name without its image suffix (case kept), or None for a non-image file."""
    lower = name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def label_files_by_case(folder) -> dict:
    """case_id -> label file in ``folder``: ``<case_id>.nii.gz`` (any image suffix) or ``<case_id>/labels.nii.gz``."""
    found = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_dir() and (path / "labels.nii.gz").is_file():
            found[path.name] = path / "labels.nii.gz"
        elif path.is_file() and not path.name.startswith("."):
            stem = _image_stem(path.name)
            if stem:
                found[stem] = path
    return found


def _is_label_name(stem: str) -> bool:
    return stem in _LABEL_STEMS or stem.endswith(_LABEL_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _files_of(path: Path) -> list:
    """The files whose content makes the input (the image, its detached data, or the series)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [path]
    if path.suffix.lower() in (".mhd", ".nhdr"):
        data = _detached_data_file(path)
        if data is not None and data.is_file():
            files.append(data)
    return files


def _detached_data_file(header: Path):
    """The data file a ``.mhd`` (``ElementDataFile = ...``) or ``.nhdr`` (``data file: ...``) header names."""
    try:
        text = header.read_text(encoding="latin-1", errors="replace")
    except OSError:
        return None
    pattern = r"^\s*ElementDataFile\s*=\s*(.+?)\s*$" if header.suffix.lower() == ".mhd" \
        else r"^\s*data ?file\s*:\s*(.+?)\s*$"
    match = re.search(pattern, text, flags=re.IGNORECASE | re.MULTILINE)
    if match is None or match.group(1).upper() in ("LOCAL", "LIST") or match.group(1).startswith("LIST"):
        return None
    return header.parent / match.group(1)


def input_signature(path) -> str:
    """``size:mtime_ns`` of each file of an input, joined: changes when any file is rewritten."""
    parts = []
    for file in _files_of(Path(path)):
        stat = file.stat()
        parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def content_hash(path) -> str:
    """SHA-256 of an input's content (for a DICOM folder: each file's name and bytes, in name order)."""
    digest = hashlib.sha256()
    for file in _files_of(Path(path)):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _search_folder(root: Path) -> list:
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        folder = Path(folder)
        dicom = False
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem = _image_stem(name)
            if stem is not None:
                if not _is_label_name(stem.lower()):
                    found.append(folder / name)
            elif not name.lower().endswith(_DATA_ONLY) and not dicom and _is_dicom_file(folder / name):
                dicom = True
        if dicom:
            found.append(folder)
    return found


def _read_manifest(path: Path) -> list:
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if rows and "path" not in rows[0]:
                raise InputError(path, "manifest CSV needs a 'path' column")
            entries = [row["path"] for row in rows]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                data = data.get("cases", data.get("inputs"))
            if not isinstance(data, list):
                raise InputError(path, "manifest JSON must be a list of paths or of {\"path\": ...} objects")
            entries = [item["path"] if isinstance(item, dict) else item for item in data]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, csv.Error) as error:
        raise InputError(path, f"cannot read manifest: {describe(error)}") from None
    paths = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise InputError(path, f"manifest entry {entry!r} is not a path")
        entry_path = Path(entry.strip())
        paths.append(entry_path if entry_path.is_absolute() else path.parent / entry_path)
    return paths


def discover_inputs(source) -> list:
    """Inputs of a build, in a stable order.

    Parameters
    ----------
    source : str or Path
        A folder (searched recursively) or a manifest (``.csv`` with a
        ``path`` column, ``.json`` list).

    Returns
    -------
    list of CaseInput
        Absolute paths with their signatures. Paths in a manifest that do not
        exist are kept: the build records them as failed, with the reason.

    Raises
    ------
    InputError
        ``source`` does not exist, is an unreadable manifest, or holds no input.
    """
    source = Path(source)
    if source.is_dir():
        paths = _search_folder(source)
    elif source.is_file() and source.suffix.lower() in (".csv", ".json"):
        paths = _read_manifest(source)
    elif source.exists():
        raise InputError(source, "INPUT must be a folder or a .csv/.json manifest")
    else:
        raise InputError(source, "no such folder or manifest")
    if not paths:
        raise InputError(source, "no CT input found (NIfTI/NRRD/MHA files or DICOM series folders)")
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    inputs = []
    for path in unique:
        try:
            signature = input_signature(path)
        except OSError:
            signature = "missing"
        inputs.append(CaseInput(path=path, signature=signature))
    return inputs


