"""Quantized checkpoints: bit-identical round trip, base-model checks, format errors, sizes."""

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from helpers import GOLDEN, load_pt
from vggt_quant_core.model import CheckpointError, load_vggt
from vggt_quant_core.quant import QuantConfig, load_quantized, quantize, read_header, save_quantized
import vggt_quant_core.quant.checkpoint as checkpoint_module


@pytest.fixture(scope="module")
def base():
    return load_vggt(GOLDEN / "tiny_a"), load_pt(GOLDEN / "tiny_a" / "inputs.pt")["images"]


CONFIGS = [
    QuantConfig(method="dsfq", w_bits=4, a_bits=4),                                 # packed int4, online scales
    QuantConfig(method="smoothquant", w_bits=8, a_bits=8, w_symmetric=False,       # uint8 codes, fused LayerNorm
                a_granularity="per_tensor", a_dynamic=False, a_symmetric=False),   # static asymmetric acts
    QuantConfig(method="rtn", w_bits=3, a_bits=16, w_granularity="per_group", w_group_size=32),
    QuantConfig(method="flatquant", w_bits=4, a_bits=4, learnable_clip=True),  # Kronecker factors, learned clip
    QuantConfig(method="quarot", number_format="e4m3"),                          # float8_e4m3fn codes
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label)
def test_round_trip_gives_bit_identical_outputs(base, tmp_path, config):
    model, images = base
    quantized = quantize(copy.deepcopy(model), config, calibration_images=[images])
    path = tmp_path / "q.safetensors"
    report = save_quantized(quantized, path, calibration={"samples": ["scene-3/frames-0-1"]})
    loaded = load_quantized(path)
    with torch.no_grad():
        expected, actual = quantized(images), loaded(images)
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert torch.equal(actual[key], expected[key]), key
    # Same memory layout too, as float GEMMs may round by their operands' strides: flatquant's Kronecker factors
    # came out of calibration column-major (LAPACK's Q) and back from the file row-major (1.8e-5 on depth).
    tensors = dict([*loaded.named_parameters(), *loaded.named_buffers()])
    for name, tensor in [*quantized.named_parameters(), *quantized.named_buffers()]:
        assert tensor.stride() == tensors[name].stride(), name
    header = read_header(path)
    assert header["quant_config"] == config.to_dict() and header["calibration"]["samples"] == ["scene-3/frames-0-1"]
    assert len(header["layers"]) == 4 * 2 * 6 and report["file_bytes"] == path.stat().st_size


def test_sizes_of_int4_layers(base, tmp_path):
    model, images = base
    quantized = quantize(copy.deepcopy(model), QuantConfig(method="quarot", w_bits=4, a_bits=8))
    report = save_quantized(quantized, tmp_path / "q.safetensors")
    # 4-bit codes are a quarter of fp16, plus per-row scales, bias and sign vectors
    ratio = report["quantized_layers_bytes"] / report["quantized_layers_fp16_bytes"]
    assert 0.25 < ratio < 0.40, report
    assert report["quantized_layers_fp32_bytes"] == 2 * report["quantized_layers_fp16_bytes"]


def test_base_free_checkpoint_needs_the_right_base(base, tmp_path):
    model, images = base
    quantized = quantize(copy.deepcopy(model), QuantConfig(method="quarot", w_bits=8, a_bits=8))
    path = tmp_path / "delta.safetensors"
    save_quantized(quantized, path, include_base=False)
    assert path.stat().st_size < 0.6 * (GOLDEN / "tiny_a" / "state_dict.safetensors").stat().st_size
    with pytest.raises(CheckpointError, match="pass the base model"):
        load_quantized(path)
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.depth_head.norm.weight.add_(1e-3)
    with pytest.raises(CheckpointError, match="wrong base model"):
        load_quantized(path, base=wrong)
    loaded = load_quantized(path, base=GOLDEN / "tiny_a")
    with torch.no_grad():
        assert torch.equal(loaded(images)["depth"], quantized(images)["depth"])


def test_format_errors_are_clear(base, tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="not a quantized VGGT checkpoint"):
        load_quantized(plain)
    newer = tmp_path / "newer.safetensors"
    save_file({"x": torch.zeros(1)}, str(newer),
              metadata={"vggt_quant": json.dumps({"format": "vggt-quant", "version": 99})})
    with pytest.raises(CheckpointError, match="newer"):
        load_quantized(newer)
    with pytest.raises(CheckpointError, match="no such file"):
        load_quantized(tmp_path / "missing.safetensors")
    model, _ = base
    with pytest.raises(ValueError, match="no quantized layers"):
        save_quantized(model, tmp_path / "x.safetensors")


def test_interrupted_save_keeps_the_previous_file(base, tmp_path, monkeypatch):
    model, _ = base
    quantized = quantize(copy.deepcopy(model), QuantConfig())
    path = tmp_path / "q.safetensors"
    save_quantized(quantized, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(quantized, path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1
