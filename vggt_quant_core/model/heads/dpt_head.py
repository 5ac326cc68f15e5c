"""DPT dense prediction head (Ranftl et al., 2021) as used by VGGT for depth, points and track features."""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DPTHeadConfig
from .activations import activate_head

# Bilinear resizes are split along the batch above this many output elements (an int32 index
# limit of the GPU kernels).
_MAX_INTERPOLATE_ELEMENTS = 1610612736


def interpolate_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` of [N, C, h, w] to [N, C, *size]."""
    size = (int(size[0]), int(size[1]))
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if elements <= _MAX_INTERPOLATE_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    chunks = x.chunk(elements // _MAX_INTERPOLATE_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in chunks])


def create_uv_grid(width: int, height: int, aspect_ratio: float, dtype=None, device=None) -> torch.Tensor:
    """[height, width, 2] (u, v) grid of pixel centres, spanning +-aspect/diag in u and +-1/diag in v."""
    diagonal = (aspect_ratio ** 2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diagonal, 1.0 / diagonal
    u = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, steps=width,
                       dtype=dtype, device=device)
    v = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, steps=height,
                       dtype=dtype, device=device)
    uu, vv = torch.meshgrid(u, v, indexing="xy")
    return torch.stack([uu, vv], dim=-1)


def _sincos(positions: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """[M] -> [M, dim] = [sin(p*w), cos(p*w)] with w = omega_0**(-k/(dim/2)), computed in float64."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    angles = positions.reshape(-1, 1).double() * (1.0 / omega_0 ** omega)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def position_grid_to_embed(grid: torch.Tensor, dim: int) -> torch.Tensor:
    """[H, W, 2] (u, v) -> [H, W, dim]: first half embeds u, second half v."""
    height, width, _ = grid.shape
    flat = grid.reshape(-1, 2)
    embed = torch.cat([_sincos(flat[:, 0], dim // 2), _sincos(flat[:, 1], dim // 2)], dim=-1)
    return embed.view(height, width, dim)


def apply_pos_embed(x: torch.Tensor, image_width: int, image_height: int, ratio: float = 0.1) -> torch.Tensor:
    """Add ``ratio`` x a fixed sin/cos embedding of the (u, v) grid to a map [N, C, h, w]."""
    grid = create_uv_grid(x.shape[-1], x.shape[-2], aspect_ratio=image_width / image_height,
                          dtype=x.dtype, device=x.device)
    embed = position_grid_to_embed(grid, x.shape[1]) * ratio
    return x + embed.permute(2, 0, 1)[None]


class ResidualConvUnit(nn.Module):
    """``conv2(relu(conv1(relu(x)))) + relu(x)`` with 3x3 convs.

    The skip adds relu(x), not x: the official unit applies an in-place ReLU to its input before
    the convolutions, which rewrites the tensor the skip connection reads.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: (x0 + RCU1(x1)) -> RCU2 -> bilinear resize -> 1x1 ``out_conv``."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None,
                size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if self.has_residual:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(interpolate_bilinear(x, size))


def _make_scratch(in_channels: Sequence[int], features: int) -> nn.Module:
    scratch = nn.Module()
    for level, channels in enumerate(in_channels, start=1):
        setattr(scratch, f"layer{level}_rn", nn.Conv2d(channels, features, kernel_size=3, padding=1, bias=False))
    return scratch


class DPTHead(nn.Module):
    """Tokens of 4 aggregator layers -> a dense map at the image resolution / ``down_ratio``.

    Per frame: shared LayerNorm, 1x1 projection of each level to ``out_channels[k]``, resize to
    4x, 2x, 1x, 0.5x of the patch grid, RefineNet fusion from coarse to fine, then (unless
    ``feature_only``) a conv stack whose last channel is the confidence. Returns
    values [B, S, H, W, output_dim-1] and confidence [B, S, H, W], or features [B, S, C, H', W'].
    Frames are processed in chunks of ``frames_chunk_size`` to bound memory.
    """

    def __init__(self, config: DPTHeadConfig) -> None:
        super().__init__()
        cfg = self.config = config
        channels = cfg.out_channels
        self.norm = nn.LayerNorm(cfg.dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(cfg.dim_in, oc, kernel_size=1) for oc in channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(channels[0], channels[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(channels[1], channels[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(channels[3], channels[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = _make_scratch(channels, cfg.features)
        self.scratch.refinenet1 = FeatureFusionBlock(cfg.features)
        self.scratch.refinenet2 = FeatureFusionBlock(cfg.features)
        self.scratch.refinenet3 = FeatureFusionBlock(cfg.features)
        self.scratch.refinenet4 = FeatureFusionBlock(cfg.features, has_residual=False)
        if cfg.feature_only:
            self.scratch.output_conv1 = nn.Conv2d(cfg.features, cfg.features, kernel_size=3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(cfg.features, cfg.features // 2, kernel_size=3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(cfg.features // 2, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, cfg.output_dim, kernel_size=1),
            )

    def forward(self, aggregated_tokens_list: List[torch.Tensor], images: torch.Tensor, patch_start_idx: int,
                frames_chunk_size: Optional[int] = None
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``aggregated_tokens_list``: per-layer [B, S, P, 2C]; ``images`` [B, S, 3, H, W] (for its size)."""
        frames = images.shape[1]
        chunk = frames_chunk_size or self.config.frames_chunk_size
        results = [self._forward_frames(aggregated_tokens_list, images.shape[-2:], patch_start_idx,
                                        start, min(start + chunk, frames))
                   for start in range(0, frames, chunk)]
        if self.config.feature_only:
            return torch.cat(results, dim=1)
        return torch.cat([r[0] for r in results], dim=1), torch.cat([r[1] for r in results], dim=1)

    def _forward_frames(self, aggregated_tokens_list, image_hw, patch_start_idx, start, end):
        cfg = self.config
        height, width = int(image_hw[0]), int(image_hw[1])
        grid_h, grid_w = height // cfg.patch_size, width // cfg.patch_size
        levels = []
        for level, layer_idx in enumerate(cfg.intermediate_layer_idx):
            x = aggregated_tokens_list[layer_idx][:, start:end, patch_start_idx:]
            batch, frames = x.shape[:2]
            x = self.norm(x.reshape(batch * frames, -1, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(batch * frames, -1, grid_h, grid_w)
            x = self.projects[level](x)
            if cfg.pos_embed:
                x = apply_pos_embed(x, width, height)
            levels.append(self.resize_layers[level](x))

        layer1, layer2, layer3, layer4 = (getattr(self.scratch, f"layer{i + 1}_rn")(x)
                                          for i, x in enumerate(levels))
        out = self.scratch.refinenet4(layer4, size=layer3.shape[2:])
        out = self.scratch.refinenet3(out, layer3, size=layer2.shape[2:])
        out = self.scratch.refinenet2(out, layer2, size=layer1.shape[2:])
        out = self.scratch.refinenet1(out, layer1)
        out = self.scratch.output_conv1(out)

        out = interpolate_bilinear(out, (int(grid_h * cfg.patch_size / cfg.down_ratio),
                                         int(grid_w * cfg.patch_size / cfg.down_ratio)))
        if cfg.pos_embed:
            out = apply_pos_embed(out, width, height)
        if cfg.feature_only:
            return out.view(batch, frames, *out.shape[1:])
        values, conf = activate_head(self.scratch.output_conv2(out), cfg.activation, cfg.conf_activation)
        return values.view(batch, frames, *values.shape[1:]), conf.view(batch, frames, *conf.shape[1:])
