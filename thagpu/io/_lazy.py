"""SimpleITK, imported on first use.

``import thagpu`` then works where SimpleITK is absent (a GPU worker that only
computes on arrays, a machine the wheel was not carried to); reading or
writing a file still needs it and fails there with SimpleITK's ImportError.
"""

from __future__ import annotations

import importlib

__all__ = ["sitk"]


class _LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


sitk = _LazyModule("SimpleITK")
