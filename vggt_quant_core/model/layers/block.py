"""Pre-norm transformer block used by DINOv2, the aggregator and the camera trunk."""

from typing import Optional

import torch
from torch import nn

from .attention import Attention
from .layer_scale import LayerScale
from .mlp import Mlp
from .rope import RotaryPositionEmbedding2D


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``; [B, N, C] -> [B, N, C].

    ``norm_eps`` is 1e-5 in the aggregator and camera trunk and 1e-6 in DINOv2. A falsy
    ``init_values`` means no LayerScale.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, init_values: Optional[float] = None,
                 norm_eps: float = 1e-5, qk_norm: bool = False,
                 rope: Optional[RotaryPositionEmbedding2D] = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm,
                              rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        return x + self.ls2(self.mlp(self.norm2(x)))
