"""The metric scale without ROS: per-window samples against known geometry, the filter's fusion with
chaining, the odometry track, depth pairing and the map's one-time rescale."""

import math

import numpy as np
import pytest

from vggt_quant_core.stream.mapping import VoxelMap, VoxelSums
from vggt_quant_core.data.bags import baseline_from_projection
from vggt_quant_core.stream.metric_scale import (NoScale, OdometryTrack, ScaleFilter, ScaleSample, depth_pairs,
                                                 depth_scale, robust_ratio, stereo_scale, travel_scale)
from vggt_quant_core.stream.windowing import Frame, StampPairing


def test_robust_ratio_ignores_outliers_and_reports_spread():
    rng = np.random.default_rng(0)
    predicted = rng.uniform(1, 3, 400)
    measured = 2.5 * predicted * (1 + 0.01 * rng.standard_normal(400))
    measured[:40] *= 5              # 10 % gross outliers
    sample = robust_ratio(measured, predicted, "depth")
    assert sample.metres_per_unit == pytest.approx(2.5, rel=2e-3)
    assert 0.007 < sample.spread < 0.013 and 355 <= sample.samples <= 365
    with pytest.raises(NoScale, match="1 usable depth measurements in the window \\(need 5\\)"):
        robust_ratio([1.0, np.nan, 0.0], [1.0, 1.0, 1.0], "depth", min_samples=5)


def test_stereo_scale_from_predicted_centres_and_baseline():
    rng = np.random.default_rng(1)
    left = rng.normal(size=(6, 3))
    direction = rng.normal(size=(6, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    units_per_metre = 0.37
    centres = np.stack([left, left + units_per_metre * 0.12 * direction], axis=1)   # baseline 12 cm
    sample = stereo_scale(centres, 0.12)
    assert sample.metres_per_unit == pytest.approx(1 / units_per_metre, rel=1e-9) and sample.samples == 6
    for bad in (0.0, -0.1, math.nan):
        with pytest.raises(NoScale, match="stereo baseline is"):
            stereo_scale(centres, bad)
    assert baseline_from_projection([500.0, 0, 320, -500.0 * 0.12, 0, 500, 240, 0, 0, 0, 1, 0]) == pytest.approx(0.12)
    assert baseline_from_projection([0.0] * 12) == 0.0


def test_travel_scale_uses_pairs_that_moved_and_names_missing_odometry():
    track = np.array([[0, 0, 0], [0.02, 0, 0], [0.3, 0.1, 0], [0.6, 0.4, 0.1]])
    predicted = 0.5 * track @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]).T + 3   # rotated, shifted, 0.5 units/m
    assert travel_scale(predicted, track, 0.05).metres_per_unit == pytest.approx(2.0)
    assert travel_scale(predicted, track, 0.05).samples == 5        # the 2 cm pair does not count
    gaps = track.copy()
    gaps[1:3] = np.nan
    assert travel_scale(predicted, gaps, 0.05).samples == 1
    with pytest.raises(NoScale, match="travelled 0.020 m within the window"):
        travel_scale(predicted[:2], track[:2], 0.05)
    with pytest.raises(NoScale, match="odometry covers 1 of the window's 4 keyframes"):
        travel_scale(predicted, np.where(np.arange(4)[:, None] == 0, track, np.nan), 0.05)


def test_depth_pairs_follow_the_preprocessing_crop():
    """A 160x160 depth image registered to the colour image, against the model's depth of its preprocessed
    (112 wide, centre-cropped to 112 high) input: the same smooth surface, 3 model units per metre."""
    def surface(u, v, width, height):   # depth as a function of the normalised image position
        return 1.0 + (u + 0.5) / width + 0.5 * ((v + 0.5) / height) ** 2

    v, u = np.mgrid[0:160, 0:160].astype(np.float64)
    measured = surface(u, v, 160, 160).astype(np.float32)
    measured[::7, ::5] = np.nan   # holes
    # crop mode at 112: resize to 112x112 (no crop needed for a square); pad mode at 112 as well
    mv, mu = np.mgrid[0:112, 0:112].astype(np.float64)
    predicted = 3.0 * surface(mu, mv, 112, 112)
    sample = depth_scale([depth_pairs(measured, predicted, "crop", 112)])
    assert sample.metres_per_unit == pytest.approx(1 / 3, rel=5e-3) and sample.samples > 5000
    # a tall image is cropped: measured 80 wide x 160 high -> 112 x 224 -> centre crop to 112 x 112
    v, u = np.mgrid[0:160, 0:80].astype(np.float64)
    tall = surface(u, v, 80, 160)
    cv, cu = np.mgrid[0:112, 0:112].astype(np.float64)
    predicted_tall = 3.0 * surface(cu, cv + 56, 112, 224)
    cropped = depth_scale([depth_pairs(tall, predicted_tall, "crop", 112)])
    assert cropped.metres_per_unit == pytest.approx(1 / 3, rel=5e-3)
    with pytest.raises(NoScale, match="no depth image matched"):
        depth_scale([])
    with pytest.raises(NoScale, match="usable depth"):
        depth_scale([depth_pairs(np.full((160, 160), np.nan), predicted, "crop", 112)])


