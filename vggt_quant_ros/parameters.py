"""The ``reconstruct`` node's parameters, without ROS: the declared table (names, defaults, descriptions,
ranges, which may change at runtime) and the typed snapshot the node works from.

The node declares ``PARAMETERS`` with rclpy and turns the values into ``NodeSettings`` with
``settings_from``; ``config/reconstruct.yaml`` and the README list the same parameters.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from vggt_quant_core.inference import POINT_SOURCES, PRECISIONS
from vggt_quant_core.presets import DEFAULT_PRESET, PRESETS

from .mapping import WORLD_ROTATIONS
from .metric_scale import SCALE_SOURCES


@dataclass(frozen=True)
class Param:
    """A node parameter: read-only unless ``runtime``; ``choices`` are checked at start-up."""

    name: str
    default: Any                 # an empty list is declared as a string array without a value
    description: str
    range: Optional[Tuple[float, float]] = None
    choices: Tuple[str, ...] = ()
    runtime: bool = False


PARAMETERS: Tuple[Param, ...] = (
    # inputs
    Param("image_topics", ["/camera/image_raw"], "one image topic per camera (sensor-data QoS); with transport "
          "'compressed' the node subscribes to <topic>/compressed"),
    Param("camera_names", [], "one name per camera for ~/depth/<name> (default cam0, cam1, ...)"),
    Param("transport", "raw", "sensor_msgs/Image ('raw') or CompressedImage JPEG/PNG ('compressed')",
          choices=("raw", "compressed")),
    Param("camera_info_topics", [], "optional CameraInfo topic per camera (empty: none)"),
    Param("intrinsics_source", "predicted", "intrinsics for depth back-projection and ~/depth/*/camera_info: "
          "'predicted' by VGGT or 'camera_info' (needs camera_info_topics)", choices=("predicted", "camera_info")),
    Param("sync_slop_s", 0.02, "max stamp difference of images taken as one time step (several cameras)",
          range=(0.0, 1.0), runtime=True),
    # model
    Param("checkpoint", "", "weights file or directory (full precision or quantized); empty: use 'preset'"),
    Param("preset", DEFAULT_PRESET, "named model when no checkpoint is given", choices=tuple(sorted(PRESETS))),
    Param("device", "auto", "auto (CUDA when available), cpu, cuda, cuda:1, ..."),
    Param("precision", "auto", "autocast precision of the aggregator (auto: bf16/fp16 on CUDA, fp32 on CPU)",
          choices=("auto", *PRECISIONS)),
    Param("image_size", 0, "preprocessing width in pixels (0: what the model was trained at)", range=(0, 2048)),
    Param("preprocess_mode", "crop", "as the official loader: 'crop' (width = image_size) or 'pad' (square)",
          choices=("crop", "pad")),
    Param("point_source", "depth", "cloud from depth + predicted cameras ('depth') or the point head "
          "('pointmap')", choices=POINT_SOURCES),
    # windows
    Param("window_size", 8, "time steps (keyframes) per VGGT call; each holds one image per camera",
          range=(2, 64)),
    Param("window_stride", 4, "new keyframes between windows; window_size - window_stride are shared with the "
          "previous window and chain it to the map", range=(1, 63)),
    Param("max_queue", 1, "windows waiting for inference; when full the oldest is dropped (and counted)",
          range=(1, 16)),
    Param("frame_stride", 1, "keyframe count stride: at most every n-th synchronised time step",
          range=(1, 1000), runtime=True),
    Param("min_interval_s", 0.0, "keyframe time stride: at least this many seconds (image stamps) apart",
          range=(0.0, 3600.0), runtime=True),
    Param("min_motion", 0.0, "motion gate: mean absolute grey-level change (0-255) of a 32x24 thumbnail since "
          "the last keyframe; 0 disables", range=(0.0, 255.0), runtime=True),
    # cloud
    Param("conf_percentile", 50.0, "drop this percentage of lowest-confidence points of each window",
          range=(0.0, 99.9), runtime=True),
    Param("conf_min", 1.0, "also drop points with confidence <= this (VGGT confidence is >= 1)",
          range=(0.0, 1.0e6), runtime=True),
    Param("pixel_stride", 4, "use every n-th pixel row and column for the cloud and the alignment (4 at 518 "
          "pixels: points about 0.01 apart at distance 1, finer than the default voxel)", range=(1, 64)),
    Param("voxel_size", 0.02, "voxel edge in map units (metres with a scale_source, else model units: VGGT "
          "scales scenes to a mean distance of about 1)", range=(1.0e-4, 100.0)),
    Param("max_map_points", 500000, "voxel cap of the accumulated map; least recently seen voxels go first",
          range=(1000, 50000000)),
    Param("cloud_mode", "map", "~/points carries the accumulated map ('map') or only the latest window "
          "('window')", choices=("map", "window")),
    Param("publish_confidence", False, "add a 'confidence' field to ~/points", runtime=True),
    # frames
    Param("map_frame", "map", "fixed frame of points, poses, path and odometry"),
    Param("world_frame_convention", "flu", "map axes from the first camera: 'flu' (x forward, y left, z up) "
          "or 'optical' (x right, y down, z forward)", choices=tuple(WORLD_ROTATIONS)),
    Param("camera_frame_ids", [], "optical frame per camera (default: the images' header.frame_id)"),
    Param("publish_tf", True, "publish map -> camera optical frames on /tf (only when tf2_ros is installed)"),
    Param("path_max_size", 1024, "poses kept in ~/path", range=(1, 1000000)),
    # metric scale
    Param("scale_source", "none", "what puts the map in metres: 'none' (model units of the first window), "
          "'stereo' (cameras 0 and 1 a known baseline apart), 'odometry' (travel between keyframes) or 'depth' "
          "(a registered depth image)", choices=SCALE_SOURCES),
    Param("stereo_baseline_m", 0.0, "stereo: metres between cameras 0 and 1; 0: from camera 1's CameraInfo "
          "projection (Tx = -fx * baseline)", range=(0.0, 100.0)),
    Param("odometry_topic", "odom", "odometry: nav_msgs/Odometry of the camera's body (pose in a fixed frame)"),
    Param("odometry_frame", "", "odometry: a fixed frame (e.g. 'odom') to look the cameras up in on /tf instead "
          "of odometry_topic (needs tf2_ros)"),
    Param("scale_min_travel_m", 0.05, "odometry: keyframe pairs closer than this do not measure the scale",
          range=(0.0, 100.0)),
    Param("depth_topic", "", "depth: depth image registered to camera depth_camera (16UC1 mm or 32FC1 m)"),
    Param("depth_camera", 0, "depth: index of the image topic the depth image is registered to", range=(0, 63)),
    Param("scale_drift", 0.02, "relative scale drift that chaining windows adds per window: how far the "
          "metric samples may pull each new window", range=(1.0e-4, 1.0)),
    # health
    Param("camera_timeout_s", 2.0, "warn when a camera has sent nothing for this long", range=(0.1, 3600.0),
          runtime=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", range=(0.05, 60.0)),
)


class ConfigurationError(Exception):
    """A parameter combination the node cannot run with; the message is the one line to show."""


@dataclass(frozen=True)
class NodeSettings:
    """One reading of every parameter (``PARAMETERS``, same names and order). The node takes a new one when
    runtime parameters change; a window is processed with the snapshot it started with."""

    image_topics: List[str]
    camera_names: List[str]
    transport: str
    camera_info_topics: List[str]
    intrinsics_source: str
    sync_slop_s: float
    checkpoint: str
    preset: str
    device: str
    precision: str
    image_size: int
    preprocess_mode: str
    point_source: str
    window_size: int
    window_stride: int
    max_queue: int
    frame_stride: int
    min_interval_s: float
    min_motion: float
    conf_percentile: float
    conf_min: float
    pixel_stride: int
    voxel_size: float
    max_map_points: int
    cloud_mode: str
    publish_confidence: bool
    map_frame: str
    world_frame_convention: str
    camera_frame_ids: List[str]
    publish_tf: bool
    path_max_size: int
    scale_source: str
    stereo_baseline_m: float
    odometry_topic: str
    odometry_frame: str
    scale_min_travel_m: float
    depth_topic: str
    depth_camera: int
    scale_drift: float
    camera_timeout_s: float
    diagnostics_period_s: float


def settings_from(p: Dict[str, Any]) -> "NodeSettings":
    """The declared values as settings: empty arrays as [], and the checks descriptors cannot express."""
    for param in PARAMETERS:
        if param.default == [] and p[param.name] is None:
            p[param.name] = []
        if param.choices and p[param.name] not in param.choices:
            raise ConfigurationError(f"parameter {param.name} is {p[param.name]!r}; expected one of "
                                     f"{', '.join(param.choices)}")
    count = len(p["image_topics"])
    if count == 0:
        raise ConfigurationError("parameter image_topics is empty; give at least one image topic")
    for name in ("camera_names", "camera_info_topics", "camera_frame_ids"):
        if p[name] and len(p[name]) != count:
            raise ConfigurationError(f"parameter {name} has {len(p[name])} entries for {count} image topics")
    if p["intrinsics_source"] == "camera_info" and not p["camera_info_topics"]:
        raise ConfigurationError("intrinsics_source is 'camera_info' but camera_info_topics is empty")
    if p["window_stride"] >= p["window_size"]:
        raise ConfigurationError(f"window_stride ({p['window_stride']}) must be smaller than window_size "
                                 f"({p['window_size']}) so that consecutive windows share keyframes")
    _check_scale_source(p, count)
    if p["checkpoint"] and not os.path.exists(p["checkpoint"]):
        raise ConfigurationError(f"checkpoint {p['checkpoint']} not found (give an existing weights file or "
                                 "directory, or leave checkpoint empty to use a preset)")
    return NodeSettings(**p)


def _check_scale_source(p: Dict[str, Any], count: int) -> None:
    source = p["scale_source"]
    if source == "stereo":
        if count < 2:
            raise ConfigurationError("scale_source 'stereo' needs two image topics (cameras 0 and 1 of the rig)")
        if p["stereo_baseline_m"] <= 0 and len(p["camera_info_topics"]) < 2:
            raise ConfigurationError("scale_source 'stereo' needs stereo_baseline_m > 0 or camera_info_topics "
                                     "(camera 1's projection gives the baseline)")
    if source == "odometry" and not (p["odometry_topic"] or p["odometry_frame"]):
        raise ConfigurationError("scale_source 'odometry' needs odometry_topic or odometry_frame")
    if source == "depth":
        if not p["depth_topic"]:
            raise ConfigurationError("scale_source 'depth' needs depth_topic (a depth image registered to a camera)")
        if p["depth_camera"] >= count:
            raise ConfigurationError(f"depth_camera is {p['depth_camera']} but there are {count} image topics")
