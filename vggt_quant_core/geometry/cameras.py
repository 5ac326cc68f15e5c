"""Rigid transforms and depth unprojection (OpenCV camera convention, camera-from-world extrinsics)."""

import torch


def closed_form_inverse_se3(se3: torch.Tensor) -> torch.Tensor:
    """[..., 3, 4] or [..., 4, 4] rigid transforms -> their inverses [..., 4, 4]: [R^T | -R^T t]."""
    if se3.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"se3 must be [..., 3, 4] or [..., 4, 4], got {tuple(se3.shape)}")
    rotation_t = se3[..., :3, :3].transpose(-1, -2)
    inverse = torch.zeros(se3.shape[:-2] + (4, 4), dtype=se3.dtype, device=se3.device)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3:] = -rotation_t @ se3[..., :3, 3:]
    inverse[..., 3, 3] = 1
    return inverse


def depth_to_camera_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Depth [..., H, W] and intrinsics [..., 3, 3] (zero skew) -> camera-frame points [..., H, W, 3].

    Pixel (u, v) is at integer coordinates (no half-pixel offset), as in VGGT.
    """
    height, width = depth.shape[-2:]
    v, u = torch.meshgrid(torch.arange(height, device=depth.device, dtype=depth.dtype),
                          torch.arange(width, device=depth.device, dtype=depth.dtype), indexing="ij")
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    return torch.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], dim=-1)


def unproject_depth_map_to_point_map(depth: torch.Tensor, extrinsics: torch.Tensor,
                                     intrinsics: torch.Tensor) -> torch.Tensor:
    """World points [S, H, W, 3] from depth [S, H, W] or [S, H, W, 1], extrinsics [S, 3, 4]
    (camera-from-world) and intrinsics [S, 3, 3]. Works in the dtype of ``depth``."""
    if depth.dim() == 4:
        depth = depth.squeeze(-1)
    if depth.dim() != 3:
        raise ValueError(f"depth must be [S, H, W] or [S, H, W, 1], got {tuple(depth.shape)}")
    extrinsics, intrinsics = extrinsics.to(depth.dtype), intrinsics.to(depth.dtype)
    camera_points = depth_to_camera_points(depth, intrinsics)
    cam_to_world = closed_form_inverse_se3(extrinsics)
    # One [H*W, 3] @ [3, 3] product per frame: far faster than a 3x3 product per pixel.
    world = camera_points.flatten(1, 2) @ cam_to_world[:, :3, :3].transpose(1, 2) + cam_to_world[:, None, :3, 3]
    return world.view(camera_points.shape)
