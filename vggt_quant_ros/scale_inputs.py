"""The ``reconstruct`` node's inputs for ``scale_source``: subscriptions, and what the worker measures a
window's scale with (``MetricSensors``).

* stereo: the baseline, from ``stereo_baseline_m`` or camera 1's CameraInfo (``Tx = -fx * B``);
* odometry: ``nav_msgs/Odometry`` positions handed to the reconstruction's track, or /tf lookups from
  ``odometry_frame`` to each camera's frame when tf2_ros is installed;
* depth: depth images in metres, handed to the reconstruction, which pairs them with keyframes by stamp.

Callbacks run in the node's input group; the worker only calls ``sensors``.
"""

from typing import Callable, List

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from vggt_quant_core.stream import Frame, StreamReconstructor
from vggt_quant_core.data.bags import baseline_from_projection
from vggt_quant_core.stream.metric_scale import NoScale
from vggt_quant_core.stream.window_processor import MetricSensors

from . import conversions
from .parameters import ConfigurationError, NodeSettings

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
    """Subscribes what ``settings.scale_source`` needs on ``node`` (callback group ``group``) and hands it to
    ``reconstruction``."""

    def __init__(self, node: Node, settings: NodeSettings, group, problem: Problem,
                 reconstruction: StreamReconstructor):
        self._node, self._settings, self._problem = node, settings, problem
        self._reconstruction = reconstruction
        self._baseline_from_info = 0.0
        self.received = 0     # odometry and depth messages
        self._tf_buffer = None
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

    def _on_odometry(self, msg: Odometry) -> None:
        self.received += 1
        p = msg.pose.pose.position
        self._reconstruction.push_odometry(conversions.stamp_to_ns(msg.header.stamp), (p.x, p.y, p.z))

    def _on_depth(self, msg: Image) -> None:
        self.received += 1
        try:
            depth = conversions.depth_metres(msg)
        except conversions.ImageError as exc:
            self._problem(self._settings.depth_camera, "depth", f"depth image skipped: {exc}",
                          count_as_rejected=False)
            return
        self._reconstruction.push_depth(conversions.stamp_to_ns(msg.header.stamp), depth)

    # ------------------------------------------------------------------------------------------ worker
    def _stereo_baseline(self) -> float:
        return self._settings.stereo_baseline_m or self._baseline_from_info

    def _positions_at(self, frames: List[Frame]) -> np.ndarray:
        """Odometry positions [K, 3] of the frames' cameras (metres), from /tf or the odometry topic."""
        s = self._settings
        if self._tf_buffer is None:
            track = self._reconstruction.odometry
            if track.received == 0:
                raise NoScale(f"no odometry received on {self._node.resolve_topic_name(s.odometry_topic)}")
            return track.positions_at([frame.stamp_ns for frame in frames])
        out = np.full((len(frames), 3), np.nan)
        for row, frame in enumerate(frames):
            try:
                t = self._tf_buffer.lookup_transform(s.odometry_frame, frame.frame_id,
                                                     Time(nanoseconds=frame.stamp_ns)).transform.translation
            except Exception:  # tf2's LookupException, ExtrapolationException, ...: this keyframe has no position
                continue
            out[row] = (t.x, t.y, t.z)
        return out
