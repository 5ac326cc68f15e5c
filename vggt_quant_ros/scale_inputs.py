"""The ``reconstruct`` node's inputs for ``scale_source``: subscriptions and what they keep until the worker
measures a window's scale (``window_processor.MetricSensors``).

* stereo: the baseline, from ``stereo_baseline_m`` or camera 1's CameraInfo (``Tx = -fx * B``);
* odometry: a ``nav_msgs/Odometry`` track, or /tf lookups from ``odometry_frame`` to each camera's frame
  when tf2_ros is installed;
* depth: depth images paired with keyframes of ``depth_camera`` by stamp and converted to metres.

Callbacks run in the node's input group; the worker only calls ``sensors``.
"""

from typing import Callable, List, Optional

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from . import conversions
from .metric_scale import NoScale, OdometryTrack, baseline_from_projection
from .parameters import ConfigurationError, NodeSettings
from .window_processor import MetricSensors
from .windowing import Frame, FrameSet, StampPairing

# (camera, kind, text, count_as_rejected): the node's frame-level problem report
Problem = Callable[..., None]
# best effort takes reliable publishers too; odometry comes at 50-200 Hz while image decoding holds the group
ODOMETRY_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)
BASELINE_TOLERANCE = 0.05   # stereo_baseline_m and the CameraInfo baseline may differ this much without a warning


def _tf_buffer_classes():
    """``tf2_ros`` (Buffer, TransformListener) on full ROS installs, None in the pip-wheel environment."""
    try:
        from tf2_ros import Buffer, TransformListener
    except ImportError:
        return None
    return Buffer, TransformListener


class ScaleInputs:
    """Subscribes what ``settings.scale_source`` needs on ``node`` (callback group ``group``)."""

    def __init__(self, node: Node, settings: NodeSettings, group, problem: Problem):
        self._node, self._settings, self._problem = node, settings, problem
        self._baseline_from_info = 0.0
        self.received = 0     # odometry and depth messages
        self._odometry = OdometryTrack()
        self._tf_buffer = None
        self._depth_pairing: Optional[StampPairing[Image]] = None
        source = settings.scale_source
        if source == "odometry" and settings.odometry_frame:
            classes = _tf_buffer_classes()
            if classes is None:
                raise ConfigurationError(f"odometry_frame '{settings.odometry_frame}' needs tf2_ros, which is not "
                                         "installed; give odometry_topic instead")
            buffer_class, listener_class = classes
            self._tf_buffer = buffer_class()
            self._tf_listener = listener_class(self._tf_buffer, node)
        elif source == "odometry":
            node.create_subscription(Odometry, settings.odometry_topic, self._on_odometry, ODOMETRY_QOS,
                                     callback_group=group)
        if source == "depth":
            self._depth_pairing = StampPairing(int(settings.sync_slop_s * 1e9), self._attach_depth)
            node.create_subscription(Image, settings.depth_topic, self._on_depth, qos_profile_sensor_data,
                                     callback_group=group)
        self.sensors = MetricSensors(baseline_m=self._stereo_baseline, positions_at=self._positions_at)

    # ------------------------------------------------------------------------------------- input group
    def camera_info(self, camera: int, msg: CameraInfo) -> None:
        if camera != 1:
            return
        self._baseline_from_info = from_info = baseline_from_projection(msg.p)
        given = self._settings.stereo_baseline_m
        if given > 0 and from_info > 0 and abs(from_info / given - 1) > BASELINE_TOLERANCE:
            self._problem(camera, "baseline", f"stereo_baseline_m {given:.4g} m disagrees with this CameraInfo's "
                          f"baseline {from_info:.4g} m (-P[0,3]/P[0,0]): using stereo_baseline_m",
                          count_as_rejected=False)

    def keyframe(self, frameset: FrameSet) -> None:
        if self._depth_pairing is not None:
            self._depth_pairing.add_frame(frameset.frames[self._settings.depth_camera])

    def _on_odometry(self, msg: Odometry) -> None:
        self.received += 1
        p = msg.pose.pose.position
        self._odometry.add(conversions.stamp_to_ns(msg.header.stamp), (p.x, p.y, p.z))

    def _on_depth(self, msg: Image) -> None:
        self.received += 1
        self._depth_pairing.add_item(conversions.stamp_to_ns(msg.header.stamp), msg)

    def _attach_depth(self, frame: Frame, msg: Image) -> None:
        """The depth image paired with a keyframe, in metres, if it fits the colour image."""
        try:
            depth = conversions.depth_metres(msg)
        except conversions.ImageError as exc:
            self._problem(frame.camera, "depth", f"depth image skipped: {exc}", count_as_rejected=False)
            return
        if depth.shape != frame.rgb.shape[:2]:
            self._problem(frame.camera, "depth", f"depth image is {depth.shape[1]}x{depth.shape[0]} but the image "
                          f"is {frame.rgb.shape[1]}x{frame.rgb.shape[0]}; register the depth to this camera "
                          "(skipped)", count_as_rejected=False)
            return
        frame.metric_depth = depth

    # ------------------------------------------------------------------------------------------ worker
    def _stereo_baseline(self) -> float:
        return self._settings.stereo_baseline_m or self._baseline_from_info

    def _positions_at(self, frames: List[Frame]) -> np.ndarray:
        """Odometry positions [K, 3] of the frames' cameras (metres), from /tf or the odometry topic."""
        s = self._settings
        if self._tf_buffer is None:
            if self._odometry.received == 0:
                raise NoScale(f"no odometry received on {self._node.resolve_topic_name(s.odometry_topic)}")
            return self._odometry.positions_at([frame.stamp_ns for frame in frames])
        out = np.full((len(frames), 3), np.nan)
        for row, frame in enumerate(frames):
            try:
                t = self._tf_buffer.lookup_transform(s.odometry_frame, frame.frame_id,
                                                     Time(nanoseconds=frame.stamp_ns)).transform.translation
            except Exception:  # tf2's LookupException, ExtrapolationException, ...: this keyframe has no position
                continue
            out[row] = (t.x, t.y, t.z)
        return out
