"""Scoring a whole prediction: a perfect one (in another world frame and scale) and the baseline."""

import math

import numpy as np
import pytest
import torch

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.eval.evaluate import align_extrinsics, ground_truth_points, score, trivial_prediction
from vggt_quant_core.export.preview import Panel, Trajectory, render_preview
from vggt_quant_core.geometry import Sim3


@pytest.fixture(scope="module")
def truth():
    return generate_sequence(1_000_003, 4, 56, 42, trajectory="handheld").cameras[0]


def _moved(truth, world: Sim3):
    """The ground truth expressed in another world frame and scale, as VGGT would predict it."""
    rotation, scale = world.rotation.numpy(), world.scale.item()
    extrinsics = truth.extrinsics.astype(np.float64).copy()
    extrinsics[:, :, :3] = truth.extrinsics[:, :, :3] @ rotation.T
    extrinsics[:, :, 3] = scale * truth.extrinsics[:, :, 3] - extrinsics[:, :, :3] @ world.translation.numpy()
    points = world.apply(torch.from_numpy(ground_truth_points(truth))).numpy()
    return extrinsics, truth.depth * scale, points


def test_perfect_prediction_in_another_frame_scores_perfectly_and_aligns_back(truth):
    angle = math.radians(30)
    world = Sim3(torch.tensor(0.25, dtype=torch.float64),
                 torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0],
                               [0, 0, 1]], dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    extrinsics, depth, points = _moved(truth, world)
    scored = score(extrinsics, depth, points, truth)
    assert scored.rotation_errors.max() < 1e-4 and scored.translation_errors.max() < 1e-4
    assert scored.metrics["abs_rel"] < 1e-6 and scored.metrics["delta<1.25"] == 1.0
    assert scored.metrics["accuracy"] < 1e-5 and scored.metrics["completeness"] < 1e-5
    assert scored.metrics["normal_consistency"] > 0.999
    # the alignment takes the predicted cameras back onto the true ones (what the demo picture draws)
    np.testing.assert_allclose(align_extrinsics(extrinsics, scored.alignment), truth.extrinsics, atol=1e-5)


def test_baseline_scores_zero_pose_auc_and_median_depth(truth):
    scored = score(*trivial_prediction(truth), truth)
    assert (scored.translation_errors == 90).all()
    valid = truth.depth > 0
    expected = np.mean([np.mean(np.abs(np.median(d[v]) - d[v]) / d[v]) for d, v in zip(truth.depth, valid)])
    assert scored.metrics["abs_rel"] == pytest.approx(expected)


def test_prediction_at_another_resolution_is_refused(truth):
    extrinsics, depth, points = trivial_prediction(truth)
    with pytest.raises(ValueError, match="render the scenes at the model's input size"):
        score(extrinsics, depth[:, :-1], points[:, :-1], truth)


def test_preview_draws_the_trajectory_where_the_cameras_are(truth):
    points = ground_truth_points(truth)[truth.depth > 0]
    colours = truth.images[truth.depth > 0]
    red = (255, 0, 0)
    with_cameras = render_preview([Panel("cloud", points, colours)],
                                  [Trajectory("truth", truth.extrinsics.astype(np.float64), red)], [])
    assert with_cameras.shape == (360, 480, 3)
    above_legend = with_cameras[:330]
    assert (above_legend == red).all(-1).sum() > 50  # trajectory and frustums are in view
