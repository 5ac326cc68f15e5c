"""The ``reconstruct`` node's parameters, without ROS: the declared table (names, defaults, descriptions,
ranges, which may change at runtime) and the typed snapshot the node works from.

The reconstruction's own parameters are the streaming library's (``vggt_quant_core.stream.settings``); the
node adds its topics, frames and health. The node declares ``PARAMETERS`` with rclpy and turns the values
into ``NodeSettings`` with ``settings_from``; ``config/reconstruct.yaml`` and docs/ros.md list the same
parameters.
"""

import dataclasses
from typing import Any, Dict, List, Tuple

from vggt_quant_core.stream.settings import (STREAM_PARAMETER, ConfigurationError, Param, StreamSettings,
                                             check_parameters)

from .transforms import base_from_camera_parameter

__all__ = ["PARAMETERS", "ConfigurationError", "NodeSettings", "Param", "settings_from"]

S = STREAM_PARAMETER
TF_MODES = ("cameras", "map_odom", "none")
PARAMETERS: Tuple[Param, ...] = (
    # inputs
    Param("image_topics", ["/camera/image_raw"], "one image topic per camera (sensor-data QoS); with transport "
          "'compressed' the node subscribes to <topic>/compressed"),
    Param("camera_names", [], "one name per camera for ~/depth/<name> (default cam0, cam1, ...)"),
    Param("transport", "raw", "sensor_msgs/Image ('raw') or CompressedImage JPEG/PNG ('compressed')",
          choices=("raw", "compressed")),
    Param("camera_info_topics", [], "optional CameraInfo topic per camera (empty: none); its K, and its "
          "distortion for rectify"),
    S["intrinsics_source"], S["sync_slop_s"], S["rectify"],
    # model
    S["checkpoint"], S["preset"], S["device"], S["precision"], S["image_size"], S["preprocess_mode"],
    S["point_source"], S["reuse_frame_tokens"],
    # windows
    S["window_size"], S["window_stride"],
    Param("max_queue", 1, "windows waiting for inference; when full the oldest is dropped (and counted)",
          range=(1, 16)),
    S["frame_stride"], S["min_interval_s"], S["min_motion"],
    # cloud
    S["conf_percentile"], S["conf_min"], S["pixel_stride"], S["voxel_size"], S["max_map_points"], S["cloud_mode"],
    Param("publish_confidence", False, "add a 'confidence' field to ~/points", runtime=True),
    # frames
    Param("map_frame", "map", "fixed frame of points, poses, path and odometry"),
    S["world_frame_convention"],
    Param("camera_frame_ids", [], "optical frame per camera (default: the images' header.frame_id)"),
    Param("tf_mode", "cameras", "what the node puts on /tf (needs tf2_ros): 'cameras' (map -> each camera's "
          "optical frame), 'map_odom' (map -> odom_frame such that map -> base_frame is the estimate, REP 105) or "
          "'none'", choices=TF_MODES),
    Param("odom_frame", "odom", "map_odom: the odometry frame; odom -> base_frame comes from /tf"),
    Param("base_frame", "base_link", "map_odom: the robot's body frame"),
    Param("base_to_camera", [], "map_odom: camera 0's optical frame in base_frame, [x, y, z, qx, qy, qz, qw] "
          "(metres); empty: looked up on /tf_static", items=float),
    Param("map_odom_period_s", 0.05, "map_odom: resend the latest map -> odom this often, stamped with the "
          "current time, so that tf2 lookups of newer data find it; 0: once per window", range=(0.0, 10.0)),
    S["path_max_size"],
    # metric scale
    S["scale_source"], S["stereo_baseline_m"],
    Param("odometry_topic", "odom", "odometry: nav_msgs/Odometry of the camera's body (pose in a fixed frame)"),
    Param("odometry_frame", "", "odometry: a fixed frame (e.g. 'odom') to look the cameras up in on /tf instead "
          "of odometry_topic (needs tf2_ros)"),
    S["scale_min_travel_m"],
    Param("depth_topic", "", "depth: depth image registered to camera depth_camera (16UC1 mm or 32FC1 m)"),
    S["depth_camera"], S["scale_drift"],
    # health
    Param("camera_timeout_s", 2.0, "warn when a camera has sent nothing for this long", range=(0.1, 3600.0),
          runtime=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", range=(0.05, 60.0)),
    # services
    Param("map_save_dir", "~/.ros/vggt_maps", "~/save_map writes each map into a new timestamped folder in this "
          "directory (~: the home directory)", runtime=True),
)


def _stream(settings) -> StreamSettings:
    """The reconstruction's part of these settings."""
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(StreamSettings) if f.name != "cameras"}
    return StreamSettings(**values, cameras=len(settings.image_topics))


# One reading of every parameter (``PARAMETERS``: one field each, same names and order), made from the table so
# that the two cannot disagree. The node takes a new one when runtime parameters change; a window is processed
# with the snapshot it started with (``stream``).
NodeSettings = dataclasses.make_dataclass(
    "NodeSettings", [(p.name, List[p.items] if p.default == [] else type(p.default)) for p in PARAMETERS],
    frozen=True,
    namespace={"stream": property(_stream), "__doc__": "One reading of every parameter (``PARAMETERS``)."})
NodeSettings.__module__ = __name__


def settings_from(p: Dict[str, Any]) -> "NodeSettings":
    """The declared values as settings: empty arrays as [], and the checks descriptors cannot express."""
    for param in PARAMETERS:
        if param.default == [] and p[param.name] is None:
            p[param.name] = []
        elif param.default == []:
            p[param.name] = [param.items(v) for v in p[param.name]]   # rclpy gives array.array for doubles
    check_parameters([param for param in PARAMETERS if param.choices], p)
    count = len(p["image_topics"])
    if count == 0:
        raise ConfigurationError("parameter image_topics is empty; give at least one image topic")
    for name in ("camera_names", "camera_info_topics", "camera_frame_ids"):
        if p[name] and len(p[name]) != count:
            raise ConfigurationError(f"parameter {name} has {len(p[name])} entries for {count} image topics")
    if p["intrinsics_source"] == "camera_info" and not p["camera_info_topics"]:
        raise ConfigurationError("intrinsics_source is 'camera_info' but camera_info_topics is empty")
    source = p["scale_source"]
    if source == "stereo" and count >= 2 and p["stereo_baseline_m"] <= 0 and len(p["camera_info_topics"]) < 2:
        raise ConfigurationError("scale_source 'stereo' needs stereo_baseline_m > 0 or camera_info_topics "
                                 "(camera 1's projection gives the baseline)")
    if source == "odometry" and not (p["odometry_topic"] or p["odometry_frame"]):
        raise ConfigurationError("scale_source 'odometry' needs odometry_topic or odometry_frame")
    if source == "depth" and not p["depth_topic"]:
        raise ConfigurationError("scale_source 'depth' needs depth_topic (a depth image registered to a camera)")
    if p["tf_mode"] == "map_odom":
        frames = (p["map_frame"], p["odom_frame"], p["base_frame"])
        if len(set(frames)) < 3 or not all(frames):
            raise ConfigurationError(f"tf_mode 'map_odom' needs three different frames; map_frame, odom_frame and "
                                     f"base_frame are {', '.join(repr(f) for f in frames)}")
        if p["base_to_camera"]:
            base_from_camera_parameter(p["base_to_camera"])
    settings = NodeSettings(**p)
    settings.stream.check()
    return settings
