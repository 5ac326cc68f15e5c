"""Reuse of per-frame aggregator work across overlapping windows.

What in VGGT looks at one frame only (``model/aggregator.py``): the DINOv2 patch embedding (its blocks attend
within the frame) and the first frame block, whose input is the frame's patch tokens plus camera and register
tokens that depend only on whether the frame is its window's first. Everything after it (global attention,
then frame blocks on globally mixed tokens) depends on the whole window. ``FrameTokenCache`` keeps, per frame
of the last window, its patch tokens and its first frame block output with the role that was computed for;
the next window computes patch tokens for its new frames only, and the first block for its new frames and for
a kept frame whose role changed (the frame that becomes the new window's first). With windows of 8 every 4
that is 4 of 8 patch embeddings and 5 of 8 first blocks.

Outputs equal recomputing bit for bit: each frame's work is the same computation on the same inputs, and the
kernels behind it give a row the same result whatever the other rows of the batch are (GEMMs, attention per
frame, LayerNorm per token; tested against the plain forward). The exception is activation quantization
with one dynamic scale per tensor, which mixes frames: ``reuse_problem`` names it and the estimator then
recomputes.
"""

from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence

import torch
from torch import nn

from ..model.aggregator import Aggregator
from ..quant import QuantLinear


def reuse_problem(model: nn.Module) -> Optional[str]:
    """Why ``model``'s per-frame work is not a function of each frame alone, or None when it is."""
    aggregator = model.aggregator
    for name, module in [*aggregator.patch_embed.named_modules(prefix="patch_embed"),
                         *aggregator.frame_blocks[0].named_modules(prefix="frame_blocks.0")]:
        if (isinstance(module, QuantLinear) and module.act_quantizer is not None and module.act_quantizer.dynamic
                and module.a_spec.granularity == "per_tensor"):
            return (f"aggregator.{name} quantizes activations with one dynamic scale per tensor, which mixes the "
                    "frames of a window")
    return None


@dataclass
class _FrameWork:
    patches: torch.Tensor                    # [h*w, C] DINOv2 patch tokens
    first: Optional[bool] = None             # the role ``block`` was computed for
    block: Optional[torch.Tensor] = None     # [P, C] output of the first frame block


class FrameTokenCache:
    """Per-frame work of the frames of the last window, keyed by frame (e.g. (stamp, camera)); frames of older
    windows are dropped, so it holds one window's worth. ``computed_patches`` and ``computed_blocks`` count the
    frames each part was computed for."""

    def __init__(self) -> None:
        self._frames: Dict[Hashable, _FrameWork] = {}
        self.computed_patches = self.computed_blocks = 0

    def __len__(self) -> int:
        return len(self._frames)

    def frame_tokens(self, aggregator: Aggregator, images: torch.Tensor, keys: Sequence[Hashable]) -> torch.Tensor:
        """The first frame block's output [S, P, C] for one window ``images`` [S, 3, H, W] (or [1, S, 3, H, W])
        whose frames are ``keys`` (one per image, unique), for ``Aggregator.forward(frame_tokens=...)``."""
        images = images.reshape(-1, *images.shape[-3:])
        if len(keys) != len(images) or len(set(keys)) != len(keys):
            raise ValueError(f"need one distinct key per image, got {len(keys)} keys for {len(images)} images")
        height, width = images.shape[-2:]
        # a frame padded into a window of larger images is another input: the size is part of the key
        keys = [(key, height, width) for key in keys]
        kept = {key: self._frames[key] for key in keys if key in self._frames}
        new = [i for i, key in enumerate(keys) if key not in kept]
        if new:
            patches = aggregator.patch_tokens(images[new])
            kept.update({keys[i]: _FrameWork(patches[row]) for row, i in enumerate(new)})
            self.computed_patches += len(new)
        work: List[_FrameWork] = [kept[key] for key in keys]
        stale = [i for i, frame in enumerate(work) if frame.first != (i == 0)]
        if stale:
            first = torch.tensor([i == 0 for i in stale], device=images.device)
            blocks = aggregator.frame_tokens(torch.stack([work[i].patches for i in stale]), first, height, width)
            for row, i in enumerate(stale):
                work[i].first, work[i].block = i == 0, blocks[row]
            self.computed_blocks += len(stale)
        self._frames = kept    # only this window's frames can come back in the next one
        return torch.stack([frame.block for frame in work])
