"""Non-overlapping patch projection."""

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Conv2d(k=stride=patch_size): [N, 3, H, W] -> [N, (H/p)*(W/p), embed_dim], row-major patches."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 1024) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size "
                             f"{self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)
