"""VGGT: Visual Geometry Grounded Transformer (Wang et al., CVPR 2025)."""

from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .aggregator import Aggregator
from .config import VGGTConfig
from .heads import CameraHead, DPTHead, TrackHead


class VGGT(nn.Module):
    """Feed-forward multi-view reconstruction: cameras, depth, point maps and tracks.

    ``VGGT()`` builds VGGT-1B (weights random until loaded, see ``load_vggt``);
    ``VGGT.from_config`` builds any size. State-dict keys equal the official implementation's.
    """

    def __init__(self, config: Optional[VGGTConfig] = None) -> None:
        super().__init__()
        self.config = config = config or VGGTConfig()
        self.aggregator = Aggregator(config)
        # Children in the official state-dict order (point before depth).
        self.camera_head = CameraHead(config.camera_head) if config.camera_head else None
        self.point_head = DPTHead(config.point_head) if config.point_head else None
        self.depth_head = DPTHead(config.depth_head) if config.depth_head else None
        self.track_head = TrackHead(config.track_head) if config.track_head else None

    @classmethod
    def from_config(cls, config: Union[VGGTConfig, Mapping[str, Any]]) -> "VGGT":
        """Build from a ``VGGTConfig`` or the fixture ``config.json`` dict schema."""
        return cls(config if isinstance(config, VGGTConfig) else VGGTConfig.from_dict(config))

    def layers_read_by_heads(self, with_tracks: bool) -> set:
        """Aggregator layer indices (non-negative) that the enabled heads consume."""
        depth = self.aggregator.depth
        layers = set()
        if self.camera_head is not None:
            layers.add(depth - 1)
        dense = [self.depth_head, self.point_head] + ([self.track_head.feature_extractor]
                                                      if with_tracks and self.track_head else [])
        for head in filter(None, dense):
            layers.update(i % depth for i in head.config.intermediate_layer_idx)
        return layers

    def forward(self, images: torch.Tensor, query_points: Optional[torch.Tensor] = None,
                frame_tokens: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """
        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W] RGB in [0, 1]; H and W multiples of the patch size.
            query_points: optional [N, 2] or [B, N, 2] pixel (x, y) in frame 0, for the track head.
            frame_tokens: optional [B*S, P, C], the aggregator's per-frame work for these images computed
                beforehand (``Aggregator.frame_tokens``); the outputs are those of computing it here.

        Returns a dict (keys only for enabled heads):
            pose_enc [B, S, 9] (last refinement iteration), pose_enc_list (one [B, S, 9] per iteration),
            depth [B, S, H, W, 1], depth_conf [B, S, H, W], world_points [B, S, H, W, 3],
            world_points_conf [B, S, H, W]; with query_points also track [B, S, N, 2] (pixels),
            vis and conf [B, S, N]; in eval mode, images [B, S, 3, H, W].

        The heads always run in float32 with autocast disabled; under autocast only the
        aggregator runs in reduced precision, and its residual stream stays float32.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must be [S, 3, H, W] or [B, S, 3, H, W], got {tuple(images.shape)}")
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        with_tracks = query_points is not None and self.track_head is not None

        tokens, patch_start_idx = self.aggregator(images, keep_layers=self.layers_read_by_heads(with_tracks),
                                                  frame_tokens=frame_tokens)
        tokens = [t if t is None else t.float() for t in tokens]
        predictions: Dict[str, Any] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            if self.camera_head is not None:
                pose_enc_list = self.camera_head(tokens)
                predictions["pose_enc"] = pose_enc_list[-1]
                predictions["pose_enc_list"] = pose_enc_list
            if self.depth_head is not None:
                predictions["depth"], predictions["depth_conf"] = self.depth_head(
                    tokens, images=images, patch_start_idx=patch_start_idx)
            if self.point_head is not None:
                predictions["world_points"], predictions["world_points_conf"] = self.point_head(
                    tokens, images=images, patch_start_idx=patch_start_idx)
            if with_tracks:
                tracks, vis, conf = self.track_head(tokens, images=images, patch_start_idx=patch_start_idx,
                                                    query_points=query_points.float())
                predictions["track"], predictions["vis"], predictions["conf"] = tracks[-1], vis, conf
        if not self.training:
            predictions["images"] = images
        return predictions
