"""The reconstruct node's metric scale over real rclpy pub/sub: with the ground-truth double at a random scale per
window (as VGGT's normalisation gives), each source puts poses, path and depth in metres; bad scale inputs give
one clear problem and no jump."""

import numpy as np
import pytest

from helpers_ros import Feeder, diagnostic_values, rgb_image, start_node, wait_for
from helpers_truth import GroundTruthModel, rig

from diagnostic_msgs.msg import DiagnosticArray  # noqa: I100 (helpers_ros skips this module without rclpy)
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image
from vggt_quant_ros import conversions
from vggt_quant_core.stream.estimator import Estimator
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL

WIDTH, HEIGHT = 112, 84
T0, DT = 1_000_000_000, 100_000_000
SCALES = (0.7, 1.3, 0.9, 1.1, 0.45)       # the double's model units per metre, one per window
FAST = dict(image_size=WIDTH, diagnostics_period_s=0.1, camera_timeout_s=600.0, conf_percentile=0.0)


def _double(truth) -> Estimator:
    return Estimator(predict=GroundTruthModel(truth, scales=SCALES).predict, image_size=WIDTH,
                     description="ground truth", backend="cpu fp32", bits=32)


def _metric_map(truth, world: np.ndarray) -> np.ndarray:
    """World points -> the metric map (camera 0 of step 0 at the origin, FLU axes, metres)."""
    first = truth.extrinsics[0, 0]
    return (world @ first[:, :3].T + first[:, 3]) @ FLU_FROM_OPTICAL.T


def _path_positions(path: Path) -> np.ndarray:
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses])


def _odometry(truth, step: int) -> Odometry:
    msg = Odometry()
    msg.header.frame_id, msg.child_frame_id = "odom", "cam_optical"
    msg.header.stamp = conversions.ns_to_stamp(T0 + step * DT)
    p = msg.pose.pose.position
    p.x, p.y, p.z = (float(v) for v in truth.centre(0, step) + np.array([5.0, -2.0, 0.3]))   # another origin
    return msg


def _depth_image(depth_m: np.ndarray, step: int, encoding: str = "16UC1") -> Image:
    """16UC1 millimetres or 32FC1 metres, 2 ms after the colour image of ``step``."""
    values = np.round(depth_m * 1000).astype("<u2") if encoding == "16UC1" else depth_m.astype("<f4")
    msg = Image(height=depth_m.shape[0], width=depth_m.shape[1], encoding=encoding, is_bigendian=0,
                step=values.itemsize * depth_m.shape[1])
    msg.header.stamp = conversions.ns_to_stamp(T0 + step * DT + 2_000_000)
    msg.header.frame_id = "cam_optical"
    msg.data = values.tobytes()
    return msg


class Scaled:
    """The node's path, depth and diagnostics, as the probe receives them."""

    def __init__(self, graph):
        self.path = graph.collect(Path, "/vggt/path")
        self.depth = graph.collect(Image, "/vggt/depth/cam0")
        self.diagnostics = graph.collect(DiagnosticArray, "/diagnostics")

    def diagnostic(self):
        return diagnostic_values(self.diagnostics[-1])

    def wait_for_windows(self, windows: int):
        wait_for(lambda: len(self.path) >= windows and self.diagnostics
                 and self.diagnostic()["windows_processed"] == str(windows), 10, f"{windows} windows")


def _assert_metric(truth, out: Scaled, steps: int, source: str, tolerance: float = 0.02):
    expected = _metric_map(truth, np.stack([truth.centre(0, s) for s in range(steps)]))
    positions = _path_positions(out.path[-1])
    travelled = np.linalg.norm(expected - expected[0], axis=1).max()
    assert travelled > 0.1
    assert np.abs(positions - expected).max() < tolerance * travelled
    values = out.diagnostic()
    assert values["scale_mode"] == f"metric (metres, from {source})" and values["scale_source"] == source
    assert int(values["scale_windows_used"]) >= 1 and values["scale_windows_rejected"] == "0"
    return values


def _stereo_node(graph, truth, **params):
    """A stereo-scaled node on /l and /r, its outputs, and a publisher of the right camera's CameraInfo."""
    node = start_node(graph, _double(truth), **FAST, image_topics=["/l/image", "/r/image"],
                      camera_info_topics=["/l/info", "/r/info"], window_size=4, window_stride=2, sync_slop_s=0.01,
                      scale_source="stereo", **params)
    info = graph.probe.create_publisher(CameraInfo, "/r/info", 10)
    wait_for(lambda: info.get_subscription_count() > 0, 10, "the node to subscribe to CameraInfo")
    return node, Scaled(graph), info


