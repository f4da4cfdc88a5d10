"""One case through the whole pipeline: load, stages, write outputs.

Each stage is a plain function of arrays and parameters, timed here. Outputs
are written only after every stage succeeded, each file atomically, so a
failing case leaves no partial output behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import labels as schema
from ._atomic import atomic_paths, check_writable
from ._version import __version__
from .config import Config, config_hash
from .device import resolve_device
from .errors import InputError
from .io import load_ct, save_labels
from .qc import save_slices_png
from .volume import Volume

__all__ = ["CaseResult", "case_id_for", "unique_case_ids", "safe_case_id", "segment_volume", "qc_points", "run_case"]

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class CaseResult:
    """What :func:`run_case` produced for one input."""

    case_id: str
    labels: np.ndarray  # canonical (R, A, S) uint8 label map, on the host
    measurements: dict
    outputs: dict = field(default_factory=dict)  # name -> Path


@contextmanager
def _timed(timings: dict, stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - start, 4)


def safe_case_id(name: str) -> str:
    """``name`` as a plain folder name: runs of characters other than letters, digits, ``.``,
    ``_`` and ``-`` become ``_``; leading and trailing dots and underscores go (no ``..``, no hidden
    folder); an empty result is ``case``."""
    return _UNSAFE_ID.sub("_", str(name)).strip("._") or "case"


def case_id_for(path) -> str:
    """A case id from an input path: the file name without its image suffix, made safe.

    Generic names (``ct.nii.gz``, ``image.nii.gz``) take their folder's name,
    which is how phantom and many public datasets lay out cases; the path is
    normalised first, so ``sub/../ct.nii.gz`` takes the name of the folder it
    really lies in, never ``..``. The id is :func:`safe_case_id`: a case's
    outputs always lie inside the output folder.
    """
    path = Path(os.path.abspath(path))
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower() in ("ct", "image", "img", "volume", "scan") and path.parent.name:
        name = path.parent.name
    return safe_case_id(name)


def unique_case_ids(paths, taken=()) -> list:
    """A file-system-safe case id per path, made unique against ``taken`` and each other.

    The id is :func:`case_id_for` of the path (already safe); a repeated id gets ``-2``, ``-3``...
    in order (``x/a/ct.nii.gz`` and ``y/a/ct.nii.gz`` become ``a`` and ``a-2``), so no two inputs
    write into the same folder.
    """
    used = set(taken)
    ids = []
    for path in paths:
        base = case_id_for(path)
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}-{n}"
        used.add(candidate)
        ids.append(candidate)
    return ids


def segment_volume(volume: Volume, config: Config, device: str, timings: dict) -> tuple:
    """Run bone extraction and hip segmentation on a loaded volume.

    Returns the canonical label map (host, uint8, schema v1) and the
    per-stage measurements (``bone``, ``sides``, ``afs``).
    """
    from .afs import segment_hips
    from .bone import extract_bone
    from .device import to_device

    on_device = volume.with_array(to_device(volume.array, device))
    with _timed(timings, "bone"):
        bone = extract_bone(on_device, config)
    diagnostics = bone.diagnostics
    summary = {key: diagnostics[key]
               for key in ("bone_ml", "graph_nodes", "reduction_passes", "cut_energy", "coarse_to_fine", "timings_s")
               if key in diagnostics}
    summary["warnings"] = list(diagnostics.get("warnings", []))
    with _timed(timings, "afs"):
        labels, hips = segment_hips(on_device, bone.mask, config)
    return labels, {"bone": summary, **hips}


def qc_points(volume: Volume, sides: dict) -> tuple:
    """Slice positions and circles for ``qc.png``: one row per fitted head, else the volume's centre."""
    points, circles = {}, {}
    for side, found in sides.items():
        centre = found.get("head_center_mm")
        if centre is None:
            continue
        index = volume.ras_to_index([centre])[0]
        points[f"{side} hip ({found['status']})"] = index
        rings = [(index, found["head_radius_mm"], "yellow")]
        if found.get("acetabulum_radius_mm"):
            socket = found.get("acetabulum_center_mm") or centre
            rings.append((volume.ras_to_index([socket])[0], found["acetabulum_radius_mm"], "cyan"))
        circles[f"{side} hip ({found['status']})"] = rings
    if not points:
        points["volume centre (no hip found)"] = (np.asarray(volume.shape) - 1) / 2.0
    return points, circles


def _measurements(volume: Volume, config: Config, device: str, stage_results: dict, timings: dict) -> dict:
    return {
        "version": __version__,
        "label_schema": schema.SCHEMA_VERSION,
        "config_hash": config_hash(config),
        "device": device,
        "input": {"size": list(volume.original.size), "spacing_mm": list(volume.original.spacing),
                  "format": volume.info.get("format", "")},
        **stage_results,
        "timings_s": timings,
    }


def run_case(path, out_dir, *, config: Config | None = None, device: str = "auto",
             case_id: str | None = None, input_hash: str | None = None) -> CaseResult:
    """Segment one CT and write ``labels.nii.gz``, ``qc.png`` and ``measurements.json``.

    Parameters
    ----------
    path : str or Path
        A NIfTI/NRRD/MHA file or a DICOM series folder.
    out_dir : str or Path
        Outputs go to ``out_dir/<case_id>/``; nothing is created there if the
        input is refused.
    config : Config, optional
        Defaults when omitted.
    device : {"auto", "cpu", "gpu"}
    case_id : str, optional
        Defaults to :func:`case_id_for` of the input.
    input_hash : str, optional
        Content hash of the input, recorded as ``input.sha256`` in the measurements.

    Raises
    ------
    thagpu.errors.InputError
        The input is not a usable CT (the message names it and why).
    thagpu.errors.DeviceError
        ``device="gpu"`` and no GPU is usable.
    """
    config = config or Config()
    device = resolve_device(device)
    if case_id is not None and case_id != safe_case_id(case_id):
        # A given id names a folder inside out_dir: nothing that could climb out of it or hide.
        raise InputError(case_id, "a case id must be a plain folder name (letters, digits, '.', '_', '-'; "
                                  "not starting or ending with '.' or '_')")
    case_id = case_id or case_id_for(path)
    folder = Path(out_dir) / case_id
    outputs = {"labels": folder / "labels.nii.gz", "qc": folder / "qc.png",
               "measurements": folder / "measurements.json"}
    for output in outputs.values():  # before any work: a folder that cannot take them fails now
        check_writable(output)
    timings: dict = {}
    with _timed(timings, "load"):
        volume = load_ct(path, max_voxels=config.io.max_voxels)
    labels, stage_results = segment_volume(volume, config, device, timings)
    # The three files are renamed into place only once all three are written: a failure while
    # writing leaves the case's previous outputs as they were, never new labels beside old
    # measurements. "write" times the label image and the QC picture; measurements.json (a few
    # kilobytes, holding the timings) is written last.
    with atomic_paths(outputs.values()) as (labels_tmp, qc_tmp, measurements_tmp):
        with _timed(timings, "write"):
            save_labels(labels, volume, labels_tmp)
            points, circles = qc_points(volume, stage_results.get("sides", {}))
            save_slices_png(qc_tmp, volume.array, labels, volume.spacing, points, circles=circles,
                            title=f"{case_id}: labels and fitted spheres (head yellow, socket cyan)")
        measurements = _measurements(volume, config, device, stage_results, timings)
        if input_hash:
            measurements["input"]["sha256"] = input_hash
        measurements_tmp.write_text(json.dumps(measurements, indent=2) + "\n", encoding="utf-8")
    return CaseResult(case_id=case_id, labels=labels, measurements=measurements, outputs=outputs)
