"""Auxiliary training signals that make cross-frame matching learnable: flow to frame 0 and attention
supervision, both from the exact correspondences that ground-truth depth and poses give.

Why (``shared/docs/pose_learning.md``): trained on VGGT's losses alone, the small model's camera tokens
attend uniformly over frames and it never learns to compare frames, so it predicts one pose for all of
them. These losses supervise the geometry where it is observed, per patch:

* **Flow**: a linear probe (``CorrespondenceProbe``, a training-only part that is not saved with the
  model) reads the patch tokens after global block ``block`` and regresses, in patch units, where the
  surface point at each patch centre of frame i lies in frame 0 (its displacement; zero for frame 0).
  This puts the matched displacement into the residual stream, where later frame blocks can pool it
  into the camera token.
* **Attention**: the attention logits of one head of that global block, from each patch of frames >= 1
  over the patch keys of frame 0 (softmax over those keys only; or, ``all_keys``, over every key the block
  sees, so that the head's real attention, and hence its output, is the frame-0 match), are pulled by
  cross-entropy towards the bilinear weights of the true location among the four nearest frame-0 patch
  centres. Measured to route the camera token to frame 0 (study section 8).

Correspondences are taken at patch centres (the pixel ``(patch * i + patch // 2, patch * j + patch //
2)``) with ground-truth depth > 0 that project in front of camera 0 inside its image; occlusion is not
tested (rare in these scenes at the small baselines trained on).
"""

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..model import VGGT


@dataclass(frozen=True)
class PatchCorrespondence:
    """Where each patch centre of each frame lands in frame 0.

    ``displacement`` [B, S, h*w, 2] (x, y) in patch units from the patch's own grid position,
    ``location`` [B, S, h*w, 2] (x, y) on frame 0's patch-centre grid (0..w-1, 0..h-1), ``valid``
    [B, S, h*w] bool.
    """

    displacement: torch.Tensor
    location: torch.Tensor
    valid: torch.Tensor


def patch_correspondence(depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                         patch: int) -> PatchCorrespondence:
    """Depth [B, S, H, W] (0 = none), extrinsics [B, S, 3, 4] (camera i from the frame of camera 0, as
    ``dataset.normalize_window`` makes them), intrinsics [B, S, 3, 3] -> ``PatchCorrespondence``."""
    batch, frames, height, width = depth.shape
    grid_h, grid_w = height // patch, width // patch
    centre = patch // 2
    rows = torch.arange(grid_h, device=depth.device) * patch + centre
    cols = torch.arange(grid_w, device=depth.device) * patch + centre
    d = depth[:, :, rows][:, :, :, cols].reshape(batch, frames, -1)                       # [B, S, N]
    v, u = torch.meshgrid(rows.to(depth.dtype), cols.to(depth.dtype), indexing="ij")
    pixels = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], -1)  # [N, 3]
    rays = torch.einsum("bsij,nj->bsni", torch.linalg.inv(intrinsics), pixels)
    in_camera = rays * d[..., None]                                                       # [B, S, N, 3]
    rotation, translation = extrinsics[..., :3], extrinsics[..., 3]
    # camera 0 coordinates: R_i^T (X_i - t_i)
    in_first = torch.einsum("bsji,bsnj->bsni", rotation, in_camera - translation[:, :, None])
    projected = torch.einsum("bij,bsnj->bsni", intrinsics[:, 0], in_first)
    z = projected[..., 2]
    pixel_first = projected[..., :2] / z.clamp(min=1e-6)[..., None]
    valid = (d > 0) & (z > 1e-6) & (pixel_first[..., 0] >= 0) & (pixel_first[..., 0] <= width - 1) \
        & (pixel_first[..., 1] >= 0) & (pixel_first[..., 1] <= height - 1)
    # Invalid entries (sky, behind camera 0) get location 0: finite, so that gathers on them stay in range.
    location = torch.where(valid[..., None], (pixel_first - centre) / patch, torch.zeros_like(pixel_first))
    own = torch.stack([torch.arange(grid_w, device=depth.device).repeat(grid_h),
                       torch.arange(grid_h, device=depth.device).repeat_interleave(grid_w)], -1).to(depth.dtype)
    return PatchCorrespondence(displacement=location - own, location=location, valid=valid)


