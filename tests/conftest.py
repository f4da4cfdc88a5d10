"""Shared test fixtures."""

from pathlib import Path

import pytest

#: Real test data kept with the tests, so any clean clone runs the whole suite.
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def abdomen_dicom() -> Path:
    """The real abdominal DICOM series (no hip in view); see tests/data/README.md."""
    return DATA / "dicom-abdomen"
