"""The streaming reconstruction's settings: the parameter table (names, defaults, descriptions, ranges, which
may change while a stream runs) and the typed snapshot the reconstructor works from.

The ROS ``reconstruct`` node declares these parameters (with its own for topics, frames and health) and
``vggt-quant reconstruct`` reads them from the same ROS 2 parameter file (``config/reconstruct.yaml``);
``read_parameter_file`` reads such a file without ROS.
"""

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import yaml

from ..inference import POINT_SOURCES, PRECISIONS
from ..presets import DEFAULT_PRESET, PRESETS
from .lenses import RECTIFY_MODES
from .mapping import WORLD_ROTATIONS
from .metric_scale import SCALE_SOURCES

NODE_NAME = "vggt"   # the parameter file's entry besides "/**"


class ConfigurationError(Exception):
    """A parameter combination the reconstruction cannot run with; the message is the one line to show."""


@dataclass(frozen=True)
class Param:
    """A parameter: read-only unless ``runtime``; ``choices`` and ``range`` are checked when settings are made."""

    name: str
    default: Any                 # an empty list is declared as an array of ``items`` without a value
    description: str
    range: Optional[Tuple[float, float]] = None
    choices: Tuple[str, ...] = ()
    runtime: bool = False
    items: type = str            # element type of a list parameter (str or float)


STREAM_PARAMETERS: Tuple[Param, ...] = (
    Param("intrinsics_source", "predicted", "intrinsics for depth back-projection and ~/depth/*/camera_info: "
          "'predicted' by VGGT or 'camera_info' (needs camera_info_topics)", choices=("predicted", "camera_info")),
    Param("sync_slop_s", 0.02, "max stamp difference of images taken as one time step (several cameras)",
          range=(0.0, 1.0), runtime=True),
    Param("rectify", "auto", "'auto': undistort the images of a camera whose CameraInfo has distortion "
          "(plumb_bob, rational_polynomial, equidistant) to a pinhole of the same K before inference; 'off': use "
          "them as they are", choices=RECTIFY_MODES),
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
    Param("reuse_frame_tokens", True, "keep each frame's own aggregator work (DINOv2 patch tokens, first frame "
          "block) for the next window that shares the frame: the same outputs, bit for bit, with half that work at "
          "windows of 8 every 4 (memory: about 8.5 MB per frame for VGGT-1B at 518x392)"),
    # windows
    Param("window_size", 8, "time steps (keyframes) per VGGT call; each holds one image per camera",
          range=(2, 64)),
    Param("window_stride", 4, "new keyframes between windows; window_size - window_stride are shared with the "
          "previous window and chain it to the map", range=(1, 63)),
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
    Param("world_frame_convention", "flu", "map axes from the first camera: 'flu' (x forward, y left, z up) "
          "or 'optical' (x right, y down, z forward)", choices=tuple(WORLD_ROTATIONS)),
    Param("path_max_size", 1024, "poses kept in ~/path and the trajectory (0: every pose, 64 bytes each; what "
          "vggt-quant reconstruct keeps)", range=(0, 1000000)),
    # metric scale
    Param("scale_source", "none", "what puts the map in metres: 'none' (model units of the first window), "
          "'stereo' (cameras 0 and 1 a known baseline apart), 'odometry' (travel between keyframes) or 'depth' "
          "(a registered depth image)", choices=SCALE_SOURCES),
    Param("stereo_baseline_m", 0.0, "stereo: metres between cameras 0 and 1; 0: from camera 1's CameraInfo "
          "projection (Tx = -fx * baseline)", range=(0.0, 100.0)),
    Param("scale_min_travel_m", 0.05, "odometry: keyframe pairs closer than this do not measure the scale",
          range=(0.0, 100.0)),
    Param("depth_camera", 0, "depth: index of the image topic the depth image is registered to", range=(0, 63)),
    Param("scale_drift", 0.02, "relative scale drift that chaining windows adds per window: how far the "
          "metric samples may pull each new window", range=(1.0e-4, 1.0)),
)
STREAM_PARAMETER = {param.name: param for param in STREAM_PARAMETERS}


