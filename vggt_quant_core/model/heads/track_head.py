"""Track head: DPT feature maps + iterative tracker."""

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..config import TrackHeadConfig
from .dpt_head import DPTHead
from .track_modules import BaseTrackerPredictor


class TrackHead(nn.Module):
    """Tokens + query points [B, N, 2] (pixels in frame 0) -> tracks per iteration [B, S, N, 2],
    visibility [B, S, N] and confidence [B, S, N]."""

    def __init__(self, config: TrackHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = DPTHead(config.feature_extractor)
        self.tracker = BaseTrackerPredictor(config.tracker)

    def forward(self, aggregated_tokens_list: List[torch.Tensor], images: torch.Tensor, patch_start_idx: int,
                query_points: torch.Tensor, iters: Optional[int] = None
                ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        feature_maps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx)
        return self.tracker(query_points, feature_maps, iters or self.config.iters)
