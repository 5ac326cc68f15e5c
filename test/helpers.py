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


def frozen_quant_linear(w_bits: int, a_bits: int, transform: str, in_features: int = 64, out_features: int = 48):
    """A frozen QuantLinear with per-token activations and no transform ("none") or DSFQ's (random Hadamard
    + channel smoothing, "dsfq"), seeded."""
    from torch import nn

    from vggt_quant_core.quant import QuantLinear, QuantSpec
    from vggt_quant_core.quant.transforms import ChannelScale, InputTransform, RandomHadamard

    torch.manual_seed(0)
    steps = {"none": [], "dsfq": [RandomHadamard(in_features, 2), ChannelScale(in_features)]}[transform]
    layer = QuantLinear.from_linear(nn.Linear(in_features, out_features), InputTransform(steps), QuantSpec(w_bits),
                                    QuantSpec(a_bits, granularity="per_token"))
    if transform == "dsfq":
        layer.transform.steps[1].set_scale(torch.rand(in_features) + 0.5)
    layer.freeze()
    return layer
