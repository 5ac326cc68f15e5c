"""Session fixtures; golden data is read from ../shared beside the repository (never copied)."""

import os

import pytest

from helpers import GOLDEN, load_pt, require

# Quantized layers run eagerly in the suite: torch.compile costs seconds per shape; the compiled
# element-wise passes are tested explicitly (test/core/kernels/test_int_mm.py).
os.environ.setdefault("VGGTQ_COMPILE", "0")


@pytest.fixture(scope="session")
def golden_dir():
    return require(GOLDEN)


@pytest.fixture(scope="session")
def units(golden_dir):
    return load_pt(golden_dir / "units" / "units.pt")
