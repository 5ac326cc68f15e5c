"""Metrics on hand-computed cases and invariances."""

import math

import numpy as np
import pytest
import torch

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.eval import (depth_metrics, point_cloud_metrics, point_map_metrics, point_map_normals,
                                  pose_auc, pose_metrics, relative_pose_errors)
from vggt_quant_core.eval.metrics import constant_direction_translation_errors
from vggt_quant_core.geometry import unproject_depth_map_to_point_map


def _rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


@pytest.fixture(scope="module")
def scene():
    return generate_sequence(7, 4, 48, 36, trajectory="orbit").cameras[0]


def test_perfect_poses_score_one(scene):
    rotation, translation = relative_pose_errors(scene.extrinsics, scene.extrinsics)
    assert rotation.shape == translation.shape == (6,)
    assert rotation.max() < 1e-4 and translation.max() < 1e-4
    assert all(v == 1.0 for k, v in pose_metrics(rotation, translation).items() if k.startswith("auc"))


def test_rotating_one_camera_by_2_5_degrees_gives_hand_computed_auc(scene):
    pred = scene.extrinsics[:3].astype(np.float64).copy()
    turn = _rotation([0.3, 1.0, -0.2], 2.5)
    pred[2] = turn @ pred[2]  # the camera turns about its own centre: relative translations are unchanged
    rotation, translation = relative_pose_errors(pred, scene.extrinsics[:3])
    np.testing.assert_allclose(rotation, [0, 2.5, 2.5], atol=1e-4)
    np.testing.assert_allclose(translation, [0, 0, 0], atol=1e-4)
    # pairs' worst errors 0, 2.5, 2.5: fraction below k degrees = 1/3, 1/3, 1, 1, ... for k = 1, 2, 3, ...
    assert pose_auc(rotation, translation, 3) == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert pose_auc(rotation, translation, 5) == pytest.approx((2 / 3 + 3) / 5)
    assert pose_auc(rotation, translation, 30) == pytest.approx((2 / 3 + 28) / 30)


def test_translation_error_is_the_angle_between_undirected_directions():
    def extrinsics_at(centres):
        return np.stack([np.concatenate([np.eye(3), -np.asarray(c, float)[:, None]], 1) for c in centres])

    gt = extrinsics_at([[0, 0, 0], [1, 0, 0]])
    tilted = extrinsics_at([[0, 0, 0], [math.cos(math.radians(10)), math.sin(math.radians(10)), 0]])
    assert relative_pose_errors(tilted, gt)[1][0] == pytest.approx(10, abs=1e-6)
    assert relative_pose_errors(extrinsics_at([[0, 0, 0], [-3, 0, 0]]), gt)[1][0] == pytest.approx(0, abs=1e-6)
    assert relative_pose_errors(extrinsics_at([[0, 0, 0], [0, 0, 0]]), gt)[1][0] == 90.0


def test_constant_direction_reference_is_what_the_best_single_direction_scores():
    def extrinsics_at(centres):
        return np.stack([np.concatenate([np.eye(3), -np.asarray(c, float)[:, None]], 1) for c in centres])

    # Cameras along x (pairs' translations along x) and one sequence moving along y: the best single axis is x.
    along_x, along_y = extrinsics_at([[0, 0, 0], [1, 0, 0], [3, 0, 0]]), extrinsics_at([[0, 0, 0], [0, 2, 0]])
    errors, axis = constant_direction_translation_errors([along_x, along_y])
    assert abs(axis[0]) == pytest.approx(1.0) and errors.shape == (4,)
    np.testing.assert_allclose(errors, [0, 0, 0, 90], atol=1e-4)
    # Predicting that axis for every pair gives the metric's errors exactly.
    constant = extrinsics_at([[0, 0, 0], [1, 0, 0]])
    assert relative_pose_errors(constant, along_y)[1][0] == pytest.approx(errors[-1])
    # No single direction beats it: a brute-force search over directions finds nothing better on average.
    rng = np.random.default_rng(0)
    rotations = [_rotation(rng.normal(size=3), angle) for angle in rng.uniform(5, 60, size=6)]
    scenes = [extrinsics_at(rng.normal(size=(4, 3))) for _ in range(3)]
    scenes = [np.concatenate([r @ e[:, :, :3], e[:, :, 3:]], 2) for r, e in zip(rotations, scenes)]
    best = constant_direction_translation_errors(scenes)[0].mean()
    candidates = rng.normal(size=(2000, 3))
    pairs = np.concatenate([_pair_translations(e) for e in scenes])
    cosines = np.abs(pairs @ (candidates / np.linalg.norm(candidates, axis=1, keepdims=True)).T) \
        / np.linalg.norm(pairs, axis=1, keepdims=True)
    assert best <= np.degrees(np.arccos(np.clip(cosines, 0, 1))).mean(0).min() + 0.5


def _pair_translations(extrinsics):
    """Translations of E_i E_j^-1 for pairs i < j, by hand."""
    out = []
    for i in range(len(extrinsics)):
        for j in range(i + 1, len(extrinsics)):
            ri, ti, rj, tj = extrinsics[i][:, :3], extrinsics[i][:, 3], extrinsics[j][:, :3], extrinsics[j][:, 3]
            out.append(ti - ri @ rj.T @ tj)
    return np.array(out)


