"""The ``reconstruct`` node's /tf, per ``tf_mode``:

* ``cameras``: map -> each camera's optical frame at every window's newest keyframe;
* ``map_odom`` (REP 105): map -> odom_frame, such that map -> odom -> base_frame -> camera 0 is the node's
  estimate of camera 0, from base -> camera (``base_to_camera``, else /tf_static) and odom -> base (the robot's
  odometry on /tf at the keyframe's stamp); the algebra is ``transforms``. The latest map -> odom is resent every
  ``map_odom_period_s`` stamped with the current time, as localisation nodes do, so that tf2 finds it for data
  newer than the last window. Without odometry or base -> camera yet, it says so once and publishes nothing;
* ``none``: nothing.

tf2_ros has no pip wheel: without it ``cameras`` says once that there is no /tf, and ``map_odom`` refuses to start
(``ConfigurationError``). The broadcaster runs in the worker; the timer in a callback group of its own.
"""

import threading
from typing import Callable, Optional

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time

from vggt_quant_core.stream.settings import ConfigurationError
from vggt_quant_core.stream.window_processor import WindowResult

from . import conversions
from .parameters import NodeSettings
from .transforms import Pose7, base_from_camera_parameter, map_from_odom, pose, rigid

# (kind, text): a problem the node names once (its WARN_ONCE kinds) and keeps in diagnostics
Problem = Callable[[str, str], None]
# odometry kept for lookups at a keyframe's stamp: a window is placed seconds after its newest keyframe (a minute
# and more for VGGT-1B on a CPU), longer than tf2's default 10 s
TF_CACHE_S = 300.0


def _tf2_ros():
    """The ``tf2_ros`` module on full ROS installs, None in the pip-wheel environment."""
    try:
        import tf2_ros
    except ImportError:
        return None
    return tf2_ros


class TfOutput:
    """What ``settings.tf_mode`` puts on /tf (see the module docstring)."""

    def __init__(self, node: Node, settings: NodeSettings, problem: Problem, group):
        self._node, self._problem, self._mode = node, problem, settings.tf_mode
        self._map, self._odom, self._base = settings.map_frame, settings.odom_frame, settings.base_frame
        self._base_from_camera = (base_from_camera_parameter(settings.base_to_camera) if settings.base_to_camera
                                  else None)
        self._broadcaster = self._buffer = None
        self._latest: Optional[Pose7] = None   # map -> odom of the newest window, resent by the timer
        self._lock = threading.Lock()
        if self._mode == "none":
            return
        tf2_ros = _tf2_ros()
        if tf2_ros is None:
            if self._mode == "map_odom":
                raise ConfigurationError("tf_mode 'map_odom' needs tf2_ros (odom -> base_frame from /tf), which is "
                                         "not installed; use tf_mode 'cameras' or 'none'")
            node.get_logger().info(f"tf2_ros is not installed: no /tf; every output is already in '{self._map}'")
            return
        self._broadcaster = tf2_ros.TransformBroadcaster(node)
        if self._mode == "map_odom":
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=TF_CACHE_S))
            self._listener = tf2_ros.TransformListener(self._buffer, node)
            if settings.map_odom_period_s > 0:
                node.create_timer(settings.map_odom_period_s, self._resend, callback_group=group)

    def window(self, result: WindowResult) -> None:
        """Worker: the transforms of a window just placed in the map."""
        if self._broadcaster is None:
            return
        stamp_ns, newest = result.window[-1].stamp_ns, result.newest
        head = conversions.header(self._map, stamp_ns)
        if self._mode == "cameras":
            self._broadcaster.sendTransform([conversions.transform(head, result.frames[newest + c].frame_id,
                                                                   result.poses[newest + c])
                                             for c in range(len(result.depth))])
            return
        camera = result.frames[newest].frame_id
        base_from_camera = self._base_from_camera
        if base_from_camera is None:
            base_from_camera = self._lookup(self._base, camera, Time(), "tf-base",
                                            f"no transform {self._base} -> {camera} on /tf_static and no "
                                            "base_to_camera parameter")
        odom_from_base = self._lookup(self._odom, self._base, Time(nanoseconds=stamp_ns), "tf-odom",
                                      f"no odometry {self._odom} -> {self._base} on /tf at the keyframe's stamp "
                                      f"{stamp_ns / 1e9:.3f} s")
        if base_from_camera is None or odom_from_base is None:
            return
        transform = pose(map_from_odom(rigid(*result.poses[newest]), base_from_camera, odom_from_base))
        with self._lock:
            first, self._latest = self._latest is None, transform
        self._broadcaster.sendTransform([conversions.transform(head, self._odom, transform)])
        if first:
            self._node.get_logger().info(f"publishing {self._map} -> {self._odom} (REP 105): {self._map} -> "
                                         f"{self._base} is the estimate of {camera}")

    def reset(self) -> None:
        """The map was reset: the old map -> odom means nothing in the new map, so it is no longer resent."""
        with self._lock:
            self._latest = None

    def _lookup(self, target: str, source: str, time: Time, kind: str, missing: str) -> Optional[np.ndarray]:
        """target_from_source from the tf2 buffer, or None after naming the problem."""
        try:
            msg = self._buffer.lookup_transform(target, source, time).transform
        except Exception as exc:  # tf2's LookupException, ExtrapolationException, ConnectivityException, ...
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            self._problem(kind, f"{missing} ({reason}); {self._map} -> {self._odom} is not published until there is")
            return None
        t, r = msg.translation, msg.rotation
        return rigid((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))

    def _resend(self) -> None:
        """Timer: the latest map -> odom, stamped now."""
        with self._lock:
            latest = self._latest
        if latest is not None:
            now = self._node.get_clock().now().nanoseconds
            self._broadcaster.sendTransform([conversions.transform(conversions.header(self._map, now), self._odom,
                                                                   latest)])
