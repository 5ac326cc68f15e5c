"""Auxiliary training signals that make cross-frame geometry learnable: flow to frame 0, attention
supervision and 3D points, all from the exact correspondences that ground-truth depth and poses give.

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
* **3D points**: two more linear probes regress, per patch, the surface point at the patch centre in
  its own camera (from depth; after an early global block, ``camera_points_block``) and the same point
  in frame 0's camera (after a later one, ``frame0_points_block``), in the window's normalised units.
  Why: flow is mostly rotation at the small baselines trained on, and translation gets no signal from it;
  a relative translation is close to a linear pooling of the differences between the two point sets,
  which the camera token can then read (DUSt3R-style models recover pose from point maps the same way).

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
    [B, S, h*w] bool (seen by frame 0); the surface point at the patch centre ``camera_points`` [B, S,
    h*w, 3] in the patch's own camera and ``frame0_points`` [B, S, h*w, 3] in frame 0's, ``has_depth``
    [B, S, h*w] bool where those are known.
    """

    displacement: torch.Tensor
    location: torch.Tensor
    valid: torch.Tensor
    camera_points: torch.Tensor
    frame0_points: torch.Tensor
    has_depth: torch.Tensor


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
    return PatchCorrespondence(displacement=location - own, location=location, valid=valid, camera_points=in_camera,
                               frame0_points=in_first, has_depth=d > 0)


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


def _zero_linear(features: int, outputs: int) -> nn.Linear:
    """A read-out that starts by predicting zero (no motion, no point): the losses start where a model
    that knows nothing is."""
    linear = nn.Linear(features, outputs)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class CorrespondenceProbe(nn.Module):
    """Training-only part: hooks global blocks of ``model.aggregator`` and turns what they saw into the
    flow, attention and 3D point losses (see the module docstring). ``attach`` before the forward pass,
    ``losses`` after it; ``detach`` removes the hooks. Holds the linear read-outs: flow (C -> 2) and the
    points in the patch's own camera and in frame 0's (C -> 3 each)."""

    def __init__(self, model: VGGT, block: int, head: int = 0, all_keys: bool = False,
                 camera_points_block: Optional[int] = None, frame0_points_block: Optional[int] = None) -> None:
        super().__init__()
        aggregator = model.aggregator
        for name, index in (("correspondence", block), ("camera points", camera_points_block),
                            ("frame-0 points", frame0_points_block)):
            if index is not None and not 0 <= index < aggregator.depth:
                raise ValueError(f"{name} block must be in 0..{aggregator.depth - 1}, got {index}")
        attention = aggregator.global_blocks[block].attn
        if not 0 <= head < attention.num_heads:
            raise ValueError(f"attention head must be in 0..{attention.num_heads - 1}, got {head}")
        self.block, self.head, self.all_keys = block, head, all_keys
        self.point_blocks = {"camera_points": camera_points_block, "frame0_points": frame0_points_block}
        self.patch_start = aggregator.patch_start_idx
        self.patch = aggregator.patch_size
        self.flow = _zero_linear(model.config.embed_dim, 2)
        self.camera_points = _zero_linear(model.config.embed_dim, 3)
        self.frame0_points = _zero_linear(model.config.embed_dim, 3)
        self._model = [model]        # a list, so the model is not registered as a submodule
        self._seen: Dict[str, torch.Tensor] = {}
        self._block_outputs: Dict[int, torch.Tensor] = {}
        self._handles = []

    def attach(self) -> None:
        blocks = self._model[0].aggregator.global_blocks

        def keep_attention_input(module, args, kwargs):
            self._seen["attention_input"], self._seen["pos"] = args[0], kwargs["pos"]

        def keep_output(index):
            def hook(module, args, kwargs, output):
                self._block_outputs[index] = output
            return hook

        hooked = {self.block, *(b for b in self.point_blocks.values() if b is not None)}
        self._handles = [blocks[self.block].attn.register_forward_pre_hook(keep_attention_input, with_kwargs=True)]
        self._handles += [blocks[index].register_forward_hook(keep_output(index), with_kwargs=True)
                          for index in sorted(hooked)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen, self._block_outputs = [], {}, {}

    def _patch_tokens(self, block: int, batch: int, frames: int) -> torch.Tensor:
        """The patch tokens [B, S, h*w, C] (float32) after global block ``block``."""
        tokens = self._block_outputs[block]
        return tokens.reshape(batch, frames, tokens.shape[1] // frames, -1)[:, :, self.patch_start:].float()

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

    def losses(self, target: Dict[str, torch.Tensor], weights: Dict[str, float]) -> Dict[str, torch.Tensor]:
        """The losses whose ``weights`` (by name: ``flow``, ``attention``, ``camera_points``,
        ``frame0_points``) are non-zero, for the batch just run: smooth L1 of the read-outs (flow in patch
        units, points in the window's normalised units), soft cross-entropy of the attention; ``target``
        as ``dataset.normalize_window`` returns it."""
        if self.block not in self._block_outputs:
            raise RuntimeError("CorrespondenceProbe.losses before a forward pass with the probe attached")
        images = target["images"]
        batch, frames, _, height, width = images.shape
        grid_h, grid_w = height // self.patch, width // self.patch
        truth = patch_correspondence(target["depth"], target["extrinsics"], target["intrinsics"], self.patch)
        out: Dict[str, torch.Tensor] = {}

        def read_out_loss(read_out: nn.Module, block: int, goal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            error = F.smooth_l1_loss(read_out(self._patch_tokens(block, batch, frames)), goal, reduction="none")
            return (error.sum(-1) * mask).sum() / mask.sum().clamp(min=1)

        if weights.get("flow"):
            out["flow"] = read_out_loss(self.flow, self.block, truth.displacement, truth.valid)
        for name, block in self.point_blocks.items():
            if weights.get(name):
                if block is None:
                    raise ValueError(f"the probe was built without a block for {name}")
                out[name] = read_out_loss(getattr(self, name), block, getattr(truth, name), truth.has_depth)
        if weights.get("attention") and frames > 1:
            tokens_per_frame = self._block_outputs[self.block].shape[1] // frames
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
    tokens_per_frame = probe._block_outputs[probe.block].shape[1] // frames
    logits = probe._head_logits(batch, frames, tokens_per_frame)
    weights = probe._key_targets(bilinear_targets(truth.location[:, 1:], height // probe.patch, width // probe.patch),
                                 logits.shape[-1])
    hit = weights.gather(-1, logits.argmax(-1, keepdim=True))[..., 0] > 0
    valid = truth.valid[:, 1:]
    return float((hit & valid).sum() / valid.sum().clamp(min=1))
