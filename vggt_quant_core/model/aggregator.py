"""The VGGT aggregator: DINOv2 patch tokens + camera/register tokens, alternating attention."""

from typing import Iterable, List, Optional, Tuple

import torch
from torch import nn

from .config import VGGTConfig
from .layers import Block, DinoVisionTransformer, RotaryPositionEmbedding2D, grid_positions

# ImageNet statistics; the model normalises its [0, 1] input itself.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def special_tokens(tokens: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """[1, 2, X, C] learned tokens -> [N, X, C] for N frames: slot 0 where ``first`` [N] bool (the first frame of
    a sequence, its reference frame), slot 1 for all others."""
    return tokens[0].index_select(0, (~first).long())


class Aggregator(nn.Module):
    """Images [B, S, 3, H, W] in [0, 1] -> per-layer tokens [B, S, P, 2C] and ``patch_start_idx``.

    Per frame the token sequence is [camera (1), registers (R), patches (h*w)], so P = 1 + R + h*w
    and patch tokens start at 1 + R. Layer i runs frame block i on tokens as (B*S, P, C) (attention
    within a frame), then global block i on (B, S*P, C) (attention across all frames), and its output
    is ``cat(frame_out_i, global_out_i)`` along channels.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        agg, dino = config.aggregator, config.patch_embed
        dim = config.embed_dim
        self.patch_size = config.patch_size
        self.patch_embed = DinoVisionTransformer(
            img_size=config.img_size, patch_size=config.patch_size, embed_dim=dim, depth=dino.depth,
            num_heads=dino.num_heads, mlp_ratio=dino.mlp_ratio,
            num_register_tokens=agg.num_register_tokens, init_values=dino.init_values,
            interpolate_antialias=dino.interpolate_antialias, qkv_bias=dino.qkv_bias,
            proj_bias=dino.proj_bias, ffn_bias=dino.ffn_bias, norm_eps=dino.norm_eps,
        )
        self.rope = RotaryPositionEmbedding2D(frequency=agg.rope_freq)

        def make_blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(dim, agg.num_heads, mlp_ratio=agg.mlp_ratio, qkv_bias=agg.qkv_bias,
                      proj_bias=agg.proj_bias, ffn_bias=agg.ffn_bias, init_values=agg.init_values,
                      qk_norm=agg.qk_norm, rope=self.rope)
                for _ in range(agg.depth)
            )

        self.frame_blocks = make_blocks()
        self.global_blocks = make_blocks()
        self.depth = agg.depth
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, agg.num_register_tokens, dim))
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)
        self.patch_start_idx = 1 + agg.num_register_tokens

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] in [0, 1] -> DINOv2 patch tokens [N, h*w, C] (ImageNet-normalised here). Each
        frame attends only within itself, so its tokens do not depend on the other frames."""
        if images.shape[1] != 3:
            raise ValueError(f"Expected 3 input channels, got {images.shape[1]}")
        mean = torch.tensor(_IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return self.patch_embed((images - mean) / std)

    def frame_inputs(self, patch_tokens: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Patch tokens [N, h*w, C] -> [camera, registers, patches] tokens [N, P, C]; ``first`` [N] bool marks
        the first frame of a sequence (the reference frame), which gets the first slot of the learned tokens."""
        return torch.cat([special_tokens(self.camera_token, first), special_tokens(self.register_token, first),
                          patch_tokens], dim=1)

    def positions(self, count: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """RoPE positions [count, P, 2] of the tokens of ``count`` frames of ``height`` x ``width`` pixels."""
        return grid_positions(count, height // self.patch_size, width // self.patch_size, self.patch_start_idx,
                              device)

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images [B, S, 3, H, W] -> initial tokens [B*S, P, C] and RoPE positions [B*S, P, 2]."""
        batch, frames, channels, height, width = images.shape
        first = torch.arange(batch * frames, device=images.device) % frames == 0
        tokens = self.frame_inputs(self.patch_tokens(images.reshape(batch * frames, channels, height, width)), first)
        return tokens, self.positions(batch * frames, height, width, images.device)

    def frame_tokens(self, patch_tokens: torch.Tensor, first: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The output [N, P, C] of the first frame block for N frames of ``height`` x ``width`` pixels given by
        their patch tokens [N, h*w, C] and whether each is its sequence's first (``frame_inputs``): the work that
        looks at one frame only. ``forward(frame_tokens=...)`` continues from it."""
        tokens = self.frame_inputs(patch_tokens, first)
        return self.frame_blocks[0](tokens, pos=self.positions(len(tokens), height, width, tokens.device))

    def forward(self, images: torch.Tensor, keep_layers: Optional[Iterable[int]] = None,
                frame_tokens: Optional[torch.Tensor] = None) -> Tuple[List[Optional[torch.Tensor]], int]:
        """Run all layers; return ``depth`` outputs [B, S, P, 2C] and ``patch_start_idx``.

        ``keep_layers`` (indices, negative allowed) limits which outputs are kept; the others are
        ``None``. The heads read only a few layers, and keeping all of them costs
        depth * B*S*P*2C floats (2.7 GB for VGGT-1B at S=10, 518x518).
        ``frame_tokens``: the first frame block's output [B*S, P, C] for these images, computed beforehand
        (``frame_tokens()``, e.g. kept from an earlier window that shared the frames); the per-frame work is then
        skipped.
        """
        batch, frames, _, height, width = images.shape
        keep = set(range(self.depth)) if keep_layers is None else {i % self.depth for i in keep_layers}
        if frame_tokens is None:
            tokens, pos = self.embed(images)
        else:
            tokens, pos = frame_tokens, self.positions(batch * frames, height, width, images.device)
            if tokens.shape[:2] != pos.shape[:2]:
                raise ValueError(f"frame_tokens {tuple(tokens.shape)} do not fit {batch * frames} frames of "
                                 f"{pos.shape[1]} tokens")
        num_tokens, dim = tokens.shape[1:]
        global_pos = pos.reshape(batch, frames * num_tokens, 2)
        outputs: List[Optional[torch.Tensor]] = []
        for index, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            # Frame attention on (B*S, P, C), global attention on (B, S*P, C).
            if index or frame_tokens is None:
                tokens = frame_block(tokens.reshape(batch * frames, num_tokens, dim), pos=pos)
            frame_out = tokens
            tokens = global_block(tokens.reshape(batch, frames * num_tokens, dim), pos=global_pos)
            if len(outputs) in keep:
                outputs.append(torch.cat([frame_out.reshape(batch, frames, num_tokens, dim),
                                          tokens.reshape(batch, frames, num_tokens, dim)], dim=-1))
            else:
                outputs.append(None)
        return outputs, self.patch_start_idx
