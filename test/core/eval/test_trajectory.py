"""ATE and RPE against trajectories with known errors."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt_quant_core.eval.trajectory import absolute_trajectory_error, relative_pose_error


def _poses(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.repeat(np.eye(4)[None], count, 0)
    poses[:, :3, :3] = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.05, (count, 3)), 0)).as_matrix()
    poses[:, :3, 3] = np.cumsum(rng.normal(0, 0.1, (count, 3)), 0)
    return poses


def test_ate_aligns_se3_when_metric_and_sim3_otherwise():
    truth = _poses(50)
    rotation = Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()
    moved = truth[:, :3, 3] @ rotation.T + np.array([1.0, 2.0, 3.0])
    exact = absolute_trajectory_error(moved, truth[:, :3, 3], metric=True)
    assert exact["ate_rmse"] < 1e-9 and exact["sim3_scale"] == pytest.approx(1.0) and exact["alignment"] == "SE(3)"
    half = absolute_trajectory_error(0.5 * moved, truth[:, :3, 3], metric=True)
    assert half["sim3_scale"] == pytest.approx(2.0) and half["ate_rmse"] > 0.1    # a wrong metric scale costs
    assert absolute_trajectory_error(0.5 * moved, truth[:, :3, 3], metric=False)["ate_rmse"] < 1e-9


def test_rpe_measures_drift_over_the_frame_gap():
    truth = _poses(30, seed=1)
    assert relative_pose_error(truth, truth, 10)["rpe_translation_rmse"] < 1e-12
    stretched = truth.copy()
    stretched[:, :3, 3] *= 1.1                     # a 10 % scale error: relative translations 10 % long
    errors = relative_pose_error(stretched, truth, 10)
    assert errors["rpe_translation_percent"] == pytest.approx(10.0, rel=0.15) and errors["rpe_pairs"] == 20
    assert errors["rpe_rotation_deg"] < 1e-6
    assert relative_pose_error(stretched, truth, 10, scale=1 / 1.1)["rpe_translation_rmse"] < 1e-9
    assert relative_pose_error(truth, truth, 30) == {"rpe_frames": 30, "rpe_pairs": 0}
