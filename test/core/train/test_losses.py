"""VGGT's training losses against values computed by hand."""

import math

import pytest
import torch

from vggt_quant_core.geometry import extri_intri_to_pose_encoding
from vggt_quant_core.train.losses import (LossWeights, below_quantile, camera_loss, confidence_regression_loss,
                                          vggt_loss)

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
