"""The model behind a stream: one loading function, and the small interface the reconstruction calls.

``load_estimator`` is the single place where a stream gets a model: presets, float checkpoints and
quantized checkpoints (recognised by their header). The reconstruction only needs an ``Estimator``: a
callable from [S, 3, H, W] images in [0, 1] (and a key per image) to VGGT's prediction dict, plus what
diagnostics report. Tests substitute doubles.
"""

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Hashable, Optional, Sequence

import torch

from ..inference import resolve_device, resolve_precision, run_vggt, storage_dtype
from ..model import VGGT
from ..presets import load_model
from ..quant import quant_record
from .frame_cache import FrameTokenCache, reuse_problem

log = logging.getLogger(__name__)
# images [S, 3, H, W] in [0, 1], and one key per image naming its frame (None: nothing to reuse) -> predictions
Predict = Callable[[torch.Tensor, Optional[Sequence[Hashable]]], Dict[str, torch.Tensor]]


@dataclass
class Estimator:
    """A loaded model and how it runs."""

    predict: Predict
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
    """An ``Estimator`` around a loaded model (as ``presets.load_model`` returns it), on the model's device. Given
    frame keys, it reuses the per-frame work of the frames the previous call shared (``FrameTokenCache``)
    unless the model's per-frame work mixes frames (``reuse_problem``: it then recomputes, and says so once)."""
    torch_device = next(model.parameters()).device
    autocast = resolve_precision(precision, model, torch_device)
    stored = storage_dtype(model)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]
    quantized = quant_record(model)
    problem = reuse_problem(model)
    if problem:
        log.warning("frames will not be reused across windows: %s", problem)
    cache = None if problem else FrameTokenCache()

    def predict(images: torch.Tensor, keys: Optional[Sequence[Hashable]] = None) -> Dict[str, torch.Tensor]:
        reuse = cache is not None and keys is not None
        frame_tokens = functools.partial(cache.frame_tokens, keys=keys) if reuse else None
        return run_vggt(model, images, precision=precision, frame_tokens=frame_tokens)

    return Estimator(predict=predict, image_size=image_size,
                     description=description, backend=f"{torch_device} {name}",
                     bits=quantized.config.w_bits if quantized is not None else stored.itemsize * 8)
