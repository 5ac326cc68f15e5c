"""Quantizer invariants: grids, error bounds, idempotence, equivariance, STE."""

import pytest
import torch

from vggt_quant_core.quant.quantizers import (ActQuantizer, QuantSpec, WeightQuantizer, compute_qparams, dequantize,
                                              fake_quantize, quantize_to_int, round_ste)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_symmetric_per_token_grid_bound_and_idempotence(bits):
    spec = QuantSpec(bits, granularity="per_token")
    x = torch.randn(32, 64) * torch.rand(32, 1) * 10
    scale, zero = compute_qparams(x, spec)
    codes = quantize_to_int(x, spec, scale, zero)
    assert codes.dtype == torch.int8 and zero is None
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    assert torch.allclose(scale[:, 0], x.abs().amax(1) / (2 ** (bits - 1) - 1))
    q = fake_quantize(x, spec)
    assert ((x - q).abs() <= scale / 2 + 1e-6).all()
    assert torch.equal(fake_quantize(q, spec), q)  # Q(Q(x)) = Q(x)
    assert torch.equal(dequantize(codes, scale), q)


def test_per_token_scaling_equivariance_and_zero_tokens():
    spec = QuantSpec(4, granularity="per_token")
    x = torch.randn(16, 32)
    factors = torch.rand(16, 1) * 5 + 0.1
    assert torch.allclose(fake_quantize(x * factors, spec), fake_quantize(x, spec) * factors, rtol=1e-5, atol=1e-6)
    x[3] = 0
    out = fake_quantize(x, spec)
    assert torch.isfinite(out).all() and (out[3] == 0).all()


@pytest.mark.parametrize("bits", [3, 8])
def test_asymmetric_codes_zero_point_and_exact_zero(bits):
    spec = QuantSpec(bits, symmetric=False, granularity="per_token")
    x = torch.rand(8, 40) * 3 - 0.5
    x[:, 0] = 0
    scale, zero = compute_qparams(x, spec)
    codes = quantize_to_int(x, spec, scale, zero)
    assert codes.dtype == torch.uint8 and codes.min() >= 0 and codes.max() <= 2 ** bits - 1
    assert torch.equal(zero, zero.round())
    q = dequantize(codes, scale, zero)
    assert (q[:, 0] == 0).all()  # zero is on the grid
    assert ((x - q).abs() <= scale / 2 + 1e-6).all()


def test_per_channel_and_per_group_weights():
    weight = torch.randn(12, 64)
    weight[2] *= 100  # an outlier row must not affect the others' scales
    channel = QuantSpec(4, granularity="per_channel")
    scale, _ = compute_qparams(weight, channel)
    assert scale.shape == (12, 1)
    assert ((weight - fake_quantize(weight, channel)).abs() <= scale / 2 + 1e-5).all()
    group = QuantSpec(4, granularity="per_group", group_size=16)
    scale, _ = compute_qparams(weight, group)
    assert scale.shape == (12, 4, 1)
    error = (weight - fake_quantize(weight, group)).reshape(12, 4, 16).abs()
    assert (error <= scale / 2 + 1e-5).all()
    assert error.mean() < (weight - fake_quantize(weight, channel)).abs().mean()
    with pytest.raises(ValueError, match="multiple of group_size"):
        fake_quantize(torch.randn(2, 10), group)


def test_fixed_clip_ratio_shrinks_the_range():
    spec = QuantSpec(8, granularity="per_token", clip_ratio=0.5)
    x = torch.linspace(-1, 1, 101)[None]
    q = fake_quantize(x, spec)
    step = 0.5 / 127  # codes span [-128, 127]: clipped negatives land on -128 * step
    assert q.max() == pytest.approx(0.5) and q.min() == pytest.approx(-128 * step)
    assert torch.allclose(q[0, 50:55], x[0, 50:55], atol=step)


def test_round_ste_has_identity_gradient_and_clips_learn():
    x = torch.randn(10, requires_grad=True)
    round_ste(x * 3).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 3.0))
    weights = WeightQuantizer(QuantSpec(4), out_features=6, learnable_clip=True)
    acts = ActQuantizer(QuantSpec(4, granularity="per_token"), learnable_clip=True)
    w = torch.randn(6, 16)
    (weights(w).square().sum() + acts(torch.randn(5, 16)).square().sum()).backward()
    assert weights.clip_logit.grad.abs().sum() > 0 and acts.clip_logit.grad.abs().sum() > 0


def test_static_per_tensor_activations():
    quantizer = ActQuantizer(QuantSpec(8, granularity="per_tensor"), dynamic=False)
    with pytest.raises(RuntimeError, match="calibrate_static"):
        quantizer(torch.zeros(2, 4))
    quantizer.calibrate_static(torch.tensor(2.0))
    out = quantizer(torch.tensor([[3.0, -1.0, 0.5]]))
    assert out[0, 0] == pytest.approx(2.0) and out[0, 1] == pytest.approx(-1.0, abs=1 / 127)


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(1)
    with pytest.raises(ValueError, match="granularity"):
        QuantSpec(4, granularity="per_row")
    with pytest.raises(ValueError, match="static activation"):
        ActQuantizer(QuantSpec(8, granularity="per_token"), dynamic=False)
