"""FP8 E4M3 W8A8: codes equal the fake-quant reference's, ``_scaled_mm`` (emulated on CPU) equals the
reference within float rounding, and the CUDA backend is chosen only on sm_89+ (checkpoint round trip:
test_checkpoint.py)."""

import logging

import pytest
import torch
from torch import nn

from vggt_quant_core.kernels import registry
from vggt_quant_core.kernels.elementwise import E4M3_MAX, fused_quantize_per_token_e4m3, quantize_per_token_e4m3, \
    set_compile
from vggt_quant_core.kernels.fp8_scaled_mm import CPU_FP8_EMULATED
from vggt_quant_core.kernels.registry import LinearSpec, select_backend
from vggt_quant_core.quant import QuantConfig, QuantLinear, QuantSpec
from vggt_quant_core.quant.quantizers import compute_qparams, quantize_to_e4m3
from vggt_quant_core.quant.transforms import ChannelScale, InputTransform, RandomHadamard

E4M3 = "e4m3"
CUDA = torch.device("cuda")
FP8 = LinearSpec(1024, 3072, w_bits=8, a_bits=8, w_format=E4M3, a_format=E4M3)


def _activations(rows, cols, seed=0):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    x[:, 3] *= 40
    x[-1] = 0
    x[0, :4] = torch.tensor([448.0, 232.0, -0.0009, 236.0])  # absmax 448 -> scale 1: ties and underflow
    return x


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("clip_ratio", [1.0, 0.7])
def test_activation_codes_equal_the_reference(compiled, clip_ratio):
    x = _activations(33, 96)
    divisor = torch.rand(96) + 0.3
    spec = QuantSpec(8, granularity="per_token", clip_ratio=clip_ratio, number_format=E4M3)
    scale, _ = compute_qparams(x / divisor, spec)
    expected = quantize_to_e4m3(x / divisor, spec, scale)
    set_compile(compiled)
    try:
        codes, a_scale = fused_quantize_per_token_e4m3(x, torch.tensor(clip_ratio), divisor)
        assert not fused_quantize_per_token_e4m3._broken
    finally:
        set_compile(None)
    assert codes.dtype == torch.float8_e4m3fn and torch.equal(a_scale, scale)
    assert torch.equal(codes.view(torch.uint8), expected.view(torch.uint8))  # bit-identical, NaN-free
    assert codes.float().abs().max() <= E4M3_MAX and codes[-1].float().abs().sum() == 0


def test_rounding_is_to_nearest_even_and_saturating():
    # absmax 448 -> scale 1: 232 is a tie between 224 and 240 (even mantissa: 224), 0.0009 is below half the
    # smallest subnormal (2^-9), 240.5 rounds to 240.
    codes, _ = quantize_per_token_e4m3(torch.tensor([[448.0, 232.0, 236.0, 0.0009, -240.5]]), torch.tensor(1.0))
    assert codes.float().tolist() == [[448.0, 224.0, 240.0, 0.0, -240.0]]
    # clip 0.5 -> scale 0.5: +-896 is clamped to +-448 before the cast
    codes, _ = quantize_per_token_e4m3(torch.tensor([[448.0, -448.0]]), torch.tensor(0.5))
    assert codes.float().tolist() == [[448.0, -448.0]]


def _fp8_layer(transform, in_features=64):
    torch.manual_seed(0)
    config = QuantConfig(number_format=E4M3)
    steps = {"none": [], "dsfq": [RandomHadamard(in_features, 2), ChannelScale(in_features)]}[transform]
    layer = QuantLinear.from_linear(nn.Linear(in_features, 48), InputTransform(steps), config.w_spec(),
                                    config.a_spec())
    if transform == "dsfq":
        layer.transform.steps[1].set_scale(torch.rand(in_features) + 0.5)
    layer.freeze()
    return layer


@pytest.mark.parametrize("transform", ["none", "dsfq"])
def test_scaled_mm_backend_equals_the_reference(transform):
    layer = _fp8_layer(transform)
    assert layer.qweight.dtype == torch.float8_e4m3fn
    x = torch.randn(2, 37, 64) * torch.linspace(0.1, 5, 64)
    with torch.no_grad():
        layer.backend = CPU_FP8_EMULATED.name
        y = layer(x)
        assert layer.active_backend == CPU_FP8_EMULATED.name
        layer.backend = "reference"
        reference = layer(x)
    # Same codes; the products of E4M3 values are exact in float32, only the summation order differs.
    assert torch.allclose(y, reference, rtol=1e-5, atol=2e-6 * reference.abs().max())


def test_auto_leaves_the_cpu_emulation_alone_and_says_why(caplog, monkeypatch):
    monkeypatch.setattr(registry, "_LOGGED", set())
    with caplog.at_level(logging.DEBUG, logger=registry.__name__):
        assert select_backend(FP8, torch.device("cpu")) is None
    assert "cpu-fp8-emulated: an emulation, run only when named" in caplog.text
    assert "needs int codes on both sides" in caplog.text  # the integer backends reject FP8 layers


@pytest.mark.parametrize("capability,expected", [((9, 0), "cuda-fp8-scaled-mm"), ((8, 9), "cuda-fp8-scaled-mm"),
                                                 ((8, 6), None), ((8, 0), None)])
def test_cuda_fp8_needs_sm89(capability, expected):
    chosen = select_backend(FP8, CUDA, capability)
    assert (chosen.name if chosen else None) == expected
    assert select_backend(LinearSpec(1024, 3072, w_bits=8, a_bits=8), CUDA, capability).name != "cuda-fp8-scaled-mm"


def test_cuda_fp8_rejects_shapes_and_formats_it_cannot_take():
    backend = registry.get_backend("cuda-fp8-scaled-mm")
    assert "multiples of 16" in backend.supports(LinearSpec(1000, 3072, 8, 8, w_format=E4M3, a_format=E4M3),
                                                 CUDA, (9, 0))
    assert "compute capability >= 8.9" in backend.supports(FP8, CUDA, (8, 6))
    assert "int weights x e4m3 activations" in backend.supports(LinearSpec(1024, 3072, 8, 8, a_format=E4M3),
                                                                CUDA, (9, 0))


def test_format_is_validated_and_integer_configs_serialise_as_before():
    with pytest.raises(ValueError, match="8-bit symmetric"):
        QuantConfig(w_bits=4, number_format=E4M3)
    with pytest.raises(ValueError, match="number_format"):
        QuantConfig(number_format="e5m2")
    assert "number_format" not in QuantConfig().to_dict() and "number_format" not in QuantSpec(8).to_dict()
    config = QuantConfig(method="quarot", number_format=E4M3)
    assert QuantConfig.from_dict(config.to_dict()) == config and config.label == "quarot-w8a8-e4m3"


def test_float_state_trains_through_e4m3_fake_quantization():
    torch.manual_seed(0)
    config = QuantConfig(number_format=E4M3)
    layer = QuantLinear.from_linear(nn.Linear(64, 48), InputTransform([]), config.w_spec(), config.a_spec())
    x = torch.randn(5, 64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert x.grad is not None and layer.weight.grad.abs().sum() > 0  # straight-through rounding
    layer.freeze()
    with torch.no_grad():
        assert torch.allclose(layer(x), y, rtol=1e-5, atol=1e-5)  # frozen codes are the fake-quantized weight
