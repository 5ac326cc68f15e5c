"""The node's REP 105 transform algebra alone (no ROS): against scipy's rotations and the chain it must close."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt_quant_ros.parameters import PARAMETERS, ConfigurationError, settings_from
from vggt_quant_ros.transforms import base_from_camera_parameter, inverse, map_from_odom, pose, rigid


def _random_rigid(rng):
    return rigid(rng.normal(size=3), rng.normal(size=4))


def test_rigid_and_pose_are_scipys_rotation_and_each_others_inverse():
    rng = np.random.default_rng(0)
    for _ in range(20):
        position, quaternion = rng.normal(size=3), rng.normal(size=4)
        transform = rigid(position, quaternion)
        assert np.allclose(transform[:3, :3], Rotation.from_quat(quaternion).as_matrix(), atol=1e-12)   # x, y, z, w
        assert np.allclose(transform[:3, 3], position) and np.allclose(transform[3], [0, 0, 0, 1])
        back_position, back_quaternion = pose(transform)
        assert np.allclose(rigid(back_position, back_quaternion), transform, atol=1e-12) and back_quaternion[3] >= 0
        assert np.allclose(inverse(transform) @ transform, np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match="not a rigid transform"):
        rigid([0, 0, 0], [0, 0, 0, 0])


def test_map_to_odom_closes_the_chain_to_the_estimate_and_leaves_odometry_alone():
    """map -> odom -> base -> camera is the estimate, for any odometry and mounting; a later odometry step moves
    the estimate of base by exactly that step (REP 105: odom -> base stays continuous and the odometry's)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        map_from_camera, base_from_camera, odom_from_base = (_random_rigid(rng) for _ in range(3))
        map_from_odom_ = map_from_odom(map_from_camera, base_from_camera, odom_from_base)
        assert np.allclose(map_from_odom_ @ odom_from_base @ base_from_camera, map_from_camera, atol=1e-10)
        step = _random_rigid(rng)
        assert np.allclose(map_from_odom_ @ (odom_from_base @ step), map_from_camera @ inverse(base_from_camera) @ step,
                           atol=1e-10)


def test_base_to_camera_is_seven_numbers_of_a_rigid_transform():
    mounted = base_from_camera_parameter([0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5])   # optical axes on a FLU body
    assert np.allclose(mounted[:3, :3] @ [0, 0, 1], [1, 0, 0]) and np.allclose(mounted[:3, 3], [0.2, 0, 0.5])
    with pytest.raises(ConfigurationError, match="base_to_camera has 6 values; expected 7: \\[x, y, z, qx"):
        base_from_camera_parameter([0.0] * 6)
    with pytest.raises(ConfigurationError, match="base_to_camera is not a rigid transform"):
        base_from_camera_parameter([0.0] * 7)


@pytest.mark.parametrize("change, message", [
    ({"odom_frame": "map"}, "three different frames; map_frame, odom_frame and base_frame are 'map', 'map'"),
    ({"base_frame": ""}, "three different frames"),
    ({"base_to_camera": [0.0, 1.0]}, "base_to_camera has 2 values"),
])
def test_map_odom_settings_are_checked(change, message):
    values = {p.name: p.default for p in PARAMETERS} | {"tf_mode": "map_odom"} | change
    with pytest.raises(ConfigurationError, match=message):
        settings_from(values)
    assert settings_from({p.name: p.default for p in PARAMETERS} | change).tf_mode == "cameras"   # unchecked there
