"""Session fixtures; golden data is read from ../shared beside the repository (never copied)."""

import pytest

from helpers import GOLDEN, load_pt, require


@pytest.fixture(scope="session")
def golden_dir():
    return require(GOLDEN)


@pytest.fixture(scope="session")
def units(golden_dir):
    return load_pt(golden_dir / "units" / "units.pt")
