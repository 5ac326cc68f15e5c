"""Per-channel residual-branch scale (CaiT LayerScale)."""

import torch
from torch import nn


class LayerScale(nn.Module):
    """``x * gamma`` with gamma of shape [dim].

    Under autocast ``gamma`` stays float32, so a bf16 branch output is promoted back to float32 and
    the residual stream keeps full precision.
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
