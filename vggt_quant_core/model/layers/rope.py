"""2D rotary position embedding over the patch grid (RoPE-2D, base frequency 100 in VGGT)."""

from typing import Dict, Tuple

import torch
from torch import nn


def grid_positions(batch: int, grid_h: int, grid_w: int, num_special: int,
                   device: torch.device) -> torch.Tensor:
    """Integer (y, x) position of every token of a frame: [batch, num_special + grid_h*grid_w, 2].

    Patches are row-major at (y + 1, x + 1); the leading special tokens sit at (0, 0), where the
    rotation is the identity.
    """
    ys, xs = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device),
                            indexing="ij")
    patches = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1) + 1
    special = torch.zeros(num_special, 2, dtype=patches.dtype, device=device)
    return torch.cat([special, patches]).unsqueeze(0).expand(batch, -1, -1)


class RotaryPositionEmbedding2D(nn.Module):
    """Rotates the first half of each head vector by the y position and the second half by x.

    Within each half of size d, dimension i pairs with i + d/2 (rotate-half / GPT-NeoX pairing),
    with angle ``pos * frequency**(-2i/d)``. Has no parameters; one instance is shared by all blocks.
    """

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = frequency
        # (dim, length, device, dtype) -> (cos, sin) tables [length, dim]
        self._tables: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, dim: int, length: int, device: torch.device, dtype: torch.dtype):
        key = (dim, length, device, dtype)
        if key not in self._tables:
            inv_freq = 1.0 / (self.frequency ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
            angles = torch.cat([angles, angles], dim=-1).to(dtype)
            self._tables[key] = (angles.cos(), angles.sin())
        return self._tables[key]

    @staticmethod
    def _rotate(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        cos = cos[positions].unsqueeze(1)  # [B, 1, N, d]
        sin = sin[positions].unsqueeze(1)
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-second, first], dim=-1) * sin

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, heads, N, D] (D divisible by 4), positions [B, N, 2] (y, x) -> [B, heads, N, D]."""
        half = tokens.shape[-1] // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, tokens.device, tokens.dtype)
        y_part, x_part = tokens.chunk(2, dim=-1)
        return torch.cat([self._rotate(y_part, positions[..., 0], cos, sin),
                          self._rotate(x_part, positions[..., 1], cos, sin)], dim=-1)
