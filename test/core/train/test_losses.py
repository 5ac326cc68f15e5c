"""VGGT's training losses against values computed by hand."""

import math

import pytest
import torch

import numpy as np

from vggt_quant_core.eval.metrics import relative_pose_errors
from vggt_quant_core.geometry import extri_intri_to_pose_encoding, mat_to_quat, quat_to_mat
from vggt_quant_core.train.losses import (LossWeights, below_quantile, camera_loss, confidence_regression_loss,
                                          relative_pose_loss, vggt_loss)

EXACT = LossWeights(gradient_scales=1, valid_quantile=1.0)  # one scale, no outlier filtering: easy hand sums


def _dense(values, channels=1):
    """[W] or [W, C] values -> [1, 1, 1, W, C] (one frame, one image row)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    return tensor.reshape(1, 1, 1, -1, channels)


def test_camera_loss_weights_later_iterations_more_and_fov_half():
    gt = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.0, 0.0, 1.0, 0.9, 1.1], dtype=torch.float64).reshape(1, 1, 9)
    first = gt + torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)      # translation off by 1
    last = gt + torch.tensor([0, 0, 0, 0.4, 0, 0, 0, 0, 0.2], dtype=torch.float64)      # quaternion and FoV off
    loss = camera_loss([first, last], gt)
    # iteration 1 weighs 0.6, iteration 2 weighs 1; sums are divided by the 2 iterations
    assert loss["translation"].item() == pytest.approx(0.6 * (1 / 3) / 2)
    assert loss["rotation"].item() == pytest.approx(1.0 * (0.4 / 4) / 2)
    assert loss["fov"].item() == pytest.approx(1.0 * (0.2 / 2) / 2)
    assert loss["camera"].item() == pytest.approx(0.1 + 0.05 + 0.5 * 0.05)


def test_camera_translation_error_is_clamped_at_100():
    gt = torch.zeros(1, 1, 9)
    pred = gt.clone()
    pred[..., 0] = 250.0
    assert camera_loss([pred], gt)["translation"].item() == pytest.approx(100 / 3)


def test_depth_loss_by_hand():
    # errors 0, 1, 3; confidences 1, 2, e
    pred, gt, conf = _dense([1.0, 2.0, 4.0]), _dense([1.0, 1.0, 1.0]), torch.tensor([[[[1.0, 2.0, math.e]]]])
    valid = torch.ones(1, 1, 1, 3, dtype=torch.bool)
    loss = confidence_regression_loss(pred, gt, valid, conf.double(), EXACT)
    conf_term = (0.0 + (2 * 1 - 0.2 * math.log(2)) + (math.e * 3 - 0.2)) / 3
    # neighbour changes of the error map: |1 - 0| with the right pixel's confidence 2, |3 - 1| with e
    gradient_term = ((2 * 1 - 0.2 * math.log(2)) + (math.e * 2 - 0.2)) / 3
    assert loss["conf"].item() == pytest.approx(conf_term)
    assert loss["plain"].item() == pytest.approx(4 / 3)
    assert loss["gradient"].item() == pytest.approx(gradient_term)
    assert loss["total"].item() == pytest.approx(conf_term + 4 / 3 + gradient_term)


def test_invalid_pixels_count_nowhere():
    pred, gt = _dense([1.0, 50.0, 4.0]), _dense([1.0, 1.0, 1.0])
    conf = torch.tensor([[[[1.0, 7.0, 2.0]]]], dtype=torch.float64)
    valid = torch.tensor([[[[True, False, True]]]])
    loss = confidence_regression_loss(pred, gt, valid, conf, EXACT)
    assert loss["conf"].item() == pytest.approx((0.0 + 2 * 3 - 0.2 * math.log(2)) / 2)
    assert loss["plain"].item() == pytest.approx(1.5)
    assert loss["gradient"].item() == 0.0  # no pair of neighbouring valid pixels


def test_point_error_is_euclidean_over_channels_and_gradient_per_channel():
    pred = _dense([[3.0, 4.0, 0.0], [3.0, 4.0, 0.0]], channels=3)
    gt = torch.zeros_like(pred)
    conf = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    valid = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    loss = confidence_regression_loss(pred, gt, valid, conf, EXACT)
    assert loss["plain"].item() == pytest.approx(5.0)
    assert loss["conf"].item() == pytest.approx(5.0)  # c = 1: log c = 0
    assert loss["gradient"].item() == 0.0             # the error map is constant
    pred[0, 0, 0, 1] = torch.tensor([4.0, 2.0, 1.0])  # changes 1, 2, 1 -> sum 4 over 2 pixels x 3 channels
    assert confidence_regression_loss(pred, gt, valid, conf, EXACT)["gradient"].item() == pytest.approx(4 / 6)


def test_gradient_term_averages_scales_of_every_other_pixel():
    # a 1 x 4 row: scale 0 sees pairs (0,1), (1,2), (2,3); scale 1 sees pixels 0 and 2 only
    pred, gt = _dense([0.0, 1.0, 1.0, 4.0]), _dense([0.0, 0.0, 0.0, 0.0])
    conf, valid = torch.ones(1, 1, 1, 4, dtype=torch.float64), torch.ones(1, 1, 1, 4, dtype=torch.bool)
    loss = confidence_regression_loss(pred, gt, valid, conf, LossWeights(gradient_scales=2, valid_quantile=1.0))
    scale0 = (1 + 0 + 3) / 4
    scale1 = 1 / 2
    assert loss["gradient"].item() == pytest.approx((scale0 + scale1) / 2)


def test_below_quantile_drops_the_largest_values_only_when_many():
    values = torch.arange(2000, dtype=torch.float64)
    kept = below_quantile(values, 0.98)
    assert kept.numel() == 1959 and kept.max().item() == 1958  # the 98th percentile (nearest rank) is 1959
    assert below_quantile(values[:1000], 0.98).numel() == 1000
    assert below_quantile(values, 1.0).numel() == 2000


def test_perfect_confident_prediction_costs_nothing_and_confidence_is_pulled_towards_the_error():
    frames, height, width = 2, 4, 5
    extrinsics = torch.eye(3, 4).repeat(1, frames, 1, 1)
    extrinsics[0, 1, 0, 3] = 0.5
    intrinsics = torch.tensor([[50.0, 0, width / 2], [0, 50.0, height / 2], [0, 0, 1]]).repeat(1, frames, 1, 1)
    depth = torch.rand(1, frames, height, width) + 1
    points = torch.rand(1, frames, height, width, 3)
    target = {"images": torch.zeros(1, frames, 3, height, width), "extrinsics": extrinsics,
              "intrinsics": intrinsics, "depth": depth, "world_points": points,
              "valid": torch.ones(1, frames, height, width, dtype=torch.bool)}
    pose = extri_intri_to_pose_encoding(extrinsics, intrinsics, (height, width))
    conf = torch.ones(1, frames, height, width, requires_grad=True)
    predictions = {"pose_enc_list": [pose] * 4, "depth": depth[..., None], "depth_conf": conf,
                   "world_points": points, "world_points_conf": conf}
    parts = vggt_loss(predictions, target)
    assert parts["loss"].item() == pytest.approx(0.0, abs=1e-6)
    parts["loss"].backward()
    # d/dc (c e - alpha log c) = -alpha at e = 0: raising confidence on exact pixels lowers the loss
    assert (conf.grad < 0).all()


def _random_extrinsics(batch, frames, seed):
    generator = torch.Generator().manual_seed(seed)
    rotation = quat_to_mat(torch.randn(batch, frames, 4, generator=generator, dtype=torch.float64))
    return torch.cat([rotation, torch.randn(batch, frames, 3, 1, generator=generator, dtype=torch.float64)], -1)


def _encode(extrinsics):
    """[B, S, 3, 4] -> pose encodings [B, S, 9] (the FoV plays no part in the pair loss)."""
    fov = torch.ones(extrinsics.shape[:2] + (2,), dtype=extrinsics.dtype)
    return torch.cat([extrinsics[..., 3], mat_to_quat(extrinsics[..., :3]), fov], -1)


def test_pair_rotation_term_is_the_metrics_relative_rotation_error_over_every_ordered_pair():
    truth, prediction = _random_extrinsics(2, 5, seed=1), _random_extrinsics(2, 5, seed=2)
    loss = relative_pose_loss([_encode(prediction)], truth, LossWeights(pair_min_baseline=0.0))
    # The metric scores pairs i < j in float64; (j, i) has the same rotation error as (i, j).
    expected = np.concatenate([relative_pose_errors(p.numpy(), t.numpy())[0] for p, t in zip(prediction, truth)])
    assert loss["pair_rotation"].item() == pytest.approx(math.radians(expected.mean()), rel=1e-5)


def test_pair_loss_is_zero_for_the_truth_and_blind_to_the_predictions_world_frame_and_scale():
    truth = _random_extrinsics(1, 4, seed=3)
    exact = relative_pose_loss([_encode(truth)], truth)
    assert exact["pair"].item() < 1e-4
    # Another world frame and scale for the same cameras: E' = [R_i Q^T | s t_i]... the relative poses
    # E_i E_j^-1 only change by the scale of their translations, which direction angles ignore.
    world = quat_to_mat(torch.tensor([0.3, -0.2, 0.5, 0.8], dtype=torch.float64))
    moved = torch.cat([truth[..., :3] @ world.T, 7.0 * truth[..., 3:]], -1)
    assert relative_pose_loss([_encode(moved)], truth)["pair"].item() < 1e-4
    wrong = _random_extrinsics(1, 4, seed=4)
    assert relative_pose_loss([_encode(wrong)], truth)["pair"].item() > 0.5


def test_pair_translation_term_sees_a_flipped_direction_and_skips_tiny_baselines():
    truth = torch.eye(3, 4, dtype=torch.float64).repeat(1, 2, 1, 1)
    truth[0, 1, 0, 3] = 0.05                    # camera 1 moved sideways by 0.05 units
    flipped = truth.clone()
    flipped[0, 1, 0, 3] = -0.2
    loss = relative_pose_loss([_encode(flipped)], truth)
    assert loss["pair_translation"].item() == pytest.approx(math.pi, rel=1e-5)  # both orders point backwards
    assert loss["pair_rotation"].item() < 1e-5
    # A camera turning on the spot has no translation direction to learn: the term leaves the pair out.
    turning = torch.eye(3, 4, dtype=torch.float64).repeat(1, 2, 1, 1)
    turning[0, 1, :, :3] = quat_to_mat(torch.tensor([0.0, 0.1, 0.0, 1.0], dtype=torch.float64))
    turning[0, 1, 0, 3] = 0.001
    assert relative_pose_loss([_encode(flipped)], turning)["pair_translation"].item() == 0.0


def test_pair_loss_joins_the_objective_with_its_weight_and_gives_finite_gradients_at_the_truth():
    truth = _random_extrinsics(1, 3, seed=5)
    intrinsics = torch.tensor([[50.0, 0, 28], [0, 50.0, 21], [0, 0, 1]], dtype=torch.float64).expand(1, 3, 3, 3)
    target = {"extrinsics": truth, "intrinsics": intrinsics, "images": torch.zeros(1, 3, 3, 42, 56)}
    encoding = extri_intri_to_pose_encoding(truth, intrinsics, (42, 56)).requires_grad_(True)
    off = encoding.detach() + 0.1
    without = vggt_loss({"pose_enc_list": [off]}, target, LossWeights())
    with_pair = vggt_loss({"pose_enc_list": [off]}, target, LossWeights(pair=2.0))
    assert "pair" not in without
    assert with_pair["loss"].item() == pytest.approx(without["loss"].item() + 2.0 * with_pair["pair"].item())
    exact = vggt_loss({"pose_enc_list": [encoding]}, target, LossWeights(pair=1.0))
    exact["loss"].backward()
    assert torch.isfinite(encoding.grad).all()
