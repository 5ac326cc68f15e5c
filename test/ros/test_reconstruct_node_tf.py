"""The node's /tf per tf_mode over real rclpy pub/sub, with a stand-in tf2_ros (no wheel exists): a broadcaster
that records, and a buffer that answers odom -> base from a simulated robot's odometry and base -> camera from
its mounting, as the odometry tests do."""

import sys
import time
import types

import numpy as np
import pytest

from helpers_ros import Feeder, rgb_image, start_node, wait_for
from helpers_truth import GroundTruthModel, rig

from nav_msgs.msg import Odometry  # noqa: I100 (helpers_ros skips this module without rclpy)
from vggt_quant_ros import conversions
from vggt_quant_ros.parameters import ConfigurationError
from vggt_quant_ros.transforms import inverse, pose, rigid
from vggt_quant_core.stream.estimator import Estimator

WIDTH, HEIGHT = 112, 84
T0, DT = 1_000_000_000, 100_000_000
FAST = dict(image_size=WIDTH, diagnostics_period_s=0.1, camera_timeout_s=600.0, window_size=4, window_stride=2)
# camera 0's optical frame on the robot: 20 cm ahead of base_link, 50 cm up, looking forward (optical z = base x)
MOUNTING = [0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]
ODOM_FROM_WORLD = rigid([1.5, -0.5, 0.0], [0.0, 0.0, np.sin(0.3), np.cos(0.3)])   # odometry started elsewhere