def bilinear_targets(location: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Locations [..., 2] (x, y) on a patch-centre grid -> weights [..., grid_h * grid_w] over its
    cells: the bilinear weights of the four nearest centres (locations clamped onto the grid)."""
    x = location[..., 0].clamp(0, grid_w - 1)
    y = location[..., 1].clamp(0, grid_h - 1)
    x0, y0 = x.floor().clamp(max=max(grid_w - 2, 0)), y.floor().clamp(max=max(grid_h - 2, 0))
    fx, fy = x - x0, y - y0
    weights = torch.zeros(*location.shape[:-1], grid_h * grid_w, dtype=location.dtype, device=location.device)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            index = ((y0 + dy).clamp(max=grid_h - 1) * grid_w + (x0 + dx).clamp(max=grid_w - 1)).long()
            weights.scatter_add_(-1, index[..., None], (wy * wx)[..., None])
    return weights


class CorrespondenceProbe(nn.Module):
    """Training-only part: hooks one global block of ``model.aggregator`` and turns what it saw into the
    flow and attention losses (see the module docstring). ``attach`` before the forward pass, ``losses``
    after it; ``detach`` removes the hooks. Holds the flow read-out (Linear C -> 2)."""

    def __init__(self, model: VGGT, block: int, head: int = 0, all_keys: bool = False) -> None:
        super().__init__()
        aggregator = model.aggregator
        if not 0 <= block < aggregator.depth:
            raise ValueError(f"correspondence block must be in 0..{aggregator.depth - 1}, got {block}")
        attention = aggregator.global_blocks[block].attn
        if not 0 <= head < attention.num_heads:
            raise ValueError(f"attention head must be in 0..{attention.num_heads - 1}, got {head}")
        self.block, self.head, self.all_keys = block, head, all_keys
        self.patch_start = aggregator.patch_start_idx
        self.patch = aggregator.patch_size
        self.flow = nn.Linear(model.config.embed_dim, 2)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)
        self._model = [model]        # a list, so the model is not registered as a submodule
        self._seen: Dict[str, torch.Tensor] = {}
        self._handles = []

    def attach(self) -> None:
        aggregator = self._model[0].aggregator
        block = aggregator.global_blocks[self.block]

        def keep_attention_input(module, args, kwargs):
            self._seen["attention_input"], self._seen["pos"] = args[0], kwargs["pos"]

        def keep_output(module, args, kwargs, output):
            self._seen["tokens"] = output

        self._handles = [block.attn.register_forward_pre_hook(keep_attention_input, with_kwargs=True),
                         block.register_forward_hook(keep_output, with_kwargs=True)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen = [], {}

    def _head_logits(self, batch: int, frames: int, tokens_per_frame: int) -> torch.Tensor:
        """Logits of one head from the patch queries of frames 1..: [B, S-1, N, N] over frame 0's patch keys,
        or with ``all_keys`` [B, S-1, N, S*P] over every key the block attends to (frame 0's patches come
        first there, from index ``patch_start``)."""
        attention = self._model[0].aggregator.global_blocks[self.block].attn
        x, pos = self._seen["attention_input"], self._seen["pos"]
        dim, hd = attention.head_dim * attention.num_heads, attention.head_dim
        weight = attention.qkv.weight
        bias = attention.qkv.bias
        rows = [slice(self.head * hd, (self.head + 1) * hd), slice(dim + self.head * hd, dim + (self.head + 1) * hd)]
        q, k = (F.linear(x, weight[r], None if bias is None else bias[r]).unsqueeze(1) for r in rows)
        q, k = attention.q_norm(q), attention.k_norm(k)
        if attention.rope is not None:
            q, k = attention.rope(q, pos), attention.rope(k, pos)
        q = q[:, 0].reshape(batch, frames, tokens_per_frame, hd)[:, 1:, self.patch_start:]
        k = k[:, 0] if self.all_keys else k[:, 0].reshape(batch, frames, tokens_per_frame, hd)[:, 0, self.patch_start:]
        return torch.einsum("bsnd,bmd->bsnm", q.float(), k.float()) / hd ** 0.5

    def _key_targets(self, weights: torch.Tensor, keys: int) -> torch.Tensor:
        """Weights over frame 0's patches [..., N] -> over the logits' keys [..., keys]."""
        if not self.all_keys:
            return weights
        return F.pad(weights, (self.patch_start, keys - self.patch_start - weights.shape[-1]))

    def losses(self, target: Dict[str, torch.Tensor], flow_weight: float, attention_weight: float
               ) -> Dict[str, torch.Tensor]:
        """``flow`` (smooth L1 in patch units) and ``attention`` (soft cross-entropy) for the batch just
        run; ``target`` as ``dataset.normalize_window`` returns it."""
        if "tokens" not in self._seen:
            raise RuntimeError("CorrespondenceProbe.losses before a forward pass with the probe attached")
        images = target["images"]
        batch, frames, _, height, width = images.shape
        grid_h, grid_w = height // self.patch, width // self.patch
        truth = patch_correspondence(target["depth"], target["extrinsics"], target["intrinsics"], self.patch)
        tokens = self._seen["tokens"]
        tokens_per_frame = tokens.shape[1] // frames
        out: Dict[str, torch.Tensor] = {}
        if flow_weight:
            patches = tokens.reshape(batch, frames, tokens_per_frame, -1)[:, :, self.patch_start:].float()
            error = F.smooth_l1_loss(self.flow(patches), truth.displacement, reduction="none").sum(-1)
            out["flow"] = (error * truth.valid).sum() / truth.valid.sum().clamp(min=1)
        if attention_weight and frames > 1:
            logits = self._head_logits(batch, frames, tokens_per_frame)
            weights = self._key_targets(bilinear_targets(truth.location[:, 1:], grid_h, grid_w), logits.shape[-1])
            valid = truth.valid[:, 1:]
            cross_entropy = -(weights * logits.log_softmax(-1)).sum(-1)
            out["attention"] = (cross_entropy * valid).sum() / valid.sum().clamp(min=1)
        return out


def patch_matching_accuracy(probe: CorrespondenceProbe, target: Dict[str, torch.Tensor]) -> Optional[float]:
    """Top-1 of the supervised head: the fraction of valid patches of frames >= 1 whose highest-logit
    frame-0 key is one of the (up to four) cells the true location falls between."""
    images = target["images"]
    batch, frames, _, height, width = images.shape
    if frames < 2 or "attention_input" not in probe._seen:
        return None
    truth = patch_correspondence(target["depth"], target["extrinsics"], target["intrinsics"], probe.patch)
    tokens_per_frame = probe._seen["tokens"].shape[1] // frames
    logits = probe._head_logits(batch, frames, tokens_per_frame)
    weights = probe._key_targets(bilinear_targets(truth.location[:, 1:], height // probe.patch, width // probe.patch),
                                 logits.shape[-1])
    hit = weights.gather(-1, logits.argmax(-1, keepdim=True))[..., 0] > 0
    valid = truth.valid[:, 1:]
    return float((hit & valid).sum() / valid.sum().clamp(min=1))
