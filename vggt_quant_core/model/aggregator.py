"""The VGGT aggregator: DINOv2 patch tokens + camera/register tokens, alternating attention."""

from typing import Iterable, List, Optional, Tuple

import torch
from torch import nn

from .config import VGGTConfig
from .layers import Block, DinoVisionTransformer, RotaryPositionEmbedding2D, grid_positions

# ImageNet statistics; the model normalises its [0, 1] input itself.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_special_tokens(tokens: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """[1, 2, X, C] learned tokens -> [B*S, X, C].

    Slot 0 goes to the first frame of every sequence (the reference frame), slot 1 to all others.
    """
    first = tokens[:, :1].expand(batch, 1, *tokens.shape[2:])
    others = tokens[:, 1:].expand(batch, frames - 1, *tokens.shape[2:])
    return torch.cat([first, others], dim=1).reshape(batch * frames, *tokens.shape[2:])


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

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images [B, S, 3, H, W] -> initial tokens [B*S, P, C] and RoPE positions [B*S, P, 2]."""
        batch, frames, channels, height, width = images.shape
        if channels != 3:
            raise ValueError(f"Expected 3 input channels, got {channels}")
        mean = torch.tensor(_IMAGENET_MEAN, device=images.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=images.device).view(1, 1, 3, 1, 1)
        patch_tokens = self.patch_embed(((images - mean) / std).reshape(batch * frames, 3, height, width))
        tokens = torch.cat([
            expand_special_tokens(self.camera_token, batch, frames),
            expand_special_tokens(self.register_token, batch, frames),
            patch_tokens,
        ], dim=1)
        pos = grid_positions(batch * frames, height // self.patch_size, width // self.patch_size,
                             self.patch_start_idx, images.device)
        return tokens, pos

    def forward(self, images: torch.Tensor, keep_layers: Optional[Iterable[int]] = None
                ) -> Tuple[List[Optional[torch.Tensor]], int]:
        """Run all layers; return ``depth`` outputs [B, S, P, 2C] and ``patch_start_idx``.

        ``keep_layers`` (indices, negative allowed) limits which outputs are kept; the others are
        ``None``. The heads read only a few layers, and keeping all of them costs
        depth * B*S*P*2C floats (2.7 GB for VGGT-1B at S=10, 518x518).
        """
        batch, frames = images.shape[:2]
        keep = set(range(self.depth)) if keep_layers is None else {i % self.depth for i in keep_layers}
        tokens, pos = self.embed(images)
        num_tokens, dim = tokens.shape[1:]
        global_pos = pos.reshape(batch, frames * num_tokens, 2)
        outputs: List[Optional[torch.Tensor]] = []
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks):
            # Frame attention on (B*S, P, C), global attention on (B, S*P, C).
            tokens = frame_block(tokens.reshape(batch * frames, num_tokens, dim), pos=pos)
            frame_out = tokens
            tokens = global_block(tokens.reshape(batch, frames * num_tokens, dim), pos=global_pos)
            if len(outputs) in keep:
                outputs.append(torch.cat([frame_out.reshape(batch, frames, num_tokens, dim),
                                          tokens.reshape(batch, frames, num_tokens, dim)], dim=-1))
            else:
                outputs.append(None)
        return outputs, self.patch_start_idx
