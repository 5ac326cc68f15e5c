"""QuantLinear backends: ``auto`` choice and fallbacks, real backend == fake-quant reference, prepared
state rebuilt when it must be and never saved."""

import logging

import pytest
import torch
from torch import nn

from vggt_quant_core.kernels import registry
from vggt_quant_core.kernels.int_mm import IntMMBackend
from vggt_quant_core.quant import QuantLinear, QuantSpec
from vggt_quant_core.quant.linear import BACKEND_ENV
from vggt_quant_core.quant.transforms import ChannelScale, InputTransform, RandomHadamard

PER_TOKEN = "per_token"


# ``auto`` here is that of CPUs with VNNI and without AMX (cpu-int8); the AMX backends and the CPUs without VNNI
# have their own tests (test/core/kernels/test_amx_int8.py, test_onednn_int8.py, test_cpu_isa.py).
pytestmark = pytest.mark.usefixtures("cpu_without_amx")


def _frozen(w_spec, a_spec, transform="dsfq", a_dynamic=True, in_features=64, seed=0):
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, 40)
    steps = {"none": [], "hadamard": [RandomHadamard(in_features, 2)],
             "dsfq": [RandomHadamard(in_features, 2), ChannelScale(in_features)]}[transform]
    layer = QuantLinear.from_linear(linear, InputTransform(steps), w_spec, a_spec, a_dynamic=a_dynamic)
    if transform == "dsfq":
        layer.transform.steps[1].set_scale(torch.rand(in_features) + 0.5)
    if not a_dynamic:
        layer.act_quantizer.calibrate_static(torch.tensor(4.0))
    layer.freeze()
    return layer


def _both(layer, x):
    """(auto output, reference output, backend auto used)."""
    with torch.no_grad():
        layer.backend = "auto"
        y = layer(x)
        used = layer.active_backend
        layer.backend = "reference"
        return y, layer(x), used


CONFIGS = {"w8a8": (QuantSpec(8), QuantSpec(8, granularity=PER_TOKEN)),
           "w4a8": (QuantSpec(4), QuantSpec(8, granularity=PER_TOKEN)),
           "w4a4": (QuantSpec(4), QuantSpec(4, granularity=PER_TOKEN)),
           "w6a6-clipped": (QuantSpec(6, clip_ratio=0.9), QuantSpec(6, granularity=PER_TOKEN, clip_ratio=0.8)),
           "w8a8-per-tensor-weights": (QuantSpec(8, granularity="per_tensor"), QuantSpec(8, granularity=PER_TOKEN))}


