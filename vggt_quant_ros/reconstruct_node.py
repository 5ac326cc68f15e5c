"""ROS 2 node ``reconstruct``: camera streams -> sliding windows of keyframes -> VGGT -> camera poses,
depth images and a coloured point cloud in one consistent ``map`` frame.

Threads (spelled out because inference takes seconds):

* image and CameraInfo subscriptions share one mutually exclusive callback group: they decode,
  synchronise and gate frames, and push finished windows into a latest-wins queue (never block);
* a worker thread loads the model, then takes windows from the queue and runs VGGT, the mapping
  and the publishing; windows replaced in the queue while it works are counted as dropped;
* the diagnostics timer has a group of its own, so it reports while the worker is busy.

``main`` spins a ``MultiThreadedExecutor`` so the two callback groups run in parallel. Parameters
are listed in ``PARAMETERS`` (and in ``config/reconstruct.yaml`` and the README).
"""

import dataclasses
import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from vggt_quant_core.data import preprocess_image, preprocessed_intrinsics, stack_padded
from vggt_quant_core.geometry import pose_encoding_to_extri_intri
from vggt_quant_core.inference import POINT_SOURCES, PRECISIONS, predictions_to_reconstruction
from vggt_quant_core.model import CheckpointError
from vggt_quant_core.presets import DEFAULT_PRESET, PRESETS

from . import conversions
from .estimator import Estimator, load_estimator
from .launch_arguments import ArgumentError, check_params_file, params_files_of
from .mapping import WORLD_ROTATIONS, AlignmentError, WindowMapper, WindowUpdate
from .windowing import (ApproximateSync, Frame, FrameSet, KeyframeGate, LatestWinsQueue, SlidingWindow, StallWatch,
                        StampOrder, compose_window, thumbnail)

NODE_NAME = "vggt"
DIAGNOSTIC_NAME = "vggt_quant_ros: reconstruct"
SCALE_MODE = "up-to-scale (model units of the first window)"


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
    Param("voxel_size", 0.02, "voxel edge in map units (model units: VGGT scales scenes to a mean distance "
          "of about 1)", range=(1.0e-4, 100.0)),
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
    # health
    Param("camera_timeout_s", 2.0, "warn when a camera has sent nothing for this long", range=(0.1, 3600.0),
          runtime=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", range=(0.05, 60.0)),
)


class ConfigurationError(Exception):
    """A parameter combination the node cannot run with; the message is the one line to show."""


class WindowError(Exception):
    """A window that cannot be used (e.g. non-finite model output); the node skips it."""


