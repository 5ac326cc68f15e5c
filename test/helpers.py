"""Helpers shared by the tests (importable as ``helpers``; see pytest.ini ``pythonpath``)."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VGGT_QUANT_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "fixtures" / "vggt_golden"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the golden fixtures live in ../shared beside the repository "
                    "(or set VGGT_QUANT_SHARED)")
    return path


def load_pt(path: Path):
    return torch.load(require(path), weights_only=True)


def rel_to_max(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """max|actual - reference| / max|reference| (the fixtures' pass criterion)."""
    actual, reference = torch.as_tensor(actual).double(), torch.as_tensor(reference).double()
    assert actual.shape == reference.shape, (tuple(actual.shape), tuple(reference.shape))
    return ((actual - reference).abs().max() / reference.abs().max()).item()
