"""The model behind the node: one loading function, and the small interface the node calls.

``load_estimator`` is the single place where the node gets a model: presets, float checkpoints and
quantized checkpoints (recognised by their header). The node only needs an ``Estimator``: a callable
from [S, 3, H, W] images in [0, 1] to VGGT's prediction dict, plus what diagnostics report. Tests
substitute doubles.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import torch

from vggt_quant_core.inference import resolve_device, resolve_precision, run_vggt, storage_dtype
from vggt_quant_core.model import VGGT
from vggt_quant_core.presets import load_model
from vggt_quant_core.quant import quant_record


@dataclass
class Estimator:
    """A loaded model and how it runs."""

    predict: Callable[[torch.Tensor], Dict[str, torch.Tensor]]  # images [S, 3, H, W] in [0, 1] -> predictions
    image_size: int          # preprocessing width (crop mode) the model expects
    description: str         # e.g. "preset vggt-tiny-random" or "checkpoint /path/model.pt"
    backend: str             # device and arithmetic, e.g. "cpu fp32"
    bits: int                # bits per stored weight of the aggregator's matrices


def load_estimator(checkpoint: str = "", preset: str = "", device: str = "auto", precision: str = "auto"
                   ) -> Estimator:
    """Load a checkpoint (file or directory) or a preset; raises ``CheckpointError``/``ValueError``
    with a one-line reason (missing file, unknown preset, CUDA unavailable, ...)."""
    torch_device = resolve_device(device)
    model, image_size, description = load_model(Path(checkpoint) if checkpoint else None, preset or None,
                                                device=torch_device)
    return estimator_from_model(model, image_size, description, precision)


def estimator_from_model(model: VGGT, image_size: int, description: str, precision: str = "auto") -> Estimator:
    """An ``Estimator`` around a loaded model (as ``presets.load_model`` returns it), on the model's device."""
    torch_device = next(model.parameters()).device
    autocast = resolve_precision(precision, model, torch_device)
    stored = storage_dtype(model)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]
    quantized = quant_record(model)
    return Estimator(predict=functools.partial(run_vggt, model, precision=precision), image_size=image_size,
                     description=description, backend=f"{torch_device} {name}",
                     bits=quantized.config.w_bits if quantized is not None else stored.itemsize * 8)
