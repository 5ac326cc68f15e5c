"""Similarity (Sim(3)) alignment of point sets: weighted Umeyama (1991)."""

from typing import NamedTuple, Optional

import torch


class Sim3(NamedTuple):
    """``y = scale * rotation @ x + translation``."""

    scale: torch.Tensor        # []
    rotation: torch.Tensor     # [3, 3], det +1
    translation: torch.Tensor  # [3]

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """[..., 3] -> [..., 3]."""
        rotation = self.rotation.to(points.dtype)
        return self.scale.to(points.dtype) * points @ rotation.T + self.translation.to(points.dtype)

    def matrix(self) -> torch.Tensor:
        """4x4 homogeneous form."""
        out = torch.eye(4, dtype=self.rotation.dtype, device=self.rotation.device)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out


def umeyama_sim3(source: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None,
                 with_scale: bool = True) -> Sim3:
    """The Sim(3) (or SE(3) with ``with_scale=False``) minimising sum_i w_i |s R x_i + t - y_i|^2.

    source, target [N, 3]; weights [N] >= 0 (default uniform). Computed in float64. Raises
    ValueError for fewer than 3 weighted points or a degenerate (collapsed) source.
    """
    if source.shape != target.shape or source.dim() != 2 or source.shape[1] != 3:
        raise ValueError(f"expected two [N, 3] point sets, got {tuple(source.shape)} and {tuple(target.shape)}")
    x, y = source.double(), target.double()
    w = torch.ones(len(x), dtype=torch.float64, device=x.device) if weights is None else weights.double()
    valid = torch.isfinite(x).all(1) & torch.isfinite(y).all(1) & torch.isfinite(w) & (w > 0)
    x, y, w = x[valid], y[valid], w[valid]
    if len(x) < 3:
        raise ValueError(f"need at least 3 finite points with positive weight, got {len(x)}")
    w = w / w.sum()
    mean_x, mean_y = w @ x, w @ y
    xc, yc = x - mean_x, y - mean_y
    var_x = (w * (xc * xc).sum(1)).sum()
    if var_x <= 1e-20:
        raise ValueError("source points are (nearly) all identical: alignment is undefined")
    covariance = (yc * w[:, None]).T @ xc  # [3, 3] = sum w y x^T
    u, singular, vt = torch.linalg.svd(covariance)
    sign = torch.ones(3, dtype=torch.float64, device=x.device)
    if torch.det(u) * torch.det(vt) < 0:  # reflection: flip the weakest axis
        sign[2] = -1
    rotation = u @ torch.diag(sign) @ vt
    scale = (singular * sign).sum() / var_x if with_scale else torch.ones((), dtype=torch.float64)
    translation = mean_y - scale * rotation @ mean_x
    return Sim3(scale, rotation, translation)
