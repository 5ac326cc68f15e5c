"""The node's per-window work without ROS: keyframes -> cameras, depth, cloud and map update."""

import dataclasses

import numpy as np

from helpers_truth import GroundTruthModel, rig
from vggt_quant_core.stream.estimator import Estimator
from vggt_quant_core.stream.settings import StreamSettings
from vggt_quant_core.stream.window_processor import MetricSensors, WindowProcessor
from vggt_quant_core.stream.windowing import Frame, FrameSet

WIDTH, HEIGHT = 112, 84
DEFAULTS = StreamSettings.defaults()


def _keyframes(truth, steps):
    return [FrameSet((Frame(camera=0, stamp_ns=1_000_000_000 + t, frame_id="cam0_optical_frame",
                            rgb=truth.images[0, t]),)) for t in steps]


def test_two_windows_give_depth_in_map_units_and_a_growing_path():
    truth = rig(6, WIDTH, HEIGHT)
    model = GroundTruthModel(truth, scales=(0.7, 1.3))
    estimator = Estimator(predict=model.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32",
                          bits=32)
    settings = dataclasses.replace(DEFAULTS, window_size=4, window_stride=2, conf_percentile=0.0)
    problems = []
    processor = WindowProcessor(estimator, settings, lambda *problem: problems.append(problem))
    first = processor.process(_keyframes(truth, range(4)), settings)
    assert [pose.stamp_ns for pose in processor.path] == [1_000_000_000 + t for t in range(4)]
    second = processor.process(_keyframes(truth, range(2, 6)), settings)
    assert problems == [] and model.windows[1] == [(0, t) for t in range(2, 6)]
    assert [pose.stamp_ns for pose in processor.path] == [1_000_000_000 + t for t in range(6)]
    for result, step in ((first, 3), (second, 5)):
        (view,) = result.depth
        assert view.frame is result.frames[-1] and view.depth.shape == (HEIGHT, WIDTH)
        valid = np.isfinite(view.depth)
        assert valid.mean() > 0.5
        # the map's unit is the first window's: 0.7 times the true depth in both windows
        np.testing.assert_allclose(view.depth[valid], 0.7 * truth.depth[0, step][valid], rtol=1e-3)
        np.testing.assert_allclose(view.intrinsics, truth.intrinsics, rtol=1e-4)
    assert second.map_points == len(second.cloud[0]) > first.update.xyz.shape[0] > 0


def _stereo_keyframes(truth, steps):
    return [FrameSet(tuple(Frame(camera=c, stamp_ns=1_000_000_000 + t, frame_id=f"cam{c}_optical_frame",
                                 rgb=truth.images[c, t]) for c in (0, 1))) for t in steps]


def test_a_metric_source_bounds_the_scale_drift_of_chaining():
    """The double's scale grows 1 % per frame within each window, so chaining drifts by about 3 % per window;
    stereo samples hold the map in metres to within the window's own inconsistency (0-5 %)."""
    truth = rig(33, WIDTH, HEIGHT, cameras=2)
    baseline = float(np.linalg.norm(truth.centre(1, 0) - truth.centre(0, 0)))
    errors = {}
    for source in ("none", "stereo"):
        model = GroundTruthModel(truth, scales=(0.7, 1.3, 0.9), drift=0.01)
        estimator = Estimator(predict=model.predict, image_size=WIDTH, description="drifting truth",
                              backend="cpu fp32", bits=32)
        settings = dataclasses.replace(DEFAULTS, window_size=6, window_stride=3, conf_percentile=0.0,
                                       scale_source=source, cameras=2)
        processor = WindowProcessor(estimator, settings, lambda *problem: None,
                                    MetricSensors(baseline_m=lambda: baseline))
        ratios = []
        for start in range(0, 28, 3):
            result = processor.process(_stereo_keyframes(truth, range(start, start + 6)), settings)
            view = result.depth[0]
            ratios.append(np.nanmedian(view.depth / truth.depth[0, start + 5]))
        errors[source] = np.abs(np.array(ratios) / (ratios[0] if source == "none" else 1.0) - 1)
    assert errors["none"][-1] > 0.2                       # in the first window's units, drifting away
    assert errors["stereo"].max() < 0.05 and errors["stereo"][-1] < 0.04   # 3.2 % here, steady
