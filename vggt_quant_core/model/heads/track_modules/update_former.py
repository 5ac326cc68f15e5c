"""Transformer that predicts coordinate and feature updates of all tracks (CoTracker-style)."""

import torch
from torch import nn

from ...layers import Mlp


class AttnBlock(nn.Module):
    """Self-attention block. Note: the residual is added to the *normalised* input (as trained)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention from ``x`` to ``context``; residual on the normalised ``x`` as in AttnBlock."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """[B, N, T, input_dim] -> [B, N, T, output_dim].

    Alternates attention over time (per track) with attention across tracks routed through
    ``num_virtual_tracks`` learned virtual tracks.
    """

    def __init__(self, depth: int, input_dim: int, hidden_size: int, num_heads: int, output_dim: int,
                 mlp_ratio: float = 4.0, num_virtual_tracks: int = 64) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.zeros(1, num_virtual_tracks, 1, hidden_size))  # (sic)
        self.time_blocks = nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(
            AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.virual_tracks)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        init_tokens = self.input_transform(self.input_norm(x))
        batch, _, time, _ = init_tokens.shape
        tokens = torch.cat([init_tokens, self.virual_tracks.repeat(batch, 1, time, 1)], dim=1)
        num_tokens = tokens.shape[1]
        num_points = num_tokens - self.num_virtual_tracks
        for time_block, virtual2point, virtual_block, point2virtual in zip(
                self.time_blocks, self.space_virtual2point_blocks, self.space_virtual_blocks,
                self.space_point2virtual_blocks):
            tokens = time_block(tokens.reshape(batch * num_tokens, time, -1)).view(batch, num_tokens, time, -1)
            space = tokens.permute(0, 2, 1, 3).reshape(batch * time, num_tokens, -1)
            points, virtual = space[:, :num_points], space[:, num_points:]
            virtual = virtual_block(virtual2point(virtual, points))
            points = point2virtual(points, virtual)
            tokens = torch.cat([points, virtual], dim=1).view(batch, time, num_tokens, -1).permute(0, 2, 1, 3)
        tokens = tokens[:, :num_points] + init_tokens
        return self.flow_head(self.output_norm(tokens))
