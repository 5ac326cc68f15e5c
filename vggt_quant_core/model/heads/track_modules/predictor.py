"""Iterative point tracker on DPT feature maps (``track_head.tracker``)."""

from typing import List, Optional, Tuple

import torch
from torch import nn

from ...config import TrackerConfig
from ...layers import Mlp
from .correlation import CorrBlock
from .sampling import flow_embedding, grid_sincos_embed, sample_features4d
from .update_former import EfficientUpdateFormer


class BaseTrackerPredictor(nn.Module):
    """Query points [B, N, 2] (pixels of frame 0) + feature maps [B, S, C, H', W'] ->
    per-iteration tracks [B, S, N, 2] (pixels), visibility and confidence [B, S, N] in (0, 1).

    Each iteration samples correlations around the current estimate, feeds flow embeddings,
    correlations and track features to the update transformer, and updates coordinates and
    features; frame 0 stays at the query.
    """

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        cfg = self.config = config
        latent = cfg.latent_dim
        self.transformer_dim = 3 * latent + 4
        self.corr_mlp = Mlp(cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2, cfg.hidden_size, latent)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            depth=cfg.depth, input_dim=self.transformer_dim, hidden_size=cfg.hidden_size,
            num_heads=cfg.updateformer_num_heads, output_dim=latent + 2, mlp_ratio=cfg.mlp_ratio,
            num_virtual_tracks=cfg.num_virtual_tracks)
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        if cfg.predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int
                ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        cfg = self.config
        batch, num_tracks, _ = query_points.shape
        _, frames, latent, grid_h, grid_w = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        coords = (query_points / float(cfg.stride)).reshape(batch, 1, num_tracks, 2).repeat(1, frames, 1, 1)
        query_coords = coords[:, 0].clone()
        track_feats = sample_features4d(fmaps[:, 0], coords[:, 0]).unsqueeze(1).repeat(1, frames, 1, 1)
        correlation = CorrBlock(fmaps, num_levels=cfg.corr_levels, radius=cfg.corr_radius)
        pos_embed = grid_sincos_embed(self.transformer_dim, (grid_h, grid_w)).to(query_points.device)
        query_pos = sample_features4d(pos_embed.expand(batch, -1, -1, -1), query_coords)
        query_pos = query_pos.reshape(batch * num_tracks, 1, -1)
        query_ref_token = torch.cat([self.query_ref_token[:, :1],
                                     self.query_ref_token[:, 1:2].expand(-1, frames - 1, -1)], dim=1)

        tracks = []
        for _ in range(iters):
            coords = coords.detach()
            corrs = correlation.corr_sample(track_feats, coords)  # [B, S, N, L]
            corrs = self.corr_mlp(corrs.permute(0, 2, 1, 3).reshape(batch * num_tracks, frames, -1))
            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(batch * num_tracks, frames, 2)
            flows_embed = torch.cat([flow_embedding(flows, latent // 2), flows / cfg.max_scale,
                                     flows / cfg.max_scale], dim=-1)
            feats = track_feats.permute(0, 2, 1, 3).reshape(batch * num_tracks, frames, latent)
            x = torch.cat([flows_embed, corrs, feats], dim=2) + query_pos
            x = x + query_ref_token.to(x.dtype)
            delta = self.updateformer(x.reshape(batch, num_tracks, frames, -1))
            delta = delta.reshape(batch * num_tracks * frames, -1)
            feats = feats.reshape(-1, latent)
            feats = self.ffeat_updater(self.ffeat_norm(delta[:, 2:])) + feats
            track_feats = feats.reshape(batch, num_tracks, frames, latent).permute(0, 2, 1, 3)
            coords = coords + delta[:, :2].reshape(batch, num_tracks, frames, 2).permute(0, 2, 1, 3)
            coords[:, 0] = query_coords
            tracks.append(coords * cfg.stride)

        flat_feats = track_feats.reshape(batch * frames * num_tracks, latent)
        vis = torch.sigmoid(self.vis_predictor(flat_feats).reshape(batch, frames, num_tracks))
        conf = None
        if cfg.predict_conf:
            conf = torch.sigmoid(self.conf_predictor(flat_feats).reshape(batch, frames, num_tracks))
        return tracks, vis, conf