@pytest.mark.parametrize("transform", ["none", "hadamard", "dsfq"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_cpu_int8_backend_equals_the_reference(config, transform):
    layer = _frozen(*CONFIGS[config], transform=transform)
    x = torch.randn(2, 37, 64) * torch.linspace(0.1, 5, 64)
    y, reference, used = _both(layer, x)
    assert used == "cpu-int8"
    # Same codes, exact integer sums: only the float epilogue (and the reference's float GEMM) differ.
    assert torch.allclose(y, reference, rtol=1e-5, atol=2e-6 * reference.abs().max())


def test_learned_activation_clip_reaches_the_backend():
    w_spec, a_spec = QuantSpec(8), QuantSpec(4, granularity=PER_TOKEN)
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(nn.Linear(64, 40), InputTransform([]), w_spec, a_spec, learnable_clip=True)
    with torch.no_grad():
        layer.act_quantizer.clip_logit.fill_(0.3)  # sigmoid = 0.57: clipping changes many 4-bit codes
    layer.freeze()
    y, reference, used = _both(layer, torch.randn(50, 64))
    assert used == "cpu-int8"
    assert torch.allclose(y, reference, rtol=1e-5, atol=2e-6 * reference.abs().max())


@pytest.mark.parametrize("w_spec,a_spec,a_dynamic,why", [
    (QuantSpec(8, symmetric=False), QuantSpec(8, granularity=PER_TOKEN), True, "asymmetric"),
    (QuantSpec(4, granularity="per_group", group_size=16), QuantSpec(8, granularity=PER_TOKEN), True, "per_group"),
    (QuantSpec(8), QuantSpec(8, granularity="per_tensor"), False, "dynamic per-token"),
    (QuantSpec(8), QuantSpec(8, symmetric=False, granularity=PER_TOKEN), True, "asymmetric"),
    (QuantSpec(4), None, True, "weight-only"),
])
def test_unsupported_formats_fall_back_to_the_reference(w_spec, a_spec, a_dynamic, why, caplog):
    layer = _frozen(w_spec, a_spec, a_dynamic=a_dynamic)
    with caplog.at_level(logging.DEBUG, logger=registry.__name__):
        y, reference, used = _both(layer, torch.randn(20, 64))
    assert used == "reference" and torch.equal(y, reference)
    assert why in caplog.text  # the reason cpu-int8 was skipped is logged at debug level
    layer.backend = "cpu-int8"
    with pytest.raises(ValueError, match=f"cpu-int8 cannot run.*{why}"), torch.no_grad():
        layer(torch.randn(20, 64))


def test_float_state_disabled_quantization_and_autograd_use_the_reference():
    w_spec, a_spec = CONFIGS["w8a8"]
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(nn.Linear(64, 40), InputTransform([]), w_spec, a_spec)
    x = torch.randn(8, 64)
    with torch.no_grad():
        layer(x)
    assert layer.active_backend == "reference"  # float state: fake quantization only
    layer.freeze()
    layer(x).sum().backward()  # gradients need the differentiable reference
    assert layer.bias.grad is not None and layer.active_backend == "reference"
    with torch.no_grad():
        layer.quantization_enabled = False
        layer(x)
        assert layer.active_backend == "reference"  # float activations: no integer GEMM
        layer.quantization_enabled = True
        layer(x)
        assert layer.active_backend == "cpu-int8"


def test_auto_prefers_priority_and_logs_the_choice_once(monkeypatch, caplog):
    better = IntMMBackend("better-int8", "cpu", priority=1000)
    monkeypatch.setitem(registry._BACKENDS, better.name, better)
    monkeypatch.setattr(registry, "_LOGGED", set())
    layers = [_frozen(*CONFIGS["w8a8"], seed=s) for s in range(2)]
    with caplog.at_level(logging.INFO, logger=registry.__name__), torch.no_grad():
        for layer in layers:
            layer(torch.randn(4, 64))
    assert [layer.active_backend for layer in layers] == ["better-int8"] * 2
    assert caplog.text.count("backend better-int8") == 1


def test_unknown_backend_names_are_rejected_with_the_choices():
    layer = _frozen(*CONFIGS["w8a8"])
    with pytest.raises(ValueError, match="choose from auto, reference, cpu-int8"):
        layer.backend = "cutlass-typo"


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "reference")
    layer = _frozen(*CONFIGS["w8a8"])
    assert layer.backend == "reference"
    with torch.no_grad():
        layer(torch.randn(3, 64))
    assert layer.active_backend == "reference"


def test_prepared_state_follows_the_weights_and_is_never_saved():
    layer = _frozen(*CONFIGS["w4a8"])
    keys = set(layer.state_dict())
    x = torch.randn(10, 64)
    with torch.no_grad():
        before = layer(x)
        assert set(layer.state_dict()) == keys  # unpacked int8 weights are not part of the checkpoint
        assert layer.backend_extra_bytes() == 64 * 40 + 4  # ... but take a byte per weight (+ the clip scalar)
        layer.qweight.zero_()  # in place: codes 0 -> only the bias remains
        assert torch.allclose(layer(x), layer.bias.expand(10, 40))
        layer.qweight = torch.full_like(layer.qweight, 0x11)  # new tensor: every code is 1
        ones = layer(x)
    assert not torch.allclose(before, ones)
    layer.backend = "reference"
    with torch.no_grad():
        assert torch.allclose(layer(x), ones, rtol=1e-5, atol=1e-5)


def test_autocast_output_dtype_matches_the_reference():
    layer = _frozen(*CONFIGS["w8a8"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, reference, used = _both(layer, torch.randn(6, 64))
    assert used == "cpu-int8" and y.dtype == reference.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference.float(), rtol=2e-2, atol=2e-2 * reference.float().abs().max())
