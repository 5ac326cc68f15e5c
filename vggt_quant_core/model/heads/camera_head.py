"""Camera head: iterative refinement of the 9-d pose encoding from the camera tokens."""

from typing import List, Optional

import torch
from torch import nn

from ..config import CameraHeadConfig
from ..layers import Block, Mlp
from .activations import activate_pose

POSE_ENCODING_DIM = 9  # [T (3), quaternion xyzw (4), FoV h/w (2)]


class CameraHead(nn.Module):
    """Camera tokens of the last layer -> ``num_iterations`` pose encodings [B, S, 9].

    Every iteration modulates the *same* normalised camera tokens (adaLN: shift, scale, gate from
    the embedded running encoding), runs the trunk (attention across the S frames, no RoPE), and
    adds a delta to the un-activated running encoding. The returned encodings are activated
    (translation and quaternion linear, FoV ReLU in VGGT).
    """

    def __init__(self, config: CameraHeadConfig) -> None:
        super().__init__()
        dim = config.dim_in
        self.config = config
        self.trunk = nn.Sequential(*[
            Block(dim, config.num_heads, mlp_ratio=config.mlp_ratio, init_values=config.init_values)
            for _ in range(config.trunk_depth)
        ])
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_ENCODING_DIM)

    def forward(self, aggregated_tokens_list: List[torch.Tensor],
                num_iterations: Optional[int] = None) -> List[torch.Tensor]:
        """Reads token 0 (camera) of the last layer [B, S, P, 2C]; returns a list of [B, S, 9]."""
        cfg = self.config
        pose_tokens = self.token_norm(aggregated_tokens_list[-1][:, :, 0])
        batch, frames, _ = pose_tokens.shape
        pred_pose_enc = None
        encodings = []
        for _ in range(num_iterations or cfg.num_iterations):
            if pred_pose_enc is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(batch, frames, -1))
            else:
                # As the official head: each iteration's delta is trained on its own, no gradient
                # through earlier iterations (same values, other gradients).
                pred_pose_enc = pred_pose_enc.detach()
                condition = self.embed_pose(pred_pose_enc)
            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)
            modulated = gate * (self.adaln_norm(pose_tokens) * (1 + scale) + shift) + pose_tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(modulated)))
            pred_pose_enc = delta if pred_pose_enc is None else pred_pose_enc + delta
            encodings.append(activate_pose(pred_pose_enc, cfg.trans_act, cfg.quat_act, cfg.fl_act))
        return encodings