def _descriptor(param: Param) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=param.description, read_only=not param.runtime)
    if param.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(param.choices)
    if param.range is not None:
        low, high = param.range
        if isinstance(param.default, int) and not isinstance(param.default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


def _checked(p: Dict[str, Any]) -> Dict[str, Any]:
    """Parameter values with empty arrays as [], and the checks descriptors cannot express."""
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
    if p["checkpoint"] and not os.path.exists(p["checkpoint"]):
        raise ConfigurationError(f"checkpoint {p['checkpoint']} not found (give an existing weights file or "
                                 "directory, or leave checkpoint empty to use a preset)")
    return p


def _tf_broadcaster_class():
    """``tf2_ros.TransformBroadcaster`` on full ROS installs, None in the pip-wheel environment."""
    try:
        from tf2_ros import TransformBroadcaster
    except ImportError:
        return None
    return TransformBroadcaster


@dataclass
class Stats:
    """Counters and timings shown in /diagnostics (guarded by the node's stats lock)."""

    frames_received: List[int] = field(default_factory=list)
    rejected_frames: int = 0
    keyframes: int = 0
    windows_emitted: int = 0
    windows_processed: int = 0
    dropped_windows: int = 0
    failed_windows: int = 0
    timings_ms: Dict[str, float] = field(default_factory=dict)   # last window: stage -> wall ms
    cpu_ms: Dict[str, float] = field(default_factory=dict)       # last window: stage -> worker CPU ms
    window_latency_ms: float = 0.0
    alignment_rmse: float = 0.0
    alignment_scale: float = 1.0
    map_points: int = 0
    last_problem: str = ""
    processed_at_last_report: int = 0
    problems_at_last_report: int = 0


class ReconstructNode(Node):
    """Sliding-window VGGT reconstruction; see the module docstring for the threads."""

    def __init__(self, estimator_loader: Callable[..., Estimator] = load_estimator, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self._setup(estimator_loader)
        except ConfigurationError:
            self.destroy_node()
            raise

    # ----------------------------------------------------------------------------------------- set-up
    def _setup(self, estimator_loader: Callable[..., Estimator]) -> None:
        values = {}
        try:
            for param in PARAMETERS:
                default = Parameter.Type.STRING_ARRAY if param.default == [] else param.default
                values[param.name] = self.declare_parameter(param.name, default, _descriptor(param)).value
        except ParameterException as exc:
            raise ConfigurationError(str(exc)) from exc
        p = _checked(values)
        self.fatal: Future = Future()    # completed with a message when the node cannot go on
        self.estimator: Optional[Estimator] = None
        self._estimator_loader = estimator_loader
        self._topics = list(p["image_topics"])
        count = len(self._topics)
        self._names = list(p["camera_names"]) or [f"cam{i}" for i in range(count)]
        self._frame_ids = list(p["camera_frame_ids"])
        self._stats = Stats(frames_received=[0] * count)
        self._stats_lock = threading.Lock()
        self._warned: Dict[Tuple, List[float]] = {}   # throttling key -> [last log time, occurrences since]
        self._camera_infos: List[Optional[CameraInfo]] = [None] * count

        # input side (touched only by the input callback group)
        self._stamp_order = StampOrder(count)
        self._sync: ApproximateSync = ApproximateSync(count, int(p["sync_slop_s"] * 1e9))
        self._gate = KeyframeGate(p["frame_stride"], int(p["min_interval_s"] * 1e9), p["min_motion"])
        self._window: SlidingWindow[FrameSet] = SlidingWindow(p["window_size"], p["window_stride"])
        self._stall = StallWatch(count, p["camera_timeout_s"], time.monotonic())
        self._queue: LatestWinsQueue[List[FrameSet]] = LatestWinsQueue(p["max_queue"])

        # worker side
        self._mapper = WindowMapper(p["voxel_size"], p["max_map_points"], WORLD_ROTATIONS[p["world_frame_convention"]])
        self._anchors: List[FrameSet] = []
        self._path: deque = deque(maxlen=p["path_max_size"])
        self._stop = threading.Event()

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._points_pub = self.create_publisher(PointCloud2, "~/points", latched)
        self._poses_pub = self.create_publisher(PoseArray, "~/poses", latched)
        self._path_pub = self.create_publisher(Path, "~/path", latched)
        self._odom_pub = self.create_publisher(Odometry, "~/odom", latched)
        self._depth_pubs = [self.create_publisher(Image, f"~/depth/{name}", 5) for name in self._names]
        self._info_pubs = [self.create_publisher(CameraInfo, f"~/depth/{name}/camera_info", 5)
                           for name in self._names]
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._tf = None
        if p["publish_tf"]:
            broadcaster = _tf_broadcaster_class()
            if broadcaster is None:
                self.get_logger().info("tf2_ros is not installed: no /tf; every output is already in "
                                       f"'{p['map_frame']}'")
            else:
                self._tf = broadcaster(self)

        input_group = MutuallyExclusiveCallbackGroup()
        compressed = p["transport"] == "compressed"
        for camera, topic in enumerate(self._topics):
            self.create_subscription(
                CompressedImage if compressed else Image, topic + "/compressed" if compressed else topic,
                lambda msg, camera=camera: self._on_image(camera, msg), qos_profile_sensor_data,
                callback_group=input_group, qos_overriding_options=QoSOverridingOptions.with_default_policies())
        for camera, topic in enumerate(p["camera_info_topics"]):
            self.create_subscription(CameraInfo, topic, lambda msg, camera=camera: self._on_camera_info(camera, msg),
                                     qos_profile_sensor_data, callback_group=input_group)
        self._report_period = p["diagnostics_period_s"]
        self._last_report = time.monotonic()
        self.create_timer(self._report_period, self._report, callback_group=MutuallyExclusiveCallbackGroup())
        self.add_post_set_parameters_callback(self._apply_runtime_parameters)

        self._worker = threading.Thread(target=self._work, name="vggt-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"listening to {', '.join(self._topics)} ({p['transport']}); windows of "
                               f"{p['window_size']} keyframes every {p['window_stride']}; outputs in "
                               f"'{p['map_frame']}' under {self.get_fully_qualified_name()}/")

    def _apply_runtime_parameters(self, params: Sequence[Parameter]) -> None:
        """Post-set callback: hand changed runtime parameters to the objects that use them."""
        for param in params:
            if param.name == "frame_stride":
                self._gate.frame_stride = param.value
            elif param.name == "min_interval_s":
                self._gate.min_interval_ns = int(param.value * 1e9)
            elif param.name == "min_motion":
                self._gate.min_motion = param.value
            elif param.name == "sync_slop_s":
                self._sync.slop_ns = int(param.value * 1e9)
            elif param.name == "camera_timeout_s":
                self._stall.timeout_s = param.value

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    # ------------------------------------------------------------------------------------------ input
    def _on_camera_info(self, camera: int, msg: CameraInfo) -> None:
        self._camera_infos[camera] = msg

    def _on_image(self, camera: int, msg) -> None:
        """Input group. ``frames_received`` counts messages whose handling is complete."""
        now = time.monotonic()
        with self._stats_lock:
            self._stall.seen(camera, now)
        try:
            self._ingest(camera, msg, now)
        except Exception:  # a bug must not take the executor down with it
            self.get_logger().error(f"image callback failed:\n{traceback.format_exc()}")
        finally:
            with self._stats_lock:
                self._stats.frames_received[camera] += 1

    def _ingest(self, camera: int, msg, now: float) -> None:
        """Check, synchronise, gate and decode; hand complete windows to the worker (never blocks)."""
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        problem = self._stamp_order.check(camera, stamp)
        if problem:
            self._input_problem(camera, "stamp", problem)
            return
        group = self._sync.add(camera, stamp, (now, msg))
        if group is None or not self._gate.due(conversions.stamp_to_ns(group[0][1].header.stamp)):
            return
        frames = []
        for index, (received, message) in enumerate(group):
            try:
                frames.append(self._to_frame(index, message, received))
            except conversions.ImageError as exc:
                self._input_problem(index, "image", str(exc))
                return
        thumb = thumbnail(frames[0].rgb)
        if not self._gate.moved(thumb):
            return
        frameset = FrameSet(tuple(frames))
        self._gate.accept(frameset.stamp_ns, thumb)
        latest = self._window.add(frameset)
        with self._stats_lock:
            self._stats.keyframes += 1
            if latest is None:
                return
            dropped = self._queue.put(latest)
            self._stats.windows_emitted += 1
            self._stats.dropped_windows += dropped
            total = self._stats.dropped_windows
        if dropped:
            cause = ("the model is still loading" if self.estimator is None else "inference is slower than the input"
                     "; raise window_stride/frame_stride or use a faster device")
            self._warn_throttled(("dropped",), f"dropped a waiting window ({total} so far): {cause}")

    def _to_frame(self, camera: int, msg, received: float) -> Frame:
        start = time.perf_counter()
        if isinstance(msg, CompressedImage):
            rgb = conversions.compressed_to_rgb(msg)
        else:
            rgb = conversions.image_to_rgb(msg)
        if rgb.shape[0] < 24 or rgb.shape[1] < 32:
            raise conversions.ImageError(f"image of {rgb.shape[1]}x{rgb.shape[0]} is too small (min 32x24)")
        frame_id = (self._frame_ids[camera] if self._frame_ids else msg.header.frame_id
                    or f"{self._names[camera]}_optical_frame")
        intrinsics = None
        info = self._camera_infos[camera]
        if info is not None:
            if (info.width, info.height) == (rgb.shape[1], rgb.shape[0]):
                intrinsics = conversions.intrinsics_from_info(info)
            else:
                self._input_problem(camera, "camera_info", f"CameraInfo is for {info.width}x{info.height} but the "
                                    f"image is {rgb.shape[1]}x{rgb.shape[0]}; using predicted intrinsics",
                                    count_as_rejected=False)
        return Frame(camera=camera, stamp_ns=conversions.stamp_to_ns(msg.header.stamp), frame_id=frame_id, rgb=rgb,
                     intrinsics=intrinsics, received=received, convert_seconds=time.perf_counter() - start)

    def _input_problem(self, camera: int, kind: str, text: str, count_as_rejected: bool = True) -> None:
        """A frame-level problem of one camera: counted, shown in diagnostics, logged throttled."""
        if count_as_rejected:
            with self._stats_lock:
                self._stats.rejected_frames += 1
        self._warn_throttled((camera, kind), f"{self._names[camera]} ({self._topics[camera]}): {text}")

    def _warn_throttled(self, key: Tuple, line: str) -> None:
        """One warning per ``key`` at most every 5 s, with the number of repeats in between."""
        now = time.monotonic()
        with self._stats_lock:
            self._stats.last_problem = line
            last = self._warned.setdefault(key, [-math.inf, 0])
            last[1] += 1
            if now - last[0] < 5.0:
                return
            repeats, last[0], last[1] = last[1] - 1, now, 0
        self.get_logger().warning(line + (f" ({repeats} more since the last report)" if repeats else ""))

    # ----------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        """Worker thread: load the model, then process windows until the node is destroyed."""
        p = {name: self._param(name) for name in ("checkpoint", "preset", "device", "precision")}
        try:
            self.estimator = self._estimator_loader(checkpoint=p["checkpoint"],
                                                    preset="" if p["checkpoint"] else p["preset"],
                                                    device=p["device"], precision=p["precision"])
        except (CheckpointError, ValueError, OSError, RuntimeError) as exc:
            self._fail(f"cannot load the model: {exc}")
            return
        self._input_size = self._param("image_size") or self.estimator.image_size
        self.get_logger().info(f"model ready: {self.estimator.description} ({self.estimator.backend}, "
                               f"{self.estimator.bits}-bit weights), input width {self._input_size}")
        while not self._stop.is_set():
            latest = self._queue.get(timeout=0.2)
            if latest is None:
                continue
            try:
                self._process(latest)
            except (WindowError, AlignmentError) as exc:
                self._window_failed(f"window skipped: {exc}")
            except RuntimeError as exc:  # e.g. CUDA out of memory: worth a line, not a dead worker
                self._window_failed(f"window failed: {str(exc).splitlines()[0]}")
            except Exception:  # a bug: keep serving, but show where
                if not self._stop.is_set():
                    self._window_failed(f"window failed unexpectedly:\n{traceback.format_exc()}")

    def _fail(self, message: str) -> None:
        if self._stop.is_set():
            return
        self.get_logger().fatal(message)
        with self._stats_lock:
            self._stats.last_problem = message
        self.fatal.set_result(message)

    def _window_failed(self, message: str) -> None:
        self.get_logger().warning(message)
        with self._stats_lock:
            self._stats.failed_windows += 1
            self._stats.last_problem = message.splitlines()[0]

    def _process(self, latest: List[FrameSet]) -> None:
        """Worker: one window from keyframes to published messages; stage timings go to diagnostics."""
        assert self.estimator is not None
        clock = [time.perf_counter(), time.thread_time()]
        timings: Dict[str, float] = {}
        cpu: Dict[str, float] = {}   # this thread's CPU time: unlike wall time, not inflated by a busy machine

        def lap(stage: str) -> None:
            now = [time.perf_counter(), time.thread_time()]
            timings[stage], cpu[stage] = (1000 * (b - a) for a, b in zip(clock, now))
            clock[:] = now

        window = compose_window(latest, self._anchors, self._window.size)
        frames = [frame for frameset in window for frame in frameset.frames]   # time-major, then camera
        new_frames = [frame for frame in frames if frame.model_input is None]
        # decoded in the subscription thread as they arrived: its wall time stands in for CPU time
        timings["convert"] = cpu["convert"] = 1000 * sum(frame.convert_seconds for frame in new_frames)
        images = self._model_inputs(frames)
        lap("preprocess")
        predictions = self.estimator.predict(images)
        lap("inference")
        pose_enc = predictions["pose_enc"][0].float()
        bad = int((~torch.isfinite(pose_enc).all(dim=-1)).sum())
        if bad:
            raise WindowError(f"the model returned non-finite camera poses for {bad} of {len(frames)} images")
        calibrated = self._calibrated_intrinsics(frames, images)
        recon = predictions_to_reconstruction(predictions, point_source=self._param("point_source"),
                                              pixel_stride=self._param("pixel_stride"), intrinsics=calibrated)
        lap("reconstruct")
        update = self._mapper.integrate([(f.stamp_ns, f.camera) for f in frames], recon,
                                        self._param("conf_percentile"), self._param("conf_min"),
                                        accumulate=self._param("cloud_mode") == "map")
        self._anchors = window[len(window) - (self._window.size - self._window.stride):]
        lap("align")
        if self._stop.is_set():
            return
        self._publish(window, frames, update, predictions, calibrated, images.shape[-2:])
        lap("publish")
        for stages in (timings, cpu):
            stages["overhead"] = sum(v for k, v in stages.items() if k != "inference")
        with self._stats_lock:
            stats = self._stats
            stats.windows_processed += 1
            stats.timings_ms, stats.cpu_ms = timings, cpu
            stats.window_latency_ms = 1000 * (time.monotonic() - window[-1].frames[0].received)
            stats.alignment_rmse, stats.alignment_scale = update.rmse, update.scale
            stats.map_points = len(self._mapper.map)

    def _model_inputs(self, frames: List[Frame]) -> torch.Tensor:
        """[S, 3, H, W] in [0, 1]; each frame is preprocessed once and reused by overlapping windows."""
        for frame in frames:
            if frame.model_input is None:
                frame.model_input = preprocess_image(frame.rgb, mode=self._param("preprocess_mode"),
                                                     target_size=self._input_size)
        sizes = sorted({(f.model_input.shape[-1], f.model_input.shape[-2]) for f in frames})
        if len(sizes) > 1:
            self._warn_throttled(("sizes",), "images of different sizes in one window (model inputs "
                                 + ", ".join(f"{w}x{h}" for w, h in sizes) + "): smaller ones are padded with white")
        return stack_padded([frame.model_input for frame in frames])

    def _calibrated_intrinsics(self, frames: List[Frame], images: torch.Tensor) -> Optional[torch.Tensor]:
        """CameraInfo intrinsics in model-input pixels when ``intrinsics_source`` asks for them, else None."""
        if self._param("intrinsics_source") != "camera_info":
            return None
        missing = sorted({f.camera for f in frames if f.intrinsics is None})
        if missing:
            self._input_problem(missing[0], "camera_info", "no usable CameraInfo yet: this window uses predicted "
                                "intrinsics", count_as_rejected=False)
            return None
        height, width = images.shape[-2:]
        out = []
        for frame in frames:
            k = preprocessed_intrinsics(frame.intrinsics, frame.rgb.shape[1], frame.rgb.shape[0],
                                        mode=self._param("preprocess_mode"), target_size=self._input_size)
            k[0, 2] += (width - frame.model_input.shape[-1]) // 2   # white padding of smaller images (stack_padded)
            k[1, 2] += (height - frame.model_input.shape[-2]) // 2
            out.append(k)
        return torch.tensor(np.stack(out), dtype=torch.float32)

    # ---------------------------------------------------------------------------------------- outputs
    def _publish(self, window: List[FrameSet], frames: List[Frame], update: WindowUpdate,
                 predictions: Dict[str, torch.Tensor], calibrated: Optional[torch.Tensor],
                 image_hw: Sequence[int]) -> None:
        map_frame = self._param("map_frame")
        stamp = window[-1].stamp_ns
        head = conversions.header(map_frame, stamp)
        poses = list(zip(update.positions, update.quaternions))
        if self._param("cloud_mode") == "map":
            xyz, rgb, conf = self._mapper.map.arrays()
        else:
            xyz, rgb, conf = update.xyz, update.rgb, update.conf
        self._points_pub.publish(conversions.point_cloud(head, xyz, rgb,
                                                         conf if self._param("publish_confidence") else None))
        self._poses_pub.publish(conversions.pose_array(head, poses))

        cameras = len(window[0].frames)
        newest = len(frames) - cameras   # index of the newest time step's first image
        last_path_stamp = self._path[-1][0] if self._path else -1
        for step, frameset in enumerate(window):
            if frameset.stamp_ns > last_path_stamp:
                self._path.append((frameset.stamp_ns, map_frame, poses[step * cameras]))
        self._path_pub.publish(conversions.path_message(head, self._path))
        self._odom_pub.publish(conversions.odometry(head, frames[newest].frame_id, poses[newest]))
        if self._tf is not None:
            self._tf.sendTransform([conversions.transform(head, frames[newest + c].frame_id, poses[newest + c])
                                    for c in range(cameras)])

        # depth of the newest time step at model resolution, in map units (like the cloud), NaN where invalid
        _, predicted = pose_encoding_to_extri_intri(predictions["pose_enc"][:, newest:].float(), image_hw)
        conf_min = self._param("conf_min")
        for c in range(cameras):
            index, frame = newest + c, frames[newest + c]
            depth = predictions["depth"][0, index, ..., 0].float().cpu().numpy()
            conf = predictions["depth_conf"][0, index].float().cpu().numpy()
            depth = np.where(np.isfinite(depth) & (depth > 0) & (conf > conf_min), depth * update.scale, np.nan)
            k = (calibrated[index] if calibrated is not None else predicted[0, c]).numpy()
            frame_head = conversions.header(frame.frame_id, frame.stamp_ns)
            self._depth_pubs[c].publish(conversions.depth_image(frame_head, depth))
            self._info_pubs[c].publish(conversions.camera_info(frame_head, k, depth.shape[1], depth.shape[0]))

    # ------------------------------------------------------------------------------------ diagnostics
    def stats(self) -> Stats:
        """A consistent copy of the counters and timings."""
        with self._stats_lock:
            return self._copy_stats()

    def _copy_stats(self) -> Stats:
        # the caller holds the stats lock
        return dataclasses.replace(self._stats, frames_received=list(self._stats.frames_received),
                                   timings_ms=dict(self._stats.timings_ms), cpu_ms=dict(self._stats.cpu_ms))

    def _report(self) -> None:
        """Timer group: camera watchdog and /diagnostics."""
        now = time.monotonic()
        with self._stats_lock:
            stalled, resumed = self._stall.update(now)
            silent = {c: self._stall.silent_for(c, now) for c in self._stall.stalled}
            stats = self._copy_stats()
            self._stats.processed_at_last_report = stats.windows_processed
            problems = stats.rejected_frames + stats.dropped_windows + stats.failed_windows
            self._stats.problems_at_last_report = problems
        for camera in stalled:
            never = stats.frames_received[camera] == 0
            self.get_logger().warning(
                f"{self._names[camera]} ({self._topics[camera]}): "
                + ("no image received yet; check the topic name and that the publisher is running"
                   if never else f"no image for {silent[camera]:.1f} s")
                + ("; windows wait until every camera sends again" if len(self._topics) > 1 else ""))
        for camera in resumed:
            self.get_logger().info(f"{self._names[camera]} ({self._topics[camera]}): images arrive again")
        elapsed, self._last_report = now - self._last_report, now
        estimator = self.estimator
        if self.fatal.done():
            level, message = DiagnosticStatus.ERROR, self.fatal.result()
        elif silent:
            level = DiagnosticStatus.WARN
            message = "no images from " + ", ".join(f"{self._names[c]} for {s:.1f} s" for c, s in silent.items())
        elif problems > stats.problems_at_last_report:
            level, message = DiagnosticStatus.WARN, stats.last_problem
        elif estimator is None:
            level, message = DiagnosticStatus.OK, "loading the model"
        else:
            level, message = DiagnosticStatus.OK, "running"
        values = {
            "state": "error" if self.fatal.done() else "loading" if estimator is None else "running",
            "model": estimator.description if estimator else "",
            "backend": estimator.backend if estimator else "",
            "bits": str(estimator.bits) if estimator else "",
            "scale_mode": SCALE_MODE,
            "frames_received": str(sum(stats.frames_received)),
            **{f"frames_received/{name}": str(n) for name, n in zip(self._names, stats.frames_received)},
            "rejected_frames": str(stats.rejected_frames),
            "keyframes": str(stats.keyframes),
            "windows_emitted": str(stats.windows_emitted),
            "windows_processed": str(stats.windows_processed),
            "dropped_windows": str(stats.dropped_windows),
            "failed_windows": str(stats.failed_windows),
            "queued_windows": str(len(self._queue)),
            "window_rate_hz": f"{(stats.windows_processed - stats.processed_at_last_report) / elapsed:.3f}",
            "window_latency_ms": f"{stats.window_latency_ms:.1f}",
            **{f"{stage}_ms": f"{ms:.1f}" for stage, ms in stats.timings_ms.items()},
            "alignment_rmse": f"{stats.alignment_rmse:.4g}",
            "alignment_scale": f"{stats.alignment_scale:.4g}",
            "map_points": str(stats.map_points),
            "stalled_cameras": ",".join(self._names[c] for c in silent),
            "last_problem": stats.last_problem,
        }
        status = DiagnosticStatus(level=level, name=DIAGNOSTIC_NAME, message=message,
                                  hardware_id=estimator.backend if estimator else "",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # --------------------------------------------------------------------------------------- shutdown
    def destroy_node(self) -> None:
        """Stop the worker (it finishes the window in hand) before the publishers go away."""
        if hasattr(self, "_worker"):
            self._stop.set()
            self._queue.close()
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """Console script ``reconstruct``: ``reconstruct --ros-args --params-file config/reconstruct.yaml``."""
    try:
        for path in params_files_of(sys.argv if args is None else args):
            check_params_file(path, argument="--params-file")   # rcl would fail in rclpy.init with a traceback
    except ArgumentError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"configuration error: {exc}")
        return 1
    try:
        with rclpy.init(args=args):
            try:
                node = ReconstructNode()
            except ConfigurationError as exc:
                rclpy.logging.get_logger(NODE_NAME).fatal(f"configuration error: {exc}")
                return 1
            executor = MultiThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin_until_future_complete(node.fatal)
            finally:
                executor.shutdown()
                node.destroy_node()
            return 1 if node.fatal.done() else 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0


if __name__ == "__main__":
    sys.exit(main())
