"""Quantized checkpoints: one ``.safetensors`` file with integer weights and a JSON header.

Tensors: the model's state dict after quantization. Every quantized Linear ``L`` contributes
``L.qweight`` (int8 codes, or uint8 with two 4-bit codes per byte for <= 4 bits), ``L.w_scale``
(+ ``L.w_zero`` for asymmetric weights), ``L.bias``, ``L.transform.steps.K.signs`` (random Hadamard sign
vectors; the matrix is never stored) and ``L.transform.steps.K.log_scale`` (online smoothing). LayerNorms
that absorbed smoothing are stored with their modified weights. With ``include_base`` every other tensor
of the model is stored too (float32), so the file is self-contained; without it, loading needs the
base model, identified by the SHA-256 of its weights.

Header (safetensors metadata ``vggt_quant``, JSON): format name and version, QuantConfig, VGGT config,
base-weights SHA-256, per-layer layout (transform steps, fused LayerNorm, specs), calibration sample ids
when given, library and torch versions.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .. import __version__
from ..fileio import PathLike, atomic_path
from ..model import CheckpointError, VGGT, VGGTConfig, load_vggt
from .api import quantized_layers, state_dict_sha256
from .config import QuantConfig
from .linear import QuantLinear
from .quantizers import QuantSpec
from .record import QuantRecord, attach_record, quant_record
from .transforms import ChannelScale, InputTransform, KroneckerAffine, RandomHadamard

FORMAT = "vggt-quant"
FORMAT_VERSION = 1
_HEADER_KEY = "vggt_quant"


def _layer_layout(layer: QuantLinear) -> dict:
    return {"in_features": layer.in_features, "out_features": layer.out_features, "bias": layer.bias is not None,
            "transform": layer.transform.describe(), "fused_norm": layer.fused_norm,
            "w_spec": None if layer.w_spec is None else layer.w_spec.to_dict(),
            "a_spec": None if layer.a_spec is None else layer.a_spec.to_dict(),
            "a_dynamic": layer.act_quantizer.dynamic if layer.act_quantizer is not None else True,
            "a_learned_clip": layer.act_quantizer is not None and layer.act_quantizer.clip_logit is not None}


def save_quantized(model: VGGT, path: PathLike, include_base: bool = True,
                   calibration: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
    """Write a frozen quantized model atomically; returns the size report (see ``size_report``).

    ``calibration``: what the model was calibrated on (e.g. sample ids, bag names), stored in the header.
    """
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model has no quantized layers; call quantize() first")
    if not all(layer.frozen for layer in layers.values()):
        raise ValueError("freeze the model (quantize(..., freeze=True)) before saving")
    record = quant_record(model)
    state = model.state_dict()
    if not include_base:
        owned = tuple(f"{name}." for name in layers) + tuple(
            f"{layer.fused_norm}." for layer in layers.values() if layer.fused_norm)
        state = {k: v for k, v in state.items() if k.startswith(owned)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    header = {
        "format": FORMAT, "version": FORMAT_VERSION, "library_version": __version__,
        "torch_version": torch.__version__,
        "quant_config": record.config.to_dict(), "model_config": model.config.to_dict(),
        "base_sha256": record.base_sha256, "includes_base": include_base,
        "layers": {name: _layer_layout(layer) for name, layer in layers.items()},
        "calibration": calibration,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_HEADER_KEY: json.dumps(header)})
    return size_report(model, Path(path))


def read_header(path: PathLike) -> dict:
    """The JSON header of a quantized checkpoint (clear error for other files or newer formats)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if _HEADER_KEY not in metadata:
        raise CheckpointError(f"{path}: not a quantized VGGT checkpoint (no '{_HEADER_KEY}' header)")
    header = json.loads(metadata[_HEADER_KEY])
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {header.get('format')!r}")
    if header.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {header['version']} is newer than this library reads "
                              f"({FORMAT_VERSION}); upgrade vggt_quant")
    return header


