"""Bilinear sampling and sin/cos embeddings used by the tracker."""

from typing import Tuple

import torch
import torch.nn.functional as F


def bilinear_sampler(input: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``grid_sample`` with pixel coordinates: input [N, C, H, W], coords [N, h, w, 2] as (x, y)
    with 0 at the centre of the first pixel (align_corners=True) -> [N, C, h, w]."""
    height, width = input.shape[-2:]
    scale = coords.new_tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)])
    grid = coords.to(input.dtype) * scale.to(input.dtype) - 1
    return F.grid_sample(input, grid, align_corners=True, padding_mode=padding_mode)


def sample_features4d(input: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Features [B, C, H, W] sampled at points [B, R, 2] (x, y) -> [B, R, C]."""
    feats = bilinear_sampler(input, coords.unsqueeze(2))  # [B, C, R, 1]
    return feats.squeeze(-1).permute(0, 2, 1)


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[M] -> [M, dim] = [sin, cos] with frequencies 10000**(-k/(dim/2)), in float64."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.reshape(-1, 1).double() * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def grid_sincos_embed(dim: int, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Fixed 2D embedding of a feature grid: [1, dim, H, W]; first half embeds x, second half y."""
    grid_h, grid_w = grid_hw
    ys, xs = torch.meshgrid(torch.arange(grid_h, dtype=torch.float32),
                            torch.arange(grid_w, dtype=torch.float32), indexing="ij")
    embed = torch.cat([_sincos_1d(dim // 2, xs), _sincos_1d(dim // 2, ys)], dim=1)
    return embed.reshape(1, grid_h, grid_w, dim).permute(0, 3, 1, 2)


def flow_embedding(flows: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, N, 2] (x, y) displacements -> [B, N, 2*dim]: interleaved sin/cos of x, then of y."""
    div_term = torch.arange(0, dim, 2, device=flows.device, dtype=torch.float32) * (1000.0 / dim)
    parts = []
    for coordinate in (flows[..., 0:1], flows[..., 1:2]):
        angles = coordinate * div_term
        parts.append(torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)
