"""Deferred epilogues: ``residual + gamma * layer(x)`` fused into one pass equals the separate ops, and every
other use of a deferred output gets exactly the tensor the layer would have returned."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vggt_quant_core.kernels.amx_int8 import PendingLinear
from vggt_quant_core.kernels.deferred import DeferredOutput, PendingEpilogue
from vggt_quant_core.model import VGGT
from vggt_quant_core.presets import get_preset
from vggt_quant_core.quant import QuantConfig, QuantLinear, QuantSpec, fuse_residual_epilogues, quantize
from vggt_quant_core.quant.transforms import InputTransform

BACKENDS = ["cpu-int8", "cpu-amx-int8", "cpu-amx-int8-fused"]


def _layer(backend):
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(nn.Linear(64, 48), InputTransform([]), QuantSpec(8),
                                    QuantSpec(8, granularity="per_token"))
    layer.freeze()
    layer.backend = backend
    return layer


def _pair(backend):
    plain = _layer(backend)
    deferred = copy.deepcopy(plain)
    deferred.defer_epilogue = True
    try:
        with torch.no_grad():
            plain(torch.randn(2, 64))
    except ValueError as error:  # this CPU cannot run the backend (e.g. no AMX)
        pytest.skip(str(error))
    return plain, deferred


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_scaled_residual_add_is_fused_and_equals_the_separate_ops(backend, dtype):
    plain, deferred = _pair(backend)
    x, residual, gamma = torch.randn(3, 5, 64), torch.randn(3, 5, 48), torch.rand(48) / 10
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        expected = residual + plain(x) * gamma
        out = deferred(x)
        assert isinstance(out, DeferredOutput)
        fused = residual + out * gamma
        swapped = deferred(x) * gamma + residual
        unscaled = residual + deferred(x)
        expected_unscaled = residual + plain(x)
    for actual, truth in ((fused, expected), (swapped, expected), (unscaled, expected_unscaled)):
        assert isinstance(actual, torch.Tensor) and actual.dtype == truth.dtype == torch.float32
        assert torch.allclose(actual, truth, rtol=1e-6, atol=1e-6 * truth.abs().max())  # an FMA at most


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_other_use_gets_the_plain_output(backend):
    plain, deferred = _pair(backend)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        y, other = plain(x), torch.rand(5, 48)
        uses = [lambda out: out.reshape(15, 48), lambda out: F.gelu(out), lambda out: out[:, 1], lambda out: -out,
                lambda out: out - 1, lambda out: torch.cat([out, out]), lambda out: out.shape,
                lambda out: out * other, lambda out: out + torch.ones(48),  # not a [N] scale / residual
                lambda out: (out * torch.full((48,), 2.0)) * 3]
        for use in uses:
            expected = use(y)
            actual = use(deferred(x))
            assert (actual == expected) if isinstance(expected, torch.Size) else torch.equal(actual, expected)


def test_backends_without_a_separate_epilogue_return_tensors():
    layer = _layer("reference")
    layer.defer_epilogue = True
    with torch.no_grad():
        assert isinstance(layer(torch.randn(4, 64)), torch.Tensor)


def test_a_quantized_vggt_with_fused_residual_epilogues_gives_the_same_outputs(monkeypatch, int_mm_as_with_vnni):
    torch.manual_seed(0)
    model = quantize(VGGT(get_preset("vggt-tiny-random").config).eval(), QuantConfig(method="rtn"),
                     log_fn=lambda message: None)
    fused = copy.deepcopy(model)
    assert fuse_residual_epilogues(fused) == 2 * 2 * len(model.aggregator.frame_blocks)  # proj, fc2 per block
    images = torch.rand(1, 2, 3, 28, 42)
    fused_adds = []
    for pending in (PendingEpilogue, PendingLinear):  # the separate epilogue, or the fused AMX kernel's
        monkeypatch.setattr(pending, "finish_residual", lambda self, *args, original=pending.finish_residual:
                            fused_adds.append(1) or original(self, *args))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, _ = model.aggregator(images)
        assert not fused_adds
        actual, _ = fused.aggregator(images)
    assert len(fused_adds) == 2 * 2 * len(model.aggregator.frame_blocks)  # every residual add was fused
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, rtol=1e-5, atol=1e-5 * e.abs().max())
