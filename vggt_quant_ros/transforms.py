"""The transform algebra behind the node's /tf, as plain functions on 4x4 rigid transforms (no ROS).

``a_from_b`` takes coordinates in frame b to frame a: the pose of b in a, what tf2's ``lookup_transform(a, b)``
returns and what a TransformStamped with ``header.frame_id`` a and ``child_frame_id`` b carries.

REP 105 (``tf_mode: map_odom``): the node estimates map_from_camera (camera 0's optical frame); the robot knows
base_from_camera (URDF on /tf_static, or the ``base_to_camera`` parameter) and odom_from_base (its odometry on
/tf). The node publishes map -> odom so that the chain map -> odom -> base -> camera gives its estimate back:

    map_from_odom = map_from_camera @ inverse(base_from_camera) @ inverse(odom_from_base)

while odom -> base stays the odometry's, and base -> camera the URDF's.
"""

from typing import Sequence, Tuple

import numpy as np
import torch

from vggt_quant_core.geometry import mat_to_quat, quat_to_mat
from vggt_quant_core.stream.settings import ConfigurationError

Pose7 = Tuple[np.ndarray, np.ndarray]   # position [3], quaternion (x, y, z, w) [4]


def rigid(position: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """[4, 4] from a position and a quaternion (x, y, z, w), normalised here; raises ``ValueError`` for a
    quaternion of (nearly) zero length or non-finite values."""
    q = np.asarray(quaternion, np.float64)
    t = np.asarray(position, np.float64)
    norm = float(np.linalg.norm(q))
    if not (np.isfinite(norm) and np.isfinite(t).all()) or norm < 1e-6:
        raise ValueError(f"not a rigid transform: position {t.tolist()}, quaternion {q.tolist()}")
    out = np.eye(4)
    out[:3, :3] = quat_to_mat(torch.from_numpy(q / norm)).numpy()
    out[:3, 3] = t
    return out


def pose(transform: np.ndarray) -> Pose7:
    """Position and quaternion (x, y, z, w, with w >= 0) of a [4, 4] rigid transform."""
    return transform[:3, 3].copy(), mat_to_quat(torch.from_numpy(np.ascontiguousarray(transform[:3, :3]))).numpy()


def inverse(transform: np.ndarray) -> np.ndarray:
    """b_from_a of a rigid a_from_b: [R^T | -R^T t]."""
    out = np.eye(4)
    out[:3, :3] = transform[:3, :3].T
    out[:3, 3] = -transform[:3, :3].T @ transform[:3, 3]
    return out


def map_from_odom(map_from_camera: np.ndarray, base_from_camera: np.ndarray, odom_from_base: np.ndarray
                  ) -> np.ndarray:
    """The map -> odom transform that makes map -> odom -> base -> camera equal ``map_from_camera``."""
    return map_from_camera @ inverse(base_from_camera) @ inverse(odom_from_base)


def base_from_camera_parameter(values: Sequence[float]) -> np.ndarray:
    """The ``base_to_camera`` parameter [x, y, z, qx, qy, qz, qw] as base_from_camera; ``ConfigurationError``
    says what is wrong with it."""
    if len(values) != 7:
        raise ConfigurationError(f"parameter base_to_camera has {len(values)} values; expected 7: "
                                 "[x, y, z, qx, qy, qz, qw] of camera 0's optical frame in base_frame")
    try:
        return rigid(values[:3], values[3:])
    except ValueError as exc:
        raise ConfigurationError(f"parameter base_to_camera is {exc}") from None
