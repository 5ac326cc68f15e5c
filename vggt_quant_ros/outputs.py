"""The ``reconstruct`` node's publishers: a ``WindowResult`` -> points, poses, path, odometry and depth (/tf is
``tf_output``).

Stamps are those of the newest keyframe (depth: of its own image), never ``now()``; only ``clear`` (after a reset,
when there is no keyframe) stamps the empty map with the current time.
"""

from typing import List

import numpy as np
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from vggt_quant_core.stream.window_processor import WindowResult

from . import conversions
from .parameters import NodeSettings


class WindowPublishers:
    """Publishers under the node's namespace (``~/...``); latched outputs keep the latest map for late joiners."""

    def __init__(self, node: Node, names: List[str], settings: NodeSettings):
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._map_frame = settings.map_frame
        self._points = node.create_publisher(PointCloud2, "~/points", latched)
        self._poses = node.create_publisher(PoseArray, "~/poses", latched)
        self._path = node.create_publisher(Path, "~/path", latched)
        self._odom = node.create_publisher(Odometry, "~/odom", latched)
        self._depth = [node.create_publisher(Image, f"~/depth/{name}", 5) for name in names]
        self._info = [node.create_publisher(CameraInfo, f"~/depth/{name}/camera_info", 5) for name in names]

    def publish(self, result: WindowResult, settings: NodeSettings) -> None:
        """One window's outputs; the path is camera 0 at every keyframe so far (``result.path``)."""
        head = conversions.header(self._map_frame, result.window[-1].stamp_ns)
        poses, frames, newest = result.poses, result.frames, result.newest
        xyz, rgb, conf = result.cloud
        self._points.publish(conversions.point_cloud(head, xyz, rgb, conf if settings.publish_confidence else None))
        self._poses.publish(conversions.pose_array(head, poses))
        self._path.publish(conversions.path_message(head, [(pose.stamp_ns, self._map_frame,
                                                            (pose.position, pose.quaternion))
                                                           for pose in result.path]))
        self._odom.publish(conversions.odometry(head, frames[newest].frame_id, poses[newest]))
        for camera, view in enumerate(result.depth):
            frame_head = conversions.header(view.frame.frame_id, view.frame.stamp_ns)
            height, width = view.depth.shape
            self._depth[camera].publish(conversions.depth_image(frame_head, view.depth))
            self._info[camera].publish(conversions.camera_info(frame_head, view.intrinsics, width, height))

    def clear(self, stamp_ns: int) -> None:
        """An empty map, path and window poses (latched: late subscribers and RViz forget the old map too)."""
        head = conversions.header(self._map_frame, stamp_ns)
        self._points.publish(conversions.point_cloud(head, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)))
        self._poses.publish(conversions.pose_array(head, []))
        self._path.publish(conversions.path_message(head, []))
