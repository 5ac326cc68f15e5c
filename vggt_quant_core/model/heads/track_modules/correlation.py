"""Multi-scale correlation lookup between track features and frame feature maps."""

import math
from typing import List

import torch
import torch.nn.functional as F

from .sampling import bilinear_sampler


class CorrBlock:
    """Average-pooled pyramid of feature maps [B, S, C, H, W]; ``corr_sample`` correlates track
    features with every level and samples a (2r+1)^2 window around each track."""

    def __init__(self, fmaps: torch.Tensor, num_levels: int, radius: int) -> None:
        self.radius = radius
        self.pyramid: List[torch.Tensor] = [fmaps]
        for _ in range(num_levels - 1):
            batch, frames, channels, height, width = self.pyramid[-1].shape
            pooled = F.avg_pool2d(self.pyramid[-1].reshape(batch * frames, channels, height, width), 2, stride=2)
            self.pyramid.append(pooled.reshape(batch, frames, channels, *pooled.shape[-2:]))
        offsets = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        # The official window pairs the row offset with x and the column offset with y, i.e. the
        # sampled window is stored transposed; the learned corr_mlp depends on that order.
        row, col = torch.meshgrid(offsets, offsets, indexing="ij")
        self.delta = torch.stack([row, col], dim=-1).view(1, 2 * radius + 1, 2 * radius + 1, 2)

    def corr_sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """targets [B, S, N, C], coords [B, S, N, 2] (x, y, level-0 pixels) -> [B, S, N, L*(2r+1)^2]."""
        batch, frames, num_tracks, channels = targets.shape
        sampled = []
        for level, fmaps in enumerate(self.pyramid):
            height, width = fmaps.shape[-2:]
            corr = torch.matmul(targets, fmaps.view(batch, frames, channels, height * width)) / math.sqrt(channels)
            centroid = coords.reshape(batch * frames * num_tracks, 1, 1, 2) / (2 ** level)
            window = bilinear_sampler(corr.reshape(batch * frames * num_tracks, 1, height, width),
                                      centroid + self.delta.to(coords.dtype), padding_mode="zeros")
            sampled.append(window.view(batch, frames, num_tracks, -1))
        return torch.cat(sampled, dim=-1)
