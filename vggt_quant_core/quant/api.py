"""One entry point: ``quantize(model, QuantConfig(...))`` replaces the target Linears by ``QuantLinear``s."""

import contextlib
import hashlib
import logging
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from .config import QuantConfig
from .linear import QuantLinear
from .observers import observe_inputs
from .recipes import RECIPES
from .record import QuantRecord, attach_record
from .targets import RESIDUAL_BRANCH_OUTPUTS, preceding_norm, target_layers
from .transforms import ChannelScale, InputTransform, KroneckerAffine, RandomHadamard, smoothing_scale

log = logging.getLogger(__name__)

# Per-layer Hadamard seeds: distinct for every layer, reproducible from the config seed.
_SEED_STRIDE = 1_000_003


def quantized_layers(model: nn.Module) -> Dict[str, QuantLinear]:
    """All QuantLinear modules by name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


@contextlib.contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily turn off weight (float-state layers) and activation quantization everywhere."""
    layers = list(quantized_layers(model).values())
    previous = [layer.quantization_enabled for layer in layers]
    for layer in layers:
        layer.quantization_enabled = False
    try:
        yield
    finally:
        for layer, state in zip(layers, previous):
            layer.quantization_enabled = state


def fuse_residual_epilogues(model: nn.Module, enabled: bool = True) -> int:
    """Defer the epilogue of the Linears whose output is a LayerScale'd residual branch (attn.proj, mlp.fc2),
    so that it runs fused with ``x + gamma * y`` (``QuantLinear.defer_epilogue``; inference only: their
    forward then returns a ``DeferredOutput``, not a tensor). Returns how many layers were switched."""
    layers = [layer for name, layer in quantized_layers(model).items() if name.endswith(RESIDUAL_BRANCH_OUTPUTS)]
    for layer in layers:
        layer.defer_epilogue = enabled
    return len(layers)


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of all tensors (names, shapes and float32 values, in sorted order): identifies base weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        values = tensor.detach().float().cpu().contiguous()
        digest.update(f"{name}:{tuple(values.shape)}:".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def build_transform(config: QuantConfig, n: int, layer_index: int) -> InputTransform:
    recipe = RECIPES[config.method]
    seed = config.seed * _SEED_STRIDE + 2 * layer_index
    steps = []
    if recipe.rotate:
        steps.append(RandomHadamard(n, seed=seed))
    if recipe.smooth:
        steps.append(ChannelScale(n))
    if recipe.affine:
        steps.append(KroneckerAffine(n, seed=seed))
    return InputTransform(steps)


def quantize_linear(linear: nn.Linear, config: QuantConfig, layer_index: int = 0,
                    smoothing: Optional[torch.Tensor] = None, smoothing_in_norm: bool = False) -> QuantLinear:
    """A frozen QuantLinear for one Linear outside a model, with the transform ``quantize`` gives its
    ``layer_index``-th target layer (benchmarks). ``smoothing`` [in_features] sets the scales of a smoothing
    step; ``smoothing_in_norm`` drops a leading one, as ``quantize`` does where it fuses it into a LayerNorm."""
    transform = build_transform(config, linear.in_features, layer_index)
    scale_at = transform.index(ChannelScale.kind)
    if scale_at is not None and smoothing is not None:
        transform.steps[scale_at].set_scale(smoothing)
    if scale_at == 0 and smoothing_in_norm:
        del transform.steps[0]
    layer = QuantLinear.from_linear(linear, transform, config.w_spec(), config.a_spec())
    layer.freeze()
    return layer


def wrap_layers(model: nn.Module, config: QuantConfig) -> Dict[str, QuantLinear]:
    """Replace the target Linears by float-state QuantLinears (quantizers configured, transforms at
    identity/random init). Returns them by name."""
    layers = {}
    for index, name in enumerate(target_layers(model, config.include_patch_embed, config.include_camera_trunk)):
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name} is {type(linear).__name__}, not nn.Linear (already quantized?)")
        layer = QuantLinear.from_linear(linear, build_transform(config, linear.in_features, index),
                                        config.w_spec(), config.a_spec(), config.a_dynamic, config.learnable_clip)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
        layers[name] = layer
    return layers


@torch.no_grad()
def run_calibration_images(model: nn.Module, images: Sequence[torch.Tensor]) -> None:
    """Forward each window [S, 3, H, W] (or [B, S, 3, H, W]) in float32, for statistics."""
    device = next(model.parameters()).device
    for window in images:
        model(window.to(device=device, dtype=torch.float32))


