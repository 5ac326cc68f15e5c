"""Two-layer perceptron with exact (erf) GELU, as in ViT/DINOv2."""

from typing import Optional

import torch
from torch import nn


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``: [..., in_features] -> [..., out_features]."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, bias: bool = True) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
