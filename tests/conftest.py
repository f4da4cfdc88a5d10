"""Shared test helpers."""

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """``../shared/data`` of the checkout, or ``$THAGPU_SHARED_DATA`` (clean clones elsewhere)."""
    root = os.environ.get("THAGPU_SHARED_DATA")
    return Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def abdomen_dicom() -> Path:
    """The real abdominal DICOM series (no hip in view)."""
    return shared_data_dir() / "dicom-abdomen"