@torch.no_grad()
def initialise_from_statistics(model: nn.Module, layers: Dict[str, QuantLinear], config: QuantConfig,
                               images: Sequence[torch.Tensor]) -> None:
    """Smoothing scales c = max|X'|^a / max|W'|^(1-a) (X', W' after the rotation, if any) and static
    activation ranges, from per-channel maxima over ``images`` with quantization off."""
    recipe = RECIPES[config.method]
    # Statistics are taken right before the smoothing step (after the rotation, if any); without
    # smoothing, after the whole transform. Every layer of a recipe has the same step order.
    upto = next(iter(layers.values())).transform.index(ChannelScale.kind)
    with quantization_disabled(model), observe_inputs(layers, {"x": upto}, moments=False) as stats_by_layer:
        run_calibration_images(model, images)
    for name, layer in layers.items():
        stats = stats_by_layer[name]["x"]
        scale = None
        if recipe.smooth:
            rotated_weight = layer.transform.fold_weight(layer.weight.float(), upto=upto)
            scale = smoothing_scale(stats.channel_absmax.to(layer.weight.device), rotated_weight, config.smooth_alpha)
            layer.transform.steps[upto].set_scale(scale)
        if layer.act_quantizer is not None and not config.a_dynamic:
            divisor = 1.0 if scale is None else scale.cpu()  # ranges after the smoothing division
            high = (stats.channel_absmax / divisor).max()
            low = (stats.channel_min / divisor).min().clamp(max=0)
            layer.act_quantizer.calibrate_static(high, low)


def fuse_leading_scale_into_norm(model: nn.Module, name: str, layer: QuantLinear) -> bool:
    """Fold a leading ChannelScale into the LayerNorm feeding the layer (exact: LN(x) * g / c + b / c).
    Returns whether it was fused."""
    norm_name = preceding_norm(name)
    if norm_name is None or layer.transform.index(ChannelScale.kind) != 0:
        return False
    norm = model.get_submodule(norm_name)
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
        return False
    scale = layer.transform.steps[0].scale.detach().to(norm.weight)
    with torch.no_grad():
        norm.weight.div_(scale)
        if norm.bias is not None:
            norm.bias.div_(scale)
    del layer.transform.steps[0]
    layer.fused_norm = norm_name
    return True


def quantize(model: nn.Module, config: QuantConfig = QuantConfig(),
             calibration_images: Optional[Iterable[torch.Tensor]] = None,
             freeze: bool = True, log_fn: Callable[[str], None] = log.info) -> nn.Module:
    """Quantize ``model`` in place and return it.

    Args:
        model: a VGGT (float weights).
        config: method, bits and granularities.
        calibration_images: windows [S, 3, H, W] in [0, 1] for the activation statistics that
            smoothing (SmoothQuant, DSFQ) and static activation ranges need; a few windows suffice.
        freeze: quantize the weights to integer codes now (False keeps the float state, e.g. for a
            calibration that learns transforms and clipping before freezing).
    """
    if quantized_layers(model):
        raise ValueError("model is already quantized")
    images = list(calibration_images or [])
    if config.needs_calibration_data and not images:
        raise ValueError(f"{config.label} needs calibration_images (activation statistics for smoothing or "
                         "static activation ranges)")
    on_meta = any(p.is_meta for p in model.parameters())  # shape-only dry runs of full-size models
    base_sha256 = None if on_meta else state_dict_sha256(model)
    layers = wrap_layers(model, config)
    log_fn(f"quantize: {config.label}, {len(layers)} Linear layers wrapped")
    if images and config.needs_calibration_data:
        initialise_from_statistics(model, layers, config, images)
    attach_record(model, QuantRecord(config, base_sha256))
    if freeze:
        freeze_model(model, config)
    return model


def freeze_model(model: nn.Module, config: QuantConfig) -> None:
    """Quantize all weights to codes and fold what is exactly foldable (float -> frozen state)."""
    fused = 0
    for name, layer in quantized_layers(model).items():
        layer.freeze()
        if config.fuse_smoothing:
            fused += fuse_leading_scale_into_norm(model, name, layer)
    if fused:
        log.info("quantize: smoothing of %d layers fused into their LayerNorm", fused)
