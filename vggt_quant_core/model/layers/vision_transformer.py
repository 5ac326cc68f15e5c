"""DINOv2 ViT with register tokens: the per-frame patch encoder of VGGT (``aggregator.patch_embed``)."""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .patch_embed import PatchEmbed


class DinoVisionTransformer(nn.Module):
    """[N, 3, H, W] (ImageNet-normalised) -> tokens [N, 1 + R + h*w, C], h = H/p, w = W/p.

    Token order is [cls, R registers, patches]. The learned position embedding covers a square
    grid of ``img_size / patch_size`` patches plus cls; other grids use a bicubic, antialiased
    resize of it (computed in float32). Registers get no position embedding. All LayerNorms use
    ``norm_eps`` (1e-6 in DINOv2).
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, num_register_tokens: int = 4,
                 init_values: float = 1.0, interpolate_antialias: bool = True, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_bias=proj_bias,
                  ffn_bias=ffn_bias, init_values=init_values, norm_eps=norm_eps)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        # Used only by DINOv2 masked training; kept so the official checkpoint loads strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        # DINOv2 (timm) initialisation; real weights come from the checkpoint.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embedding [1, 1 + (H/p)*(W/p), C] for an H x W input."""
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        num_learned = self.pos_embed.shape[1] - 1
        if grid_h * grid_w == num_learned and height == width:
            return self.pos_embed
        side = int(round(num_learned ** 0.5))
        pos_embed = self.pos_embed.float()
        patch_pos = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic",
                                  antialias=self.interpolate_antialias)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([pos_embed[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, 1 + R + h*w, C] before the first block."""
        batch, _, height, width = images.shape
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(height, width)
        return torch.cat([x[:, :1], self.register_tokens.expand(batch, -1, -1), x[:, 1:]], dim=1)

    def forward_features(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.prepare_tokens(images)
        for block in self.blocks:
            x = block(x)
        x_norm = self.norm(x)
        first_patch = 1 + self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1:first_patch],
            "x_norm_patchtokens": x_norm[:, first_patch:],
            "x_prenorm": x,
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised patch tokens [N, h*w, C] (cls and registers are dropped, as VGGT does)."""
        return self.forward_features(images)["x_norm_patchtokens"]
