"""VGGT's 9-d camera encoding ``absT_quaR_FoV`` <-> extrinsics and intrinsics.

Encoding: [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]. T and the quaternion describe the
camera-from-world transform in the OpenCV convention (x right, y down, z forward); FoVs are in
radians, vertical first. Intrinsics are in pixels of the model input, principal point at the
image centre.
"""

from typing import Sequence, Tuple

import torch

from .rotation import mat_to_quat, quat_to_mat


def pose_encoding_to_extri_intri(pose_encoding: torch.Tensor, image_size_hw: Sequence[int]
                                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """[B, S, 9] -> extrinsics [B, S, 3, 4] (camera-from-world) and intrinsics [B, S, 3, 3].

    A FoV of 0 gives an infinite focal length.
    """
    if pose_encoding.shape[-1] != 9:
        raise ValueError(f"pose encoding must end in 9 values, got {tuple(pose_encoding.shape)}")
    height, width = (float(v) for v in image_size_hw)
    rotation = quat_to_mat(pose_encoding[..., 3:7])
    extrinsics = torch.cat([rotation, pose_encoding[..., :3, None]], dim=-1)
    fy = (height / 2.0) / torch.tan(pose_encoding[..., 7] / 2.0)
    fx = (width / 2.0) / torch.tan(pose_encoding[..., 8] / 2.0)
    intrinsics = torch.zeros(pose_encoding.shape[:-1] + (3, 3), device=pose_encoding.device,
                             dtype=pose_encoding.dtype)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                 image_size_hw: Sequence[int]) -> torch.Tensor:
    """Extrinsics [B, S, 3, 4] (camera-from-world) and intrinsics [B, S, 3, 3] -> [B, S, 9] float32."""
    height, width = (float(v) for v in image_size_hw)
    quat = mat_to_quat(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((height / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1).float()