@dataclass(frozen=True)
class StreamSettings:
    """One reading of ``STREAM_PARAMETERS`` (same names and order), plus ``cameras``: images per time step.
    A window is processed with the snapshot it started with; ``configure`` takes a new one while streaming."""

    intrinsics_source: str
    sync_slop_s: float
    rectify: str
    checkpoint: str
    preset: str
    device: str
    precision: str
    image_size: int
    preprocess_mode: str
    point_source: str
    reuse_frame_tokens: bool
    window_size: int
    window_stride: int
    frame_stride: int
    min_interval_s: float
    min_motion: float
    conf_percentile: float
    conf_min: float
    pixel_stride: int
    voxel_size: float
    max_map_points: int
    cloud_mode: str
    world_frame_convention: str
    path_max_size: int
    scale_source: str
    stereo_baseline_m: float
    scale_min_travel_m: float
    depth_camera: int
    scale_drift: float
    cameras: int

    @classmethod
    def defaults(cls, cameras: int = 1) -> "StreamSettings":
        return cls.from_parameters({}, cameras)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any], cameras: int = 1) -> "StreamSettings":
        """Settings from parameter values (a parameter file's, or a node's); names that are not stream parameters
        are left to their owner, missing ones take their defaults. Raises ``ConfigurationError``."""
        chosen = {name: values[name] for name in STREAM_PARAMETER if name in values}
        check_parameters(STREAM_PARAMETERS, chosen)
        typed = {param.name: _typed(param, chosen.get(param.name, param.default)) for param in STREAM_PARAMETERS}
        settings = cls(**typed, cameras=cameras)
        settings.check()
        return settings

    def check(self) -> None:
        """The checks one parameter alone cannot express; raises ``ConfigurationError``."""
        if self.cameras < 1:
            raise ConfigurationError(f"a stream needs at least one camera, got {self.cameras}")
        if self.window_stride >= self.window_size:
            raise ConfigurationError(f"window_stride ({self.window_stride}) must be smaller than window_size "
                                     f"({self.window_size}) so that consecutive windows share keyframes")
        if self.scale_source == "stereo" and self.cameras < 2:
            raise ConfigurationError("scale_source 'stereo' needs two image topics (cameras 0 and 1 of the rig)")
        if self.scale_source == "depth" and self.depth_camera >= self.cameras:
            raise ConfigurationError(f"depth_camera is {self.depth_camera} but there are {self.cameras} image "
                                     "topics")
        if self.checkpoint and not os.path.exists(self.checkpoint):
            raise ConfigurationError(f"checkpoint {self.checkpoint} not found (give an existing weights file or "
                                     "directory, or leave checkpoint empty to use a preset)")

    def runtime_change(self, new: "StreamSettings") -> None:
        """Raise ``ConfigurationError`` if ``new`` differs from these settings in anything but runtime parameters."""
        fixed = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(new, f.name)
                 and not (f.name in STREAM_PARAMETER and STREAM_PARAMETER[f.name].runtime)]
        if fixed:
            raise ConfigurationError(f"{', '.join(fixed)} cannot change while a stream runs")


def _typed(param: Param, value: Any) -> Any:
    """A YAML integer where the parameter is a float becomes a float (rclpy would refuse it instead)."""
    if isinstance(param.default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_parameters(params: Sequence[Param], values: Dict[str, Any]) -> None:
    """Choices, types and ranges of the given ``values`` (a name missing from ``values`` is not checked)."""
    for param in params:
        if param.name not in values:
            continue
        value = values[param.name]
        if param.choices and value not in param.choices:
            raise ConfigurationError(f"parameter {param.name} is {value!r}; expected one of "
                                     f"{', '.join(param.choices)}")
        expected = type(param.default)
        if param.default != [] and not isinstance(_typed(param, value), expected):
            raise ConfigurationError(f"parameter {param.name} is {value!r}; expected a {expected.__name__}")
        if param.range is not None and not param.range[0] <= value <= param.range[1]:
            raise ConfigurationError(f"parameter {param.name} is {value}; expected a value in "
                                     f"[{param.range[0]}, {param.range[1]}]")


def default_parameter_file() -> Path:
    """``config/reconstruct.yaml`` of a source checkout, else the installed copy (``share/vggt_quant_ros``)."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / "reconstruct.yaml",
                  Path(sys.prefix) / "share" / "vggt_quant_ros" / "config" / "reconstruct.yaml"]
    return next((path for path in candidates if path.exists()), candidates[0])


def read_parameter_file(path: Path) -> Dict[str, Any]:
    """The parameters in a ROS 2 parameter file (its ``/**`` or ``vggt`` entry); raises ``ValueError``."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the parameter file {path}: {exc}") from exc
    for key in ("/**", NODE_NAME, f"/{NODE_NAME}"):
        entry = data.get(key) if isinstance(data, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("ros__parameters"), dict):
            return dict(entry["ros__parameters"])
    raise ValueError(f"{path}: no ros__parameters under '/**' or '{NODE_NAME}'")
