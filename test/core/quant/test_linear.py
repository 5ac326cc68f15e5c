"""QuantLinear: equals nn.Linear with quantization off; frozen == float fake-quant; storage layout."""

import pytest
import torch
from torch import nn

from vggt_quant_core.quant import QuantLinear, QuantSpec
from vggt_quant_core.quant.transforms import ChannelScale, InputTransform, RandomHadamard

TRANSFORMS = {
    "none": lambda n: [],
    "smooth": lambda n: [ChannelScale(n)],
    "hadamard": lambda n: [RandomHadamard(n, 5)],
    "dsfq": lambda n: [RandomHadamard(n, 5), ChannelScale(n)],
}


def _layer(kind, w_spec=QuantSpec(4), a_spec=QuantSpec(8, granularity="per_token"), in_features=64):
    linear = nn.Linear(in_features, 24)
    transform = InputTransform(TRANSFORMS[kind](in_features))
    if transform.index("scale") is not None:
        transform.steps[transform.index("scale")].set_scale(torch.rand(in_features) + 0.5)
    return linear, QuantLinear.from_linear(linear, transform, w_spec, a_spec)


@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
def test_disabled_quantization_reproduces_the_linear(kind):
    linear, layer = _layer(kind)
    layer.quantization_enabled = False
    x = torch.randn(3, 10, 64)
    with torch.no_grad():
        assert torch.allclose(layer(x), linear(x), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
@pytest.mark.parametrize("w_spec", [QuantSpec(4), QuantSpec(8, symmetric=False),
                                    QuantSpec(3, granularity="per_group", group_size=16)])
def test_frozen_layer_equals_float_fake_quant(kind, w_spec):
    _, layer = _layer(kind, w_spec=w_spec)
    layer.backend = "reference"  # real backends equal it within float tolerance: test/core/kernels/test_int_mm.py
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        expected = layer(x)
        layer.freeze()
        assert layer.weight is None and layer.frozen
        assert torch.equal(layer(x), expected)
    expected_columns = 32 if w_spec.bits <= 4 else 64
    assert layer.qweight.shape == (24, expected_columns)
    assert layer.qweight.dtype == (torch.uint8 if w_spec.bits <= 4 or not w_spec.symmetric else torch.int8)


def test_quantization_error_shrinks_with_bits():
    errors = []
    for bits in (3, 4, 6, 8):
        linear, layer = _layer("hadamard", QuantSpec(bits), QuantSpec(bits, granularity="per_token"))
        x = torch.randn(50, 64)
        with torch.no_grad():
            errors.append(((layer(x) - linear(x)).norm() / linear(x).norm()).item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.01


def test_weight_only_and_activation_only():
    x = torch.randn(4, 64)
    with torch.no_grad():
        linear, weight_only = _layer("none", a_spec=None)
        weight_only.freeze()
        assert torch.allclose(weight_only(x), x @ weight_only.dequantized_weight().T + linear.bias, atol=1e-6)
        linear, act_only = _layer("hadamard", w_spec=None)
        act_only.freeze()
        assert act_only.qweight.dtype == torch.float32  # rotated float weight, no codes
        act_only.quantization_enabled = False
        assert torch.allclose(act_only(x), linear(x), atol=1e-5)


def test_gradients_reach_transforms_and_clips_in_float_state():
    linear = nn.Linear(64, 8)
    transform = InputTransform([RandomHadamard(64, 1), ChannelScale(64)])
    layer = QuantLinear.from_linear(linear, transform, QuantSpec(4), QuantSpec(4, granularity="per_token"),
                                    learnable_clip=True)
    layer(torch.randn(5, 64)).square().sum().backward()
    assert transform.steps[1].log_scale.grad.abs().sum() > 0
    assert layer.weight_quantizer.clip_logit.grad.abs().sum() > 0
    assert layer.act_quantizer.clip_logit.grad.abs().sum() > 0
    assert transform.steps[0].signs.grad is None  # fixed rotation


def test_autocast_output_dtype_matches_nn_linear():
    linear, layer = _layer("hadamard")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(3, 64)).dtype == linear(torch.randn(3, 64)).dtype == torch.bfloat16