def test_filter_first_sample_makes_the_map_metric_then_corrects_drift_gently():
    scale = ScaleFilter(drift_per_window=0.02)
    assert scale.update(1.0, None).scale == 1.0 and not scale.metric        # no sample: chaining rules
    first = scale.update(0.8, ScaleSample(2.0, 0.0, 10, "stereo"))
    assert scale.metric and first.scale == 2.0 and first.rescale_map == pytest.approx(2.5) and first.used
    # chaining drifts by +3 % per window against exact samples: corrected, never by a jump
    truth, chained_error, applied = 2.0, 1.0, []
    for _ in range(30):
        chained_error *= 1.03
        decision = scale.update(truth * chained_error, ScaleSample(truth, 0.0, 10, "stereo"))
        assert decision.rescale_map == 1.0 and decision.used
        step = decision.scale / (truth * chained_error)
        applied.append(decision.scale)
        chained_error = decision.scale / truth       # the next window chains onto this one
        assert abs(step - 1) < 0.1
    assert applied[-1] == pytest.approx(truth, rel=0.03)
    # an outlier is counted, not applied; the uncertainty grows, so a lasting change is accepted eventually
    before = scale.relative_sigma
    outlier = scale.update(2.0, ScaleSample(4.0, 0.0, 10, "stereo"))
    assert not outlier.used and outlier.scale == 2.0 and "disagrees with the map by +100.0 %" in outlier.problem
    assert scale.rejected == 1 and scale.relative_sigma > before
    # samples that stay outside the gate on one side: chaining drifts faster than assumed; followed, bounded
    chained, steps, problems = 2.0, [], []
    for window in range(40):
        decision = scale.update(chained, ScaleSample(1.7, 0.0, 10, "stereo"))   # 15 % below, every window
        steps.append(decision.scale / chained - 1)
        problems.append(decision.problem)
        chained = decision.scale
    assert steps[0] == 0.0 and "kept the map's scale" in problems[0] and "following it by at most" in problems[1]
    assert max(abs(x) for x in steps) < 0.1 and chained == pytest.approx(1.7, rel=0.01) and scale.clipped >= 1
    status = scale.status("stereo")
    assert status["scale_mode"] == "metric (metres, from stereo)" and status["scale_windows_rejected"] == "2"
    assert ScaleFilter().status("odometry")["scale_mode"].endswith("waiting for a odometry sample")


def test_odometry_track_interpolates_inside_and_refuses_gaps():
    track = OdometryTrack(max_gap_ns=100)
    for stamp, x in ((0, 0.0), (100, 1.0), (200, 3.0), (150, 9.0), (600, 4.0)):   # 150 is out of order: ignored
        track.add(stamp, (x, 0, 0))
    positions = track.positions_at([0, 50, 150, 200, 400, 700, -5])
    assert positions[:4, 0].tolist() == [0.0, 0.5, 2.0, 3.0]
    assert np.isnan(positions[4:]).all()     # in a 400 ns gap, after the end, before the start
    assert track.received == 5


def test_stamp_pairing_pairs_in_either_order_within_slop():
    attached = []
    pairing = StampPairing(10, lambda frame, item: attached.append((frame.stamp_ns, item)))

    def frame(stamp):
        return Frame(camera=0, stamp_ns=stamp, frame_id="cam", rgb=np.zeros((2, 2, 3), np.uint8))

    pairing.add_item(95, "early")
    pairing.add_item(200, "far")
    pairing.add_frame(frame(100))     # the depth came first
    pairing.add_frame(frame(300))
    pairing.add_item(305, "late")     # the depth came second
    pairing.add_item(500, "nobody")
    assert attached == [(100, "early"), (300, "late")]


def test_voxel_map_rescale_scales_points_and_merges_voxels():
    rng = np.random.default_rng(2)
    xyz = rng.uniform(-1, 1, (2000, 3))
    rgb = rng.integers(0, 255, (2000, 3)).astype(np.uint8)
    voxels = VoxelMap(0.05, 100000)
    voxels.add(VoxelSums.of(xyz, rgb, np.ones(2000, np.float32), 0.05))
    before = voxels.arrays()[0]
    voxels.rescale(2.0)
    assert len(voxels) == len(before) and np.allclose(np.sort(voxels.arrays()[0], 0), np.sort(2 * before, 0),
                                                      atol=1e-5)
    voxels.rescale(0.01)              # everything within a few voxels now: they merge, sums and counts add
    centroids = voxels.arrays()[0]
    assert len(voxels) <= 27 and np.allclose(centroids.mean(0), 0.02 * xyz.mean(0), atol=0.02)
