"""quantize(model, QuantConfig): which layers, exactness with quantization off, fusion, errors."""

import copy
import re

import pytest
import torch
from torch import nn

from helpers import GOLDEN, load_pt, rel_to_max
from vggt_quant_core.model import VGGT, load_vggt
from vggt_quant_core.quant import QuantConfig, QuantLinear, quantization_disabled, quantize, quantized_layers
from vggt_quant_core.quant.targets import aggregator_blocks

METHODS = ["rtn", "smoothquant", "quarot", "dsfq"]


@pytest.fixture(scope="module")
def tiny():
    model = load_vggt(GOLDEN / "tiny_b")  # embed 48: Hadamard order 12 x 4; hidden 192 = 12 x 16
    images = load_pt(GOLDEN / "tiny_b" / "inputs.pt")["images"]
    with torch.no_grad():
        reference = model(images)
    return model, images, reference


def test_wraps_exactly_the_192_aggregator_linears_of_vggt_1b():
    with torch.device("meta"):
        model = VGGT()
        quantize(model, QuantConfig(method="quarot"), freeze=False)
    names = list(quantized_layers(model))
    assert len(names) == 192
    pattern = re.compile(r"aggregator\.(frame|global)_blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)")
    assert all(pattern.fullmatch(n) for n in names)
    assert {int(pattern.fullmatch(n).group(2)) for n in names} == set(range(24))
    assert not any(isinstance(m, QuantLinear) for m in model.camera_head.modules())
    with torch.device("meta"):
        wider = quantize(VGGT(), QuantConfig(include_patch_embed=True, include_camera_trunk=True), freeze=False)
    extra = set(quantized_layers(wider)) - set(names)
    assert len(extra) == 96 + 16
    assert sum(n.startswith("camera_head.trunk.") for n in extra) == 16


def test_block_order_is_frame_then_global():
    with torch.device("meta"):
        model = VGGT()
    blocks = aggregator_blocks(model)
    assert blocks[:3] == ["aggregator.frame_blocks.0", "aggregator.global_blocks.0", "aggregator.frame_blocks.1"]
    assert len(blocks) == 48


@pytest.mark.parametrize("method", METHODS)
def test_wrapped_model_with_quantization_off_equals_the_original(tiny, method):
    model, images, reference = tiny
    wrapped = quantize(copy.deepcopy(model), QuantConfig(method=method, w_bits=4, a_bits=4),
                       calibration_images=[images], freeze=False)
    with torch.no_grad(), quantization_disabled(wrapped):
        out = wrapped(images)
    for key in ("pose_enc", "depth", "world_points"):
        assert rel_to_max(out[key], reference[key]) < 1e-4, key


def test_smoothing_fused_into_layernorm_is_exact(tiny):
    """With 16-bit 'quantization' the frozen model only carries the transforms: fusing SmoothQuant's scales
    into norm1/norm2 must not change the outputs, and must remove those scales from the online path."""
    model, images, reference = tiny
    fused = quantize(copy.deepcopy(model), QuantConfig(method="smoothquant", w_bits=16, a_bits=16),
                     calibration_images=[images])
    layers = quantized_layers(fused)
    fused_layers = [n for n, layer in layers.items() if layer.fused_norm]
    assert len(fused_layers) == 2 * 16 and all(n.endswith(("attn.qkv", "mlp.fc1")) for n in fused_layers)
    assert all(len(layers[n].transform.steps) == 0 for n in fused_layers)
    assert all(len(layer.transform.steps) == 1 for n, layer in layers.items() if n not in fused_layers)
    assert not torch.equal(fused.aggregator.frame_blocks[0].norm1.weight, model.aggregator.frame_blocks[0].norm1.weight)
    with torch.no_grad():
        out = fused(images)
    assert rel_to_max(out["depth"], reference["depth"]) < 1e-4


def test_error_grows_as_bits_shrink(tiny):
    model, images, reference = tiny
    errors = []
    for bits in (8, 6, 4):
        quantized = quantize(copy.deepcopy(model), QuantConfig(method="quarot", w_bits=bits, a_bits=bits))
        with torch.no_grad():
            out = quantized(images)
        errors.append((out["depth"] - reference["depth"]).norm().item() / reference["depth"].norm().item())
    assert errors[0] < errors[1] < errors[2] and errors[0] < 0.02


def test_static_activation_ranges_from_calibration(tiny):
    model, images, reference = tiny
    config = QuantConfig(method="dsfq", w_bits=8, a_bits=8, a_granularity="per_tensor", a_dynamic=False,
                         a_symmetric=False)
    quantized = quantize(copy.deepcopy(model), config, calibration_images=[images])
    quantizers = [layer.act_quantizer for layer in quantized_layers(quantized).values()]
    assert all(q.static_scale is not None and q.static_zero is not None for q in quantizers)
    with torch.no_grad():
        out = quantized(images)
    assert rel_to_max(out["depth"], reference["depth"]) < 0.1


def test_bad_requests_are_refused(tiny):
    model, _, _ = tiny
    with pytest.raises(ValueError, match="needs calibration_images"):
        quantize(copy.deepcopy(model), QuantConfig(method="dsfq"))
    quantized = quantize(copy.deepcopy(model), QuantConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quantize(quantized, QuantConfig())
    with pytest.raises(ValueError, match="unknown method"):
        QuantConfig(method="gptq-ish")
    with pytest.raises(ValueError, match="w_bits"):
        QuantConfig(w_bits=12)
    with pytest.raises(ValueError, match="static activation"):
        QuantConfig(a_dynamic=False)
    assert isinstance(model.aggregator.frame_blocks[0].attn.qkv, nn.Linear)  # the original was not touched
