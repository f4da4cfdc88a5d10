"""thagpu: hip CT to a THA-planning segmentation dataset, on CPU or GPU.

Public API::

    from thagpu import load_ct, save_labels, extract_bone, segment_hips, run_case, phantom
"""

from . import phantom
from ._version import __version__
from .afs import segment_hips
from .bone import extract_bone
from .config import Config, load_config
from .errors import DeviceError, InputError, OutputError, ThagpuError
from .io import load_ct, save_labels
from .pipeline import run_case
from .volume import Volume

__all__ = [
    "__version__", "load_ct", "save_labels", "extract_bone", "segment_hips", "run_case", "phantom", "Volume", "Config",
    "load_config", "ThagpuError", "InputError", "OutputError", "DeviceError",
]
