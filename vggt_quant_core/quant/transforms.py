"""Invertible transforms of a Linear layer's input, with the inverse folded into its weight.

For y = x W^T: an orthogonal rotation R gives y = (x R)(W R)^T, a per-channel scale c gives
y = (x / c)(W * c)^T. ``InputTransform`` composes such steps in a recorded order and provides both sides:
``forward`` (online, on activations) and ``fold_weight`` (offline, on the weight).
"""

from typing import List, Optional

import torch
from torch import nn

from ..kernels import is_hadamard_order, random_orthogonal
from ..kernels.hadamard import random_hadamard_transform


def random_signs(n: int, seed: int) -> torch.Tensor:
    """Seeded +-1 vector [n] (float32)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1


class RandomHadamard(nn.Module):
    """x -> (x * s) @ H_n / sqrt(n): a random orthogonal rotation stored as a seed and sign vector s.

    For orders with no constructible Hadamard matrix (see ``kernels.hadamard``), a seeded Haar-random
    orthogonal matrix is used instead (dense, O(n^2) per token; regenerated from the seed, not stored).
    """

    kind = "hadamard"

    def __init__(self, n: int, seed: int) -> None:
        super().__init__()
        self.n, self.seed = n, seed
        self.register_buffer("signs", random_signs(n, seed))
        self.fast = is_hadamard_order(n)
        self.register_buffer("matrix", None if self.fast else random_orthogonal(n, seed), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return random_hadamard_transform(x, self.signs)
        return x @ self.matrix.to(x.dtype)

    def fold_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """W -> W R: for an orthogonal R the weight rows rotate like activations."""
        return self(weight)

    def describe(self) -> dict:
        return {"type": self.kind, "n": self.n, "seed": self.seed, "hadamard_order": self.fast}


class ChannelScale(nn.Module):
    """x -> x / c, W -> W * c (column-wise) with c > 0 stored as log c (learnable, positivity for free)."""

    kind = "scale"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(n))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def set_scale(self, scale: torch.Tensor) -> None:
        with torch.no_grad():
            self.log_scale.copy_(scale.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale.to(x.dtype)

    def fold_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale.to(weight.dtype)

    def describe(self) -> dict:
        return {"type": self.kind, "n": self.log_scale.numel()}


def kronecker_factors(n: int):
    """(a, b) with a * b = n and a the largest divisor of n not above sqrt(n) (1024 -> 32 x 32)."""
    a = max(d for d in range(1, int(n ** 0.5) + 1) if n % d == 0)
    return a, n // a


class KroneckerAffine(nn.Module):
    """x -> x @ kron(L, R) (learnable, invertible; FlatQuant-style), W -> W @ kron(L, R)^-T.

    x is viewed as [..., a, b] and mapped to L^T X R, so the cost is O(n (a + b)) per token. L and R
    start as seeded random orthogonal matrices (then the transform is a rotation); calibration learns
    them freely, and the weight side uses their exact inverses (computed in float64).
    """

    kind = "kronecker"

    def __init__(self, n: int, seed: int) -> None:
        super().__init__()
        self.n, self.seed = n, seed
        a, b = kronecker_factors(n)
        self.left = nn.Parameter(random_orthogonal(a, seed).float())
        self.right = nn.Parameter(random_orthogonal(b, seed + 1).float())

    @staticmethod
    def _multiply(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        a, b = left.shape[0], right.shape[0]
        y = x.reshape(*x.shape[:-1], a, b)
        return (left.to(x.dtype).T @ y @ right.to(x.dtype)).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._multiply(x, self.left, self.right)

    def fold_weight(self, weight: torch.Tensor) -> torch.Tensor:
        # kron(L, R)^-T = kron(L^-T, R^-T)
        left_inv_t = torch.linalg.inv(self.left.double()).T
        right_inv_t = torch.linalg.inv(self.right.double()).T
        return self._multiply(weight.double(), left_inv_t, right_inv_t).to(weight.dtype)

    def describe(self) -> dict:
        return {"type": self.kind, "n": self.n, "seed": self.seed, "factors": list(kronecker_factors(self.n))}


def smoothing_scale(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant scale c_j = max|X_j|^alpha / max_i|W_ij|^(1 - alpha) (clamped to >= 1e-5).

    With alpha = 0.5 the smoothed activation and weight have equal per-channel maxima.
    """
    weight_absmax = weight.detach().abs().amax(dim=0).float()
    scale = act_absmax.float().clamp(min=1e-5) ** alpha / weight_absmax.clamp(min=1e-5) ** (1 - alpha)
    return scale.clamp(min=1e-5)


class InputTransform(nn.Module):
    """Ordered composition of transform steps (applied first to last on activations and weights)."""

    def __init__(self, steps: Optional[List[nn.Module]] = None) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps or [])

    def forward(self, x: torch.Tensor, upto: Optional[int] = None) -> torch.Tensor:
        """Apply the first ``upto`` steps (all by default)."""
        for step in list(self.steps)[:upto]:
            x = step(x)
        return x

    def fold_weight(self, weight: torch.Tensor, upto: Optional[int] = None) -> torch.Tensor:
        """W -> the weight matching activations transformed by the first ``upto`` steps (all by default)."""
        for step in list(self.steps)[:upto]:
            weight = step.fold_weight(weight)
        return weight

    def index(self, kind: str) -> Optional[int]:
        """Position of the first step of ``kind`` (``hadamard`` or ``scale``), or None."""
        return next((i for i, step in enumerate(self.steps) if step.kind == kind), None)

    def describe(self) -> List[dict]:
        return [step.describe() for step in self.steps]
