"""One case through the whole pipeline: load, stages, write outputs.

Each stage is a plain function of arrays and parameters, timed here. Outputs
are written only after every stage succeeded, each file atomically, so a
failing case leaves no partial output behind.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import labels as schema
from ._atomic import atomic_write_text
from ._version import __version__
from .config import Config, config_hash
from .device import resolve_device
from .io import load_ct, save_labels
from .volume import Volume

__all__ = ["CaseResult", "case_id_for", "segment_volume", "run_case"]


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


def case_id_for(path) -> str:
    """A case id from an input path: the file name without its image suffix.

    Generic names (``ct.nii.gz``, ``image.nii.gz``) take their folder's name,
    which is how phantom and many public datasets lay out cases.
    """
    path = Path(path)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower() in ("ct", "image", "img", "volume", "scan") and path.parent.name:
        name = path.parent.name
    return name


def segment_volume(volume: Volume, config: Config, device: str, timings: dict) -> tuple:
    """Run the segmentation stages that exist on a loaded volume.

    Returns the canonical label map (host, uint8) and the per-stage
    measurements. Bone extraction gives every bone voxel label 5
    (``other_bone``); the acetabulum and femoral head segmentation (next
    stage) relabels the hips.
    """
    from .bone import extract_bone
    from .device import to_device, to_host

    on_device = volume.with_array(to_device(volume.array, device))
    with _timed(timings, "bone"):
        bone = extract_bone(on_device, config)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[to_host(bone.mask)] = schema.OTHER_BONE
    diagnostics = bone.diagnostics
    summary = {key: diagnostics[key] for key in ("bone_ml", "graph_nodes", "reduction_passes", "cut_energy")
               if key in diagnostics}
    summary["warnings"] = list(diagnostics.get("warnings", []))
    return labels, {"bone": summary, "sides": {}}


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
             case_id: str | None = None) -> CaseResult:
    """Segment one CT and write ``labels.nii.gz`` and ``measurements.json``.

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

    Raises
    ------
    thagpu.errors.InputError
        The input is not a usable CT (the message names it and why).
    thagpu.errors.DeviceError
        ``device="gpu"`` and no GPU is usable.
    """
    config = config or Config()
    device = resolve_device(device)
    case_id = case_id or case_id_for(path)
    timings: dict = {}
    with _timed(timings, "load"):
        volume = load_ct(path, max_voxels=config.io.max_voxels)
    labels, stage_results = segment_volume(volume, config, device, timings)
    folder = Path(out_dir) / case_id
    outputs = {"labels": folder / "labels.nii.gz", "measurements": folder / "measurements.json"}
    # "write" times the label image; measurements.json, a few hundred bytes, is written once, last.
    with _timed(timings, "write"):
        save_labels(labels, volume, outputs["labels"])
    measurements = _measurements(volume, config, device, stage_results, timings)
    atomic_write_text(outputs["measurements"], json.dumps(measurements, indent=2) + "\n")
    return CaseResult(case_id=case_id, labels=labels, measurements=measurements, outputs=outputs)