def is_quantized_checkpoint(path: PathLike) -> bool:
    try:
        read_header(path)
    except CheckpointError:
        return False
    return True


def _build_layer(layout: dict) -> QuantLinear:
    steps = []
    for step in layout["transform"]:
        if step["type"] == RandomHadamard.kind:
            steps.append(RandomHadamard(step["n"], step["seed"]))
        elif step["type"] == ChannelScale.kind:
            steps.append(ChannelScale(step["n"]))
        elif step["type"] == KroneckerAffine.kind:
            steps.append(KroneckerAffine(step["n"], step["seed"]))
        else:
            raise CheckpointError(f"unknown transform step {step['type']!r}")
    specs = [None if layout[k] is None else QuantSpec(**layout[k]) for k in ("w_spec", "a_spec")]
    layer = QuantLinear(layout["in_features"], layout["out_features"], layout["bias"], InputTransform(steps),
                        specs[0], specs[1], layout["a_dynamic"], learnable_clip=layout.get("a_learned_clip", False))
    layer.fused_norm = layout["fused_norm"]
    if layer.act_quantizer is not None and not layer.act_quantizer.dynamic:
        layer.act_quantizer.static_scale = torch.empty(1)
        if not layer.a_spec.symmetric:
            layer.act_quantizer.static_zero = torch.empty(1)
    layer.allocate_frozen()
    return layer


def load_quantized(path: PathLike, base: Optional[Union[PathLike, VGGT]] = None,
                   device: Union[str, torch.device] = "cpu") -> VGGT:
    """Rebuild the quantized model saved by ``save_quantized`` (bit-identical outputs).

    ``base`` (a model or a checkpoint path) is required when the file does not include the base
    weights; its SHA-256 must match the one the checkpoint was made from.
    """
    path = Path(path)
    header = read_header(path)
    config = QuantConfig.from_dict(header["quant_config"])
    model_config = VGGTConfig.from_dict(header["model_config"])
    if header["includes_base"]:
        with torch.device("meta"):
            model = VGGT(model_config)
    else:
        if base is None:
            raise CheckpointError(f"{path} stores only the quantized layers; pass the base model it was made from "
                                  f"(weights sha256 {header['base_sha256'][:16]}...)")
        model = base if isinstance(base, nn.Module) else load_vggt(base, config=model_config)
        found = state_dict_sha256(model)
        if found != header["base_sha256"]:
            raise CheckpointError(f"{path} was quantized from base weights sha256 {header['base_sha256'][:16]}..., "
                                  f"but the given base has {found[:16]}...: wrong base model")
    for name, layout in header["layers"].items():
        parent, _, child = name.rpartition(".")
        try:
            setattr(model.get_submodule(parent), child, _build_layer(layout))
        except AttributeError as exc:
            raise CheckpointError(f"{path}: layer {name} does not exist in the model") from exc
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    try:
        model.load_state_dict(tensors, strict=header["includes_base"], assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not match the layout in its header ({exc})") from exc
    attach_record(model, QuantRecord(config, header["base_sha256"]))
    return model.to(device).eval()


def size_report(model: VGGT, path: Optional[Path] = None) -> Dict[str, int]:
    """Bytes of the quantized layers as stored vs the same layers in fp16/fp32, the whole model in
    fp16/fp32, and the file."""
    layers = quantized_layers(model)
    stored = original = 0
    for layer in layers.values():
        stored += sum(t.numel() * t.element_size() for t in layer.state_dict().values())
        original += layer.in_features * layer.out_features + (layer.out_features if layer.bias is not None else 0)
    owned = tuple(f"{name}." for name in layers)
    others = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(owned))
    report = {"quantized_layers_bytes": stored, "quantized_layers_fp16_bytes": 2 * original,
              "quantized_layers_fp32_bytes": 4 * original, "unquantized_fp32_bytes": 4 * others,
              "model_fp16_bytes": 2 * (original + others), "model_fp32_bytes": 4 * (original + others)}
    if path is not None:
        report["file_bytes"] = path.stat().st_size
    return report
