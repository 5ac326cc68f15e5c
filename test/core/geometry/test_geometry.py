"""Geometry helpers against the official functions (units.pt) and against invariants."""

import math

import numpy as np
import torch

from helpers import rel_to_max
from vggt_quant_core.geometry import (closed_form_inverse_se3, extri_intri_to_pose_encoding, mat_to_quat,
                                      pose_encoding_to_extri_intri, quat_to_mat,
                                      unproject_depth_map_to_point_map)

TOL = 1e-6


def test_quaternion_conversions_match_official(units):
    assert rel_to_max(quat_to_mat(units["quat_to_mat"]["quat"]), units["quat_to_mat"]["R"]) <= TOL
    assert rel_to_max(mat_to_quat(units["mat_to_quat"]["R"]), units["mat_to_quat"]["quat"]) <= TOL


def test_pose_encoding_conversions_match_official(units):
    case = units["pose_encoding_to_extri_intri"]
    extrinsic, intrinsic = pose_encoding_to_extri_intri(case["pose_enc"], case["image_size_hw"])
    assert rel_to_max(extrinsic, case["extrinsic"]) <= TOL
    assert rel_to_max(intrinsic, case["intrinsic"]) <= TOL
    case = units["extri_intri_to_pose_encoding"]
    encoding = extri_intri_to_pose_encoding(case["extrinsic"], case["intrinsic"], case["image_size_hw"])
    assert rel_to_max(encoding, case["pose_enc"]) <= TOL


def test_unprojection_matches_official_float64(units):
    case = units["unproject_depth_map_to_point_map"]
    points = unproject_depth_map_to_point_map(case["depth"].double(), case["extrinsic"], case["intrinsic"])
    assert points.dtype == torch.float64
    assert rel_to_max(points, case["world_points"]) <= 1e-6
    case = units["closed_form_inverse_se3"]
    assert rel_to_max(closed_form_inverse_se3(case["se3"]), case["inverse"]) <= TOL


def _random_rotations(n, generator):
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quat_to_mat(q / q.norm(dim=-1, keepdim=True))


def test_round_trip_and_inverse_invariants():
    generator = torch.Generator().manual_seed(0)
    rotations = _random_rotations(64, generator)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rotations @ rotations.transpose(-1, -2), eye.expand_as(rotations), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(64, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(quat_to_mat(mat_to_quat(rotations)), rotations, atol=1e-10)
    assert (mat_to_quat(rotations)[:, 3] >= 0).all()
    se3 = torch.cat([rotations, torch.randn(64, 3, 1, generator=generator, dtype=torch.float64)], dim=-1)
    full = torch.cat([se3, torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(64, 1, 4)], dim=1)
    assert torch.allclose(closed_form_inverse_se3(se3) @ full, torch.eye(4, dtype=torch.float64).expand(64, 4, 4),
                          atol=1e-12)


def test_unprojected_points_reproject_to_their_pixels():
    """World points from depth map back onto their own pixel with their own depth."""
    generator = torch.Generator().manual_seed(1)
    frames, height, width = 3, 6, 8
    rotations = _random_rotations(frames, generator)
    translation = torch.randn(frames, 3, 1, generator=generator, dtype=torch.float64)
    extrinsics = torch.cat([rotations, translation], dim=-1)
    fov = torch.full((1, frames, 2), math.radians(60), dtype=torch.float64)
    encoding = torch.cat([extrinsics[:, :, 3][None], mat_to_quat(rotations)[None], fov], dim=-1)
    extrinsics_back, intrinsics = pose_encoding_to_extri_intri(encoding, (height, width))
    assert torch.allclose(extrinsics_back[0], extrinsics, atol=1e-12)
    depth = torch.rand(frames, height, width, generator=generator, dtype=torch.float64) + 0.5
    points = unproject_depth_map_to_point_map(depth, extrinsics, intrinsics[0])
    camera = torch.einsum("sij,shwj->shwi", rotations, points) + translation[:, None, None, :, 0]
    pixels = torch.einsum("sij,shwj->shwi", intrinsics[0], camera)
    u = pixels[..., 0] / pixels[..., 2]
    v = pixels[..., 1] / pixels[..., 2]
    vs, us = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    assert torch.allclose(camera[..., 2], depth, atol=1e-12)
    assert np.allclose(u.numpy(), us, atol=1e-9) and np.allclose(v.numpy(), vs, atol=1e-9)