def _feed_stereo(graph, node, truth, steps):
    feed = Feeder(graph, node, ["/l/image", "/r/image"])
    for step in range(steps):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "l_optical"),
                       rgb_image(truth.images[1, step], T0 + step * DT + 1_000_000, "r_optical")])


def test_stereo_baseline_from_camera_info_gives_metres(graph):
    truth = rig(10, WIDTH, HEIGHT, cameras=2)
    baseline = float(np.linalg.norm(truth.centre(1, 0) - truth.centre(0, 0)))
    node, out, info = _stereo_node(graph, truth)
    right = CameraInfo(width=WIDTH, height=HEIGHT, k=truth.intrinsics.flatten().tolist())
    right.p = [truth.intrinsics[0, 0], 0.0, truth.intrinsics[0, 2], -truth.intrinsics[0, 0] * baseline,
               0.0, truth.intrinsics[1, 1], truth.intrinsics[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
    info.publish(right)
    wait_for(lambda: node.scale_inputs.sensors.baseline_m() > 0, 10, "the baseline from CameraInfo")
    _feed_stereo(graph, node, truth, 10)
    out.wait_for_windows(4)
    values = _assert_metric(truth, out, 10, "stereo", tolerance=1e-3)
    assert float(values["scale_m_per_unit"]) == pytest.approx(1 / SCALES[3], rel=1e-4)   # the 4th window's units
    # depth images are metres too, whatever the window's own scale was
    wait_for(lambda: len(out.depth) == 4, 10, "depth images")
    assert np.allclose(conversions.depth_from_image(out.depth[-1]), truth.depth[0, 9], rtol=1e-4)


def test_odometry_travel_gives_metres_and_the_map_switches_once_when_it_arrives(graph):
    truth = rig(12, WIDTH, HEIGHT)
    node = start_node(graph, _double(truth), **FAST, image_topics=["/cam/image"], window_size=4, window_stride=2,
                      scale_source="odometry", odometry_topic="/robot/odom")
    out = Scaled(graph)
    odom = graph.probe.create_publisher(Odometry, "/robot/odom", 10)
    wait_for(lambda: odom.get_subscription_count() > 0, 10, "the node to subscribe to odometry")
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(6):     # two windows before any odometry: up to scale, one problem named
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    out.wait_for_windows(2)
    values = out.diagnostic()
    assert values["scale_mode"].startswith("up-to-scale") and "waiting for a odometry sample" in values["scale_mode"]
    assert "no odometry received on /robot/odom" in values["last_problem"]
    for step in range(12):
        odom.publish(_odometry(truth, step))
        wait_for(lambda: node.scale_inputs.received == step + 1, 10, "odometry")
    for step in range(6, 12):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    out.wait_for_windows(5)
    _assert_metric(truth, out, 12, "odometry", tolerance=1e-3)   # the early path was rescaled with the map


def test_registered_depth_in_millimetres_gives_metres_and_bad_depth_is_named(graph):
    truth = rig(10, WIDTH, HEIGHT)
    node = start_node(graph, _double(truth), **FAST, image_topics=["/cam/image"], window_size=4, window_stride=2,
                      scale_source="depth", depth_topic="/cam/depth", sync_slop_s=0.01)
    out = Scaled(graph)
    depth = graph.probe.create_publisher(Image, "/cam/depth", 10)
    wait_for(lambda: depth.get_subscription_count() > 0, 10, "the node to subscribe to depth")
    feed = Feeder(graph, node, ["/cam/image"])
    bad = {0: _depth_image(np.zeros((HEIGHT, WIDTH)), 0),                     # all invalid (0 mm)
           1: _depth_image(truth.depth[0, 1][:40, :60], 1),                    # not registered to this camera
           2: _depth_image(np.full((HEIGHT, WIDTH), np.nan), 2, "32FC1")}     # all NaN
    sent = 0
    for step in range(10):
        msg = bad.get(step) if step < 4 else _depth_image(truth.depth[0, step], step)
        if msg is not None:   # step 3 has no depth at all
            depth.publish(msg)
            sent += 1
            wait_for(lambda: node.scale_inputs.received == sent, 10, "the depth image")
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
        if step == 1:
            assert "depth image is 60x40 but the image is 112x84" in node.stats().last_problem
        if step == 3:    # the first window (steps 0-3) had no usable depth: up to scale, the reasons named
            out.wait_for_windows(1)
            values = out.diagnostic()
            assert values["scale_mode"].startswith("up-to-scale")
            assert "usable depth measurements" in values["last_problem"]
            assert node.stats().rejected_frames == 0
    out.wait_for_windows(4)
    _assert_metric(truth, out, 10, "depth", tolerance=0.01)   # millimetre rounding


def test_a_given_baseline_wins_over_a_disagreeing_camera_info_and_says_so(graph):
    truth = rig(10, WIDTH, HEIGHT, cameras=2)
    baseline = float(np.linalg.norm(truth.centre(1, 0) - truth.centre(0, 0)))
    node, out, info = _stereo_node(graph, truth, stereo_baseline_m=baseline)
    fx = truth.intrinsics[0, 0]
    info.publish(CameraInfo(width=WIDTH, height=HEIGHT, p=[fx, 0.0, 0.0, -fx * 2 * baseline] + [0.0] * 8))
    wait_for(lambda: "disagrees with this CameraInfo" in node.stats().last_problem, 10, "the baseline warning")
    assert f"baseline {2 * baseline:.4g} m (-P[0,3]/P[0,0]): using stereo_baseline_m" in node.stats().last_problem
    _feed_stereo(graph, node, truth, 6)
    out.wait_for_windows(2)
    _assert_metric(truth, out, 6, "stereo", tolerance=1e-3)


def test_degenerate_stereo_baseline_is_named_and_the_map_stays_in_model_units(graph):
    truth = rig(10, WIDTH, HEIGHT, cameras=2)
    node, out, info = _stereo_node(graph, truth)
    info.publish(CameraInfo(width=WIDTH, height=HEIGHT, k=truth.intrinsics.flatten().tolist()))   # Tx = 0
    _feed_stereo(graph, node, truth, 6)
    out.wait_for_windows(2)
    values = out.diagnostic()
    assert values["scale_mode"].startswith("up-to-scale") and "stereo baseline is 0.0 m" in values["last_problem"]
    # chaining still holds the map together, in the first window's units
    expected = SCALES[0] * _metric_map(truth, np.stack([truth.centre(0, s) for s in range(6)]))
    assert np.allclose(_path_positions(out.path[-1]), expected, atol=1e-4)


def test_odometry_from_tf_when_tf2_is_importable_and_a_clear_error_without(graph, monkeypatch):
    import sys
    import types

    from vggt_quant_ros.parameters import ConfigurationError
    from vggt_quant_ros.reconstruct_node import ReconstructNode
    from rclpy.parameter import Parameter

    monkeypatch.setitem(sys.modules, "tf2_ros", None)   # not installed
    with pytest.raises(ConfigurationError, match="odometry_frame 'odom' needs tf2_ros, which is not installed"):
        ReconstructNode(context=graph.context, parameter_overrides=[
            Parameter("scale_source", value="odometry"), Parameter("odometry_frame", value="odom")])

    truth = rig(10, WIDTH, HEIGHT)
    asked = []

    class Buffer:
        def lookup_transform(self, target, source, time):
            asked.append((target, source))
            step = round((time.nanoseconds - T0) / DT)
            centre = truth.centre(0, step)
            translation = types.SimpleNamespace(x=centre[0], y=centre[1], z=centre[2])
            return types.SimpleNamespace(transform=types.SimpleNamespace(translation=translation))

    fake = types.ModuleType("tf2_ros")
    fake.Buffer, fake.TransformListener = Buffer, lambda buffer, node: None
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)
    node = start_node(graph, _double(truth), **FAST, image_topics=["/cam/image"], window_size=4, window_stride=2,
                      scale_source="odometry", odometry_frame="odom", tf_mode="none")
    out = Scaled(graph)
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(10):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    out.wait_for_windows(4)
    _assert_metric(truth, out, 10, "odometry", tolerance=1e-3)
    assert set(asked) == {("odom", "cam_optical")}


def test_throttle_repeats_every_period_and_once_kinds_only_the_first_time():
    from vggt_quant_ros.diagnostics import Throttle

    throttle = Throttle(period_s=5.0, once=("scale-missing",))
    assert [throttle.due((0, "image"), t) for t in (0.0, 1.0, 2.0, 6.0)] == [0, None, None, 2]
    assert [throttle.due(("scale-missing",), t) for t in (0.0, 1.0, 60.0)] == [0, None, None]
