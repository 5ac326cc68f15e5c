"""Output activations of the camera and dense heads."""

from typing import Tuple

import torch
import torch.nn.functional as F


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """``sign(y) * (exp(|y|) - 1)``: the inverse of the log-scaled point regression target."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


_ACTIVATIONS = {
    "linear": lambda x: x,
    "exp": torch.exp,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "inv_log": inverse_log_transform,
}

_CONF_ACTIVATIONS = {
    "expp1": lambda c: 1 + c.exp(),
    "expp0": torch.exp,
    "sigmoid": torch.sigmoid,
}


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"Unknown {what} {name!r}; choose from {sorted(table)}")
    return table[name]


def activate_pose(pose_enc: torch.Tensor, trans_act: str = "linear", quat_act: str = "linear",
                  fl_act: str = "linear") -> torch.Tensor:
    """[..., 9] = [T (3), quaternion (4), FoV (2)] with one activation per part."""
    translation, quat, fov = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7:]
    return torch.cat([_lookup(_ACTIVATIONS, trans_act, "activation")(translation),
                      _lookup(_ACTIVATIONS, quat_act, "activation")(quat),
                      _lookup(_ACTIVATIONS, fl_act, "activation")(fov)], dim=-1)


def activate_head(out: torch.Tensor, activation: str = "inv_log",
                  conf_activation: str = "expp1") -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense head output [N, C, H, W] -> values [N, H, W, C-1] and confidence [N, H, W].

    The last channel is the confidence.
    """
    fmap = out.permute(0, 2, 3, 1)
    values = _lookup(_ACTIVATIONS, activation, "activation")(fmap[..., :-1])
    conf = _lookup(_CONF_ACTIVATIONS, conf_activation, "confidence activation")(fmap[..., -1])
    return values, conf
