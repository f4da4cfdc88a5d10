"""Shared test fixtures."""

from pathlib import Path

import pytest

#: Real test data kept with the tests, so any clean clone runs the whole suite.
DATA = Path(__file__).resolve().parent / "data"


def pytest_configure(config):
    # As the thagpu command does (thagpu.memory): without NumPy's huge-page advice, whose page faults
    # wait for the kernel to compact memory on machines set to defrag=madvise (a third of the suite's
    # time here went to the kernel).
    from thagpu.memory import no_numpy_huge_pages
    no_numpy_huge_pages()


@pytest.fixture(scope="session")
def abdomen_dicom() -> Path:
    """The real abdominal DICOM series (no hip in view); see tests/data/README.md."""
    return DATA / "dicom-abdomen"


def build_tiny_dataset(root: Path, first_seed: int, n: int = 4) -> Path:
    """``n`` tiny hard phantoms under ``root/in`` built into ``root/built`` (2 local workers); returns it."""
    from thagpu.dataset import build_dataset
    from thagpu.phantom import make_phantom, write_phantom

    for i in range(n):
        write_phantom(make_phantom(first_seed + i, size="tiny", preset="hard"), root / "in")
    build_dataset(root / "in", root / "built", workers=2, device="cpu")
    return root / "built"