def test_pose_errors_ignore_a_similarity_of_the_world(scene):
    rotation, scale, shift = _rotation([1, 2, 3], 40), 3.7, np.array([0.5, -2.0, 1.0])
    # World points X' = s R X + T: extrinsic [Rc | tc] becomes [Rc R^T | s tc - Rc R^T T].
    moved = scene.extrinsics.astype(np.float64).copy()
    moved[:, :, :3] = scene.extrinsics[:, :, :3] @ rotation.T
    moved[:, :, 3] = scale * scene.extrinsics[:, :, 3] - moved[:, :, :3] @ shift
    errors = relative_pose_errors(moved, scene.extrinsics)
    assert max(errors[0].max(), errors[1].max()) < 1e-4


def test_depth_metrics_hand_computed():
    gt = np.array([[[1.0, 1.0], [1.0, 1.0]]])
    assert depth_metrics(np.array([[[1.0, 1.0], [1.0, 2.0]]]), gt) == pytest.approx(
        {"abs_rel": 0.25, "delta<1.25": 0.75})
    # median scaling: a prediction at any scale scores perfectly; invalid ground truth (0) is ignored
    gt = np.array([[[2.0, 4.0], [0.0, 8.0]]])
    assert depth_metrics(gt * 0.1 + np.array([[[0, 0], [5.0, 0]]]), gt) == pytest.approx(
        {"abs_rel": 0.0, "delta<1.25": 1.0})
    # constant prediction -> median of ground truth (4): |4-2|/2, 0, |4-8|/8; ratios 2, 1, 2
    assert depth_metrics(np.full((1, 2, 2), 7.0), gt) == pytest.approx(
        {"abs_rel": (1 + 0 + 0.5) / 3, "delta<1.25": 1 / 3})
    # a non-finite prediction is a failure (contributes 1), not a crash; the rest is scaled by 4 / 6
    assert depth_metrics(np.array([[[np.nan, 4.0], [1.0, 8.0]]]), gt)["abs_rel"] == pytest.approx(
        (1 + 1 / 3 + 1 / 3) / 3)


def test_point_cloud_metrics_hand_computed():
    gt = np.array([[0.0, 0, 0], [1, 0, 0]])
    pred = np.array([[0.0, 0, 0.1], [1, 0, 0.3], [5, 0, 0]])
    metrics = point_cloud_metrics(pred, gt)
    assert metrics["accuracy"] == pytest.approx((0.1 + 0.3 + 4) / 3)
    assert metrics["accuracy_median"] == pytest.approx(0.3)
    assert metrics["completeness"] == pytest.approx(0.2) and metrics["completeness_median"] == pytest.approx(0.2)
    normals_gt = np.array([[0.0, 0, 1], [0, 0, 1]])
    normals_pred = np.array([[0.0, 0, -1], [0, 1, 0], [0.6, 0, 0.8]])
    metrics = point_cloud_metrics(pred, gt, normals_pred, normals_gt)
    # accuracy side |dots| 1, 0, 0 (point 3's nearest GT is (1,0,0)... dot 0.8); completeness side 1, 0
    assert metrics["normal_consistency"] == pytest.approx(((1 + 0 + 0.8) / 3 + (1 + 0) / 2) / 2)
    assert metrics["normal_consistency_median"] == pytest.approx((0.8 + 0.5) / 2)


def test_point_map_normals_of_a_plane():
    v, u = np.meshgrid(np.arange(5.0), np.arange(6.0), indexing="ij")
    plane = np.stack([u, v, 0.5 * u + 2], -1)[None]  # z = 0.5 x + 2
    normals = point_map_normals(plane)
    assert np.isnan(normals[0, 0]).all() and np.isnan(normals[0, :, -1]).all()
    expected = np.array([-0.5, 0, 1]) / math.sqrt(1.25)
    np.testing.assert_allclose(np.abs(normals[0, 1:-1, 1:-1] @ expected), 1.0)


def test_similar_copy_of_ground_truth_points_scores_perfectly(scene):
    depth = torch.from_numpy(scene.depth).double()
    gt = unproject_depth_map_to_point_map(depth, torch.from_numpy(scene.extrinsics),
                                          torch.from_numpy(scene.intrinsics)).numpy()
    valid = scene.depth > 0
    pred = 0.3 * gt @ _rotation([1, -1, 2], 70).T + np.array([4.0, 1.0, -2.0])
    metrics, sim3 = point_map_metrics(pred, gt, valid)
    assert sim3.scale.item() == pytest.approx(1 / 0.3)
    assert metrics["accuracy"] < 1e-6 and metrics["completeness"] < 1e-6
    assert metrics["normal_consistency"] > 0.999
    noisy = gt + np.random.default_rng(0).normal(0, 0.05, gt.shape)
    worse, _ = point_map_metrics(noisy, gt, valid)
    assert 0.01 < worse["accuracy"] < 0.1 and worse["normal_consistency"] < metrics["normal_consistency"]
    degenerate, sim3 = point_map_metrics(np.zeros_like(gt), gt, valid)
    assert sim3 is None and math.isnan(degenerate["accuracy"])