def _matrix(msg) -> np.ndarray:
    t, r = msg.transform.translation, msg.transform.rotation
    return rigid((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


def _message(transform: np.ndarray):
    position, quaternion = pose(transform)
    return conversions.transform(conversions.header("", 0), "", (position, quaternion))


class Robot:
    """Where the robot's odometry and mounting say camera 0 is; records what the node asks and sends."""

    def __init__(self, truth, with_static: bool):
        self.truth, self.with_static = truth, with_static
        self.odometry_from = None       # the first stamp with odometry (None: no odometry yet)
        self.asked, self.sent = [], []

    def odom_from_base(self, stamp_ns: int) -> np.ndarray:
        step = round((stamp_ns - T0) / DT)
        world_from_camera = inverse(np.vstack([self.truth.extrinsics[0, step], [0, 0, 0, 1]]))
        return ODOM_FROM_WORLD @ world_from_camera @ inverse(rigid(MOUNTING[:3], MOUNTING[3:]))

    def tf2_ros(self):
        robot = self

        class Buffer:
            def __init__(self, cache_time):
                assert cache_time.nanoseconds >= 60e9   # windows come long after their keyframes on a CPU

            def lookup_transform(self, target, source, time):
                robot.asked.append((target, source, time.nanoseconds))
                if (target, source) == ("odom", "base_link") and robot.odometry_from is not None \
                        and time.nanoseconds >= robot.odometry_from:
                    return _message(robot.odom_from_base(time.nanoseconds))
                if (target, source) == ("base_link", "cam_optical") and robot.with_static:
                    return _message(rigid(MOUNTING[:3], MOUNTING[3:]))
                raise LookupError(f'"{target}" passed to lookupTransform argument target_frame does not exist')

        fake = types.ModuleType("tf2_ros")
        fake.Buffer, fake.TransformListener = Buffer, lambda buffer, node: None
        fake.TransformBroadcaster = lambda node: types.SimpleNamespace(sendTransform=self.sent.extend)
        return fake


def _node(graph, monkeypatch, robot, steps=0, **params):
    """A node with the stand-in tf2_ros of ``robot`` (tf_mode map_odom unless given), fed ``steps`` time steps."""
    monkeypatch.setitem(sys.modules, "tf2_ros", robot.tf2_ros())
    model = GroundTruthModel(robot.truth, scales=(1.0,))
    estimator = Estimator(predict=model.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32",
                          bits=32)
    node = start_node(graph, estimator, **FAST, image_topics=["/cam/image"], **{"tf_mode": "map_odom", **params})
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(steps):
        feed.send_all([rgb_image(robot.truth.images[0, step], T0 + step * DT, "cam_optical")])
    return node, feed


@pytest.mark.parametrize("mounting", ["tf_static", "parameter"])
def test_map_to_odom_composed_with_odometry_gives_the_estimate(graph, monkeypatch, mounting):
    truth = rig(10, WIDTH, HEIGHT)
    robot = Robot(truth, with_static=mounting == "tf_static")
    odom = graph.collect(Odometry, "/vggt/odom")
    # the first window comes before any odometry: named once, nothing on /tf
    node, feed = _node(graph, monkeypatch, robot, 4, map_odom_period_s=0.05,
                       **({"base_to_camera": MOUNTING} if mounting == "parameter" else {}))
    assert node.stats().windows_processed == 1 and robot.sent == []
    assert node.stats().last_problem.startswith("no odometry odom -> base_link on /tf at the keyframe's stamp 1.300 s")
    assert "map -> odom is not published until there is" in node.stats().last_problem
    robot.odometry_from = T0 + 4 * DT
    for step in range(4, 10):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    wait_for(lambda: len(odom) == 4, 10, "the estimates")
    windowed = [t for t in robot.sent if conversions.stamp_to_ns(t.header.stamp) < 10**12]   # keyframe stamps
    assert [conversions.stamp_to_ns(t.header.stamp) for t in windowed] == [T0 + s * DT for s in (5, 7, 9)]
    for transform in windowed:
        assert (transform.header.frame_id, transform.child_frame_id) == ("map", "odom")
        stamp = conversions.stamp_to_ns(transform.header.stamp)
        estimate = next(o for o in odom if conversions.stamp_to_ns(o.header.stamp) == stamp)
        p, q = estimate.pose.pose.position, estimate.pose.pose.orientation
        # map -> odom, then the robot's own odom -> base and base -> camera: the node's estimate of the camera
        chained = _matrix(transform) @ robot.odom_from_base(stamp) @ rigid(MOUNTING[:3], MOUNTING[3:])
        assert np.allclose(chained, rigid((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)), atol=1e-5)
    # the true geometry: map -> odom is the same at every window (map and odom are both fixed in the world)
    assert np.allclose(_matrix(windowed[0]), _matrix(windowed[-1]), atol=1e-5)
    # resent with the current time between windows, as localisation nodes do
    sent_so_far = len(robot.sent)   # every window's transform is in already; the timer may have resent some too
    wait_for(lambda: len(robot.sent) > sent_so_far, 10, "map -> odom resent")
    resent = robot.sent[-1]
    assert conversions.stamp_to_ns(resent.header.stamp) > 10**18 and np.allclose(_matrix(resent), _matrix(windowed[-1]))
    looked_up = {(target, source) for target, source, _ in robot.asked}
    assert looked_up == ({("odom", "base_link"), ("base_link", "cam_optical")} if mounting == "tf_static"
                         else {("odom", "base_link")})


def test_map_odom_without_the_mounting_says_so_and_publishes_nothing(graph, monkeypatch):
    robot = Robot(rig(10, WIDTH, HEIGHT), with_static=False)
    robot.odometry_from = 0
    node, _ = _node(graph, monkeypatch, robot, 6, map_odom_period_s=0.05)
    assert node.stats().windows_processed == 2 and robot.sent == []
    assert node.stats().last_problem.startswith("no transform base_link -> cam_optical on /tf_static and no "
                                                "base_to_camera parameter")


def test_a_reset_stops_resending_the_old_maps_map_to_odom(graph, monkeypatch):
    from std_srvs.srv import Trigger

    robot = Robot(rig(10, WIDTH, HEIGHT), with_static=True)
    robot.odometry_from = 0
    _node(graph, monkeypatch, robot, 4, map_odom_period_s=0.02)
    wait_for(lambda: len(robot.sent) > 3, 10, "map -> odom resent")
    client = graph.probe.create_client(Trigger, "/vggt/reset")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    wait_for(future.done, 5, "the reset")
    time.sleep(0.1)   # a resend that read the old transform just before the reset
    count = len(robot.sent)
    time.sleep(0.3)   # 15 periods
    assert len(robot.sent) == count


def test_tf_mode_none_publishes_nothing_and_map_odom_needs_tf2(graph, monkeypatch):
    robot = Robot(rig(10, WIDTH, HEIGHT), with_static=True)
    robot.odometry_from = 0
    node, _ = _node(graph, monkeypatch, robot, 4, tf_mode="none")
    assert node.stats().windows_processed == 1 and robot.sent == [] and robot.asked == []
    monkeypatch.setitem(sys.modules, "tf2_ros", None)   # not installed
    with pytest.raises(ConfigurationError, match="tf_mode 'map_odom' needs tf2_ros .*, which is not installed; use "
                                                 "tf_mode 'cameras' or 'none'"):
        start_node(graph, None, tf_mode="map_odom")
