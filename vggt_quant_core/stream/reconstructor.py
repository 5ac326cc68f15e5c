"""Streaming reconstruction: frames of any number in, one map, a trajectory and depth out, in bounded memory.

``StreamReconstructor.push(frame)`` takes one camera image at a time (with what a scale source needs) and
returns a ``WindowResult`` whenever a window of keyframes was reconstructed and placed in the map. Inside,
two stages that touch separate state, so that a caller may run them in two threads with a queue between
(the ROS node does, dropping windows when inference falls behind):

* input (``synchronise``, ``add_keyframe``, ``push_depth``, ``push_odometry``): per-camera stamp order,
  approximate time sync of the cameras, keyframe gates (count, time, motion), pairing of registered depth
  images with keyframes, and sliding windows of ``window_size`` keyframes every ``window_stride``;
* windows (``process``): VGGT on the window, chaining into the map by Sim(3), metric scale, depth
  (``WindowProcessor``).

Frames of a camera whose lens is distorted (``Frame.distortion_model``, ``distortion``: a CameraInfo's) are
undistorted to a pinhole of the same K before they reach the model (``rectify: auto``, ``lenses``), so that the
depth, cameras and cloud are those of the pinhole camera VGGT assumes.

``reset()`` starts a new map while the stream goes on (the model stays). It, ``snapshot()`` (a copy of the map
and the trajectory) and ``save()`` may be called while ``process`` runs in another thread: the map changes only
inside a short lock, after the model's part of a window, and a window whose inference began before a reset is
dropped (``StaleWindow``) instead of reaching the new map.

What it keeps is bounded: one window of frames (and their reused per-frame model work), the voxel map
(``max_map_points``), recent odometry, and camera 0's path (``path_max_size`` poses, 64 bytes each; 0 keeps
every pose). ``save(folder)`` writes the map, the trajectory, the cameras and the last window's depth.
"""

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch

from ..export import write_depth, write_ply
from ..fileio import PathLike, atomic_directory, write_text_atomic
from ..geometry import quat_to_mat
from .estimator import Estimator
from .lenses import Lenses
from .mapping import AlignmentError, VoxelMap
from .metric_scale import NoScale, OdometryTrack
from .settings import StreamSettings
from .window_processor import MetricSensors, PathPose, WindowError, WindowProcessor, WindowResult, Warn
from .windowing import (ApproximateSync, Frame, FrameSet, KeyframeGate, SlidingWindow, StampOrder, StampPairing,
                        thumbnail)

log = logging.getLogger("vggt_quant")
T = TypeVar("T")
MIN_WIDTH, MIN_HEIGHT = 32, 24      # the motion gate's thumbnail
CAMERA_CONVENTION = ("extrinsic: camera-from-map [R|t] (OpenCV: x right, y down, z forward) of camera 0 at each "
                     "keyframe; map = axes of world_frame_convention at the first camera, units of the first window "
                     "or metres with a scale source")


class StaleWindow(Exception):
    """The stream was reset while this window was being reconstructed: its result belongs to the old map."""


class FrameRejected(ValueError):
    """An input frame that cannot be used (stamp out of order, image too small); the stream goes on without it."""

    def __init__(self, camera: int, kind: str, text: str):
        super().__init__(text)
        self.camera, self.kind = camera, kind


@dataclass
class StreamCounts:
    """What happened to the input so far."""

    frames: int = 0           # images pushed
    rejected: int = 0         # ... of which refused (``FrameRejected``)
    keyframes: int = 0        # synchronised time steps that passed the gates
    windows: int = 0          # windows of keyframes made
    processed: int = 0        # ... reconstructed and placed in the map
    failed: int = 0           # ... skipped (``WindowError``, ``AlignmentError``)


def _log_warning(camera: Optional[int], kind: str, text: str) -> None:
    log.warning("%s%s", "" if camera is None else f"camera {camera}: ", text)


class StreamReconstructor:
    """Sliding-window VGGT reconstruction of a stream (see the module docstring).

    ``estimator`` may come later (``use``): the input stage works without it. ``warn(camera or None, kind,
    text)`` hears problems that do not stop the stream (default: the log). ``sensors`` replaces how the metric
    scale gets the stereo baseline and odometry positions (default: ``stereo_baseline_m``, which starts as the
    setting's, and the frames' ``odometry`` or what ``push_odometry`` received)."""

    def __init__(self, settings: StreamSettings, estimator: Optional[Estimator] = None, warn: Optional[Warn] = None,
                 sensors: Optional[MetricSensors] = None):
        settings.check()
        self.settings = settings
        self._warn = warn or _log_warning
        self.counts = StreamCounts()
        self.odometry = OdometryTrack()
        self.stereo_baseline_m = settings.stereo_baseline_m
        self.sensors = sensors or MetricSensors(baseline_m=lambda: self.stereo_baseline_m,
                                                positions_at=self._positions_at)
        self.lenses = Lenses(self._warn)   # kept across resets, like the model
        self._start_input_stage()
        # window stage; the lock guards what it shares with reset() and snapshot() (map, path, scale, last)
        self._lock = threading.Lock()
        self.generation = 0                  # resets so far
        self._processor: Optional[WindowProcessor] = None
        self.last: Optional[WindowResult] = None
        if estimator is not None:
            self.use(estimator)

    def _start_input_stage(self) -> None:
        settings = self.settings
        self._stamp_order = StampOrder(settings.cameras)
        self._sync: ApproximateSync = ApproximateSync(settings.cameras, int(settings.sync_slop_s * 1e9))
        self._gate = KeyframeGate(settings.frame_stride, int(settings.min_interval_s * 1e9), settings.min_motion)
        self._window: SlidingWindow[FrameSet] = SlidingWindow(settings.window_size, settings.window_stride)
        self._depth: Optional[StampPairing[np.ndarray]] = (
            StampPairing(int(settings.sync_slop_s * 1e9), self._attach_depth) if settings.scale_source == "depth"
            else None)

    def use(self, estimator: Estimator) -> None:
        """The model the windows run (once; the ROS node loads it while the input stage already runs)."""
        if self._processor is not None:
            raise ValueError("the stream has a model already")
        self._processor = WindowProcessor(estimator, self.settings, self._warn, self.sensors, self.generation,
                                          self.lenses)

    def reset(self) -> Tuple[int, int]:
        """Start a new map: forget the map, the trajectory, the metric scale and the keyframes waiting for a
        window; the next keyframe starts the new map (at its own origin and scale). The model, the lenses and the
        sensors' data stay. Call it from the thread that feeds the input stage; a window being reconstructed
        meanwhile ends in ``StaleWindow``. Returns the map points and trajectory poses it dropped."""
        with self._lock:
            processor = self._processor
            dropped = (0, 0) if processor is None else (len(processor.mapper.map), len(processor.path))
            self.generation += 1
            self._start_input_stage()
            if self._processor is not None:
                self._processor = WindowProcessor(self._processor.estimator, self.settings, self._warn, self.sensors,
                                                  self.generation, self.lenses)
            self.last = None
        return dropped

    @property
    def processor(self) -> WindowProcessor:
        if self._processor is None:
            raise ValueError("no model yet: give one to the constructor or to use()")
        return self._processor

    def configure(self, settings: StreamSettings) -> None:
        """Take new settings while streaming; only runtime parameters may change (``ConfigurationError``)."""
        self.settings.runtime_change(settings)
        self.settings = settings
        self._gate.frame_stride, self._gate.min_interval_ns = settings.frame_stride, int(settings.min_interval_s * 1e9)
        self._gate.min_motion = settings.min_motion
        self._sync.slop_ns = int(settings.sync_slop_s * 1e9)

    # ------------------------------------------------------------------------------------------- both
    def push(self, frame: Frame) -> Optional[WindowResult]:
        """One image; the window it completes, reconstructed, or None. A frame that cannot be used raises
        ``FrameRejected``; a window that cannot be placed is counted in ``counts.failed`` and warned about."""
        self.counts.frames += 1
        group = self.synchronise(frame.camera, frame.stamp_ns, frame)
        window = None if group is None else self.add_keyframe(group)
        return None if window is None else self._process_or_warn(window)

    def finish(self) -> Optional[WindowResult]:
        """At the end of a stream: reconstruct the keyframes that came after the last window (the newest
        ``window_size`` of them, chained through the last window's), or a stream shorter than one window."""
        window = self._window.flush()
        if window is None:
            return None
        self.counts.windows += 1
        return self._process_or_warn(window)

    def _process_or_warn(self, window: List[FrameSet]) -> Optional[WindowResult]:
        try:
            return self.process(window)
        except (WindowError, AlignmentError) as exc:
            self._warn(None, "window", f"window skipped: {exc}")
        except StaleWindow:   # another thread reset the stream meanwhile
            pass
        return None

    # ------------------------------------------------------------------------------------ input stage
    def synchronise(self, camera: int, stamp_ns: int, item: T) -> Optional[List[T]]:
        """One item per camera and time step (a frame, or a message still to decode) -> the items of a time step
        that the count and time gates let through, in camera order, or None. Raises ``FrameRejected`` for a
        stamp that is not after the camera's previous one."""
        if not 0 <= camera < self.settings.cameras:
            raise FrameRejected(camera, "camera", f"camera {camera} is not one of the stream's "
                                f"{self.settings.cameras}")
        problem = self._stamp_order.check(camera, stamp_ns)
        if problem:
            self.counts.rejected += 1
            raise FrameRejected(camera, "stamp", problem)
        group = self._sync.add(camera, stamp_ns, (stamp_ns, item))
        if group is None or not self._gate.due(group[0][0]):   # a time step is stamped by camera 0
            return None
        return [member for _, member in group]

    def add_keyframe(self, frames: Sequence[Frame]) -> Optional[List[FrameSet]]:
        """The decoded frames of a time step that ``synchronise`` let through -> a window of keyframes when this
        one completes it, else None. Raises ``FrameRejected`` for an image too small to gate."""
        for frame in frames:
            if frame.rgb.shape[0] < MIN_HEIGHT or frame.rgb.shape[1] < MIN_WIDTH:
                self.counts.rejected += 1
                raise FrameRejected(frame.camera, "image", f"image of {frame.rgb.shape[1]}x{frame.rgb.shape[0]} is "
                                    f"too small (min {MIN_WIDTH}x{MIN_HEIGHT})")
        thumb = thumbnail(frames[0].rgb)
        if not self._gate.moved(thumb):
            return None
        frameset = FrameSet(tuple(frames))
        self._gate.accept(frameset.stamp_ns, thumb)
        self.counts.keyframes += 1
        if self._depth is not None:
            self._depth.add_frame(frameset.frames[self.settings.depth_camera])
        window = self._window.add(frameset)
        if window is not None:
            self.counts.windows += 1
        return window

    def push_depth(self, stamp_ns: int, depth_m: np.ndarray) -> None:
        """A depth image [H, W] in metres (NaN: none) registered to camera ``depth_camera``, paired with the
        keyframe nearest in stamp within ``sync_slop_s`` (whichever of the two comes first waits)."""
        if self._depth is not None:
            self._depth.add_item(stamp_ns, depth_m)

    def push_odometry(self, stamp_ns: int, position: Sequence[float]) -> None:
        """A position (metres, any fixed frame) of camera 0's body at ``stamp_ns`` (odometry; stamps in order)."""
        self.odometry.add(stamp_ns, position)

    def _attach_depth(self, frame: Frame, depth: np.ndarray) -> None:
        if depth.shape != frame.rgb.shape[:2]:
            self._warn(frame.camera, "depth", f"depth image is {depth.shape[1]}x{depth.shape[0]} but the image is "
                       f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}; register the depth to this camera (skipped)")
            return
        frame.metric_depth = depth

    def _positions_at(self, frames: List[Frame]) -> np.ndarray:
        """Odometry positions [K, 3] of the frames: their own ``odometry``, else the pushed track."""
        own = [frame.odometry is not None for frame in frames]
        if not any(own) and self.odometry.received == 0:
            raise NoScale("no odometry received")
        out = self.odometry.positions_at([frame.stamp_ns for frame in frames])
        for row, frame in enumerate(frames):
            if frame.odometry is not None:
                out[row] = frame.odometry
        return out

    # ----------------------------------------------------------------------------------- window stage
    def process(self, window: List[FrameSet]) -> WindowResult:
        """Reconstruct one window (from ``add_keyframe``) with the settings of this moment and place it in the
        map; raises ``WindowError`` or ``AlignmentError`` for a window that cannot be used, ``StaleWindow`` when
        the stream was reset meanwhile."""
        with self._lock:   # a reset replaces both
            processor, generation = self.processor, self.generation
        settings = self.settings
        try:
            inferred = processor.infer(window, settings)   # the long part, outside the lock
            with self._lock:
                if generation != self.generation:
                    raise StaleWindow(f"the stream was reset while a window of {len(window)} keyframes was being "
                                      "reconstructed; it was dropped")
                result = processor.integrate(inferred, settings)
                result.generation = generation
                self.last = result
        except (WindowError, AlignmentError):
            self.counts.failed += 1
            raise
        self.counts.processed += 1
        return result

    @property
    def map(self) -> VoxelMap:
        return self.processor.mapper.map

    def cloud(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The map's points [N, 3] float32, colours [N, 3] uint8, confidences [N] (``cloud_mode`` window: the
        last window's)."""
        with self._lock:
            return self._cloud()

    def _cloud(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.settings.cloud_mode == "map" or self.last is None:
            return self.map.arrays()
        update = self.last.update
        return update.xyz, update.rgb, update.conf

    @property
    def trajectory(self) -> List[PathPose]:
        """Camera 0 at every keyframe so far (the newest ``path_max_size``; 0: all), oldest first."""
        with self._lock:
            return self.processor.path

    def snapshot(self, summary: Optional[Dict[str, Any]] = None) -> "MapSnapshot":
        """Copies of the map, the trajectory, the last window's depth and the summary (``summary`` added to it),
        taken at one moment under the lock (never half a window); empty before the first window."""
        with self._lock:
            if self._processor is None:
                xyz, rgb, path, views = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), [], []
                state = {"scale_mode": "up-to-scale (no window yet)"}
            else:
                xyz, rgb, _ = self._cloud()
                path, views = self._processor.path, [] if self.last is None else self.last.depth
                state = self._processor.scale.status(self.settings.scale_source)
            counts, settings, generation = dataclasses.asdict(self.counts), dataclasses.asdict(self.settings), \
                self.generation
        return MapSnapshot(xyz, rgb, path, [(v.frame.camera, v.frame.index, v.depth) for v in views], {
            **(summary or {}), **counts, "resets": generation, "map_points": len(xyz),
            "keyframes_in_trajectory": len(path), "map_units": state["scale_mode"], "scale": state,
            "rectified": {f"camera {camera}": model for camera, model in self.lenses.rectified.items()},
            "settings": settings,
            "files": {"map": "points.ply", "trajectory": "trajectory.txt (TUM: stamp_s tx ty tz qx qy qz qw)",
                      "cameras": "cameras.json", "depth": "depth/frame_<index>.npy|.png (camera k > 0: camk/depth/)"}})

    def save(self, folder: PathLike, summary: Optional[Dict[str, Any]] = None) -> None:
        """Write ``points.ply``, ``trajectory.txt`` (TUM), ``cameras.json``, the last window's depth and
        ``summary.json`` (``summary`` added to it) as one directory, atomically: ``folder`` is replaced whole."""
        self.snapshot(summary).save(folder)

    def write(self, folder: Path, summary: Optional[Dict[str, Any]] = None) -> None:
        """What ``save`` writes, into an existing ``folder`` (each file atomically, the folder not)."""
        self.snapshot(summary).write(folder)


@dataclass
class MapSnapshot:
    """What ``StreamReconstructor.snapshot`` copied: writing it needs no lock, whatever the stream does since."""

    xyz: np.ndarray                             # [N, 3] float32 map points
    rgb: np.ndarray                             # [N, 3] uint8
    path: List[PathPose]                        # camera 0 at each keyframe, oldest first
    depth: List[Tuple[int, int, np.ndarray]]    # (camera, frame index, depth [H, W]) of the last window
    summary: Dict[str, Any]

    def write(self, folder: Path) -> None:
        """Into an existing ``folder`` (each file atomically, the folder not)."""
        write_map_outputs(folder, self.xyz, self.rgb, self.path, self.depth)
        write_text_atomic(folder / "summary.json", json.dumps(self.summary, indent=1))

    def save(self, folder: PathLike) -> None:
        """As one directory, atomically: ``folder`` is replaced whole or not at all."""
        with atomic_directory(folder) as staged:
            staged.mkdir()
            self.write(staged)


def dated_folder(parent: PathLike, prefix: str, when: datetime) -> Path:
    """``parent/<prefix>_YYYY-MM-DD_HH-MM-SS`` (local time), with ``_2``, ``_3``, ... when that name is taken:
    a new folder's name, never an existing one's."""
    stem = Path(parent).expanduser() / f"{prefix}_{when:%Y-%m-%d_%H-%M-%S}"
    folder, number = stem, 1
    while folder.exists():
        number += 1
        folder = stem.with_name(f"{stem.name}_{number}")
    return folder


def write_map_outputs(folder: Path, xyz: np.ndarray, rgb: np.ndarray, path: Sequence[PathPose],
                      depth: Sequence[Tuple[int, int, np.ndarray]]) -> None:
    """``points.ply``, ``trajectory.txt`` (TUM), ``cameras.json`` and the depth images (camera, frame index,
    depth [H, W] in map units) of a streaming reconstruction into ``folder``, each file atomically."""
    write_ply(folder / "points.ply", xyz, rgb)
    write_text_atomic(folder / "trajectory.txt", tum_trajectory(path))
    write_text_atomic(folder / "cameras.json", json.dumps({"convention": CAMERA_CONVENTION, "frames": [
        {"index": pose.index, "stamp_ns": pose.stamp_ns, "extrinsic": camera_from_map(pose).tolist()}
        for pose in path]}, indent=1))
    for camera, index, image in depth:
        _write_depth(folder, camera, index, image)


def tum_trajectory(path: Sequence[PathPose]) -> str:
    """TUM RGB-D format: one line per pose, ``stamp_s tx ty tz qx qy qz qw`` (camera centre and optical axes in
    the map)."""
    return "".join(f"{pose.stamp_ns / 1e9:.9f} " + " ".join(f"{v:.9g}" for v in (*pose.position, *pose.quaternion))
                   + "\n" for pose in path)


def camera_from_map(pose: PathPose) -> np.ndarray:
    """[3, 4] camera-from-map extrinsic (OpenCV axes) of a map pose (map-from-camera rotation R, centre p):
    [R^T | -R^T p]."""
    rotation = quat_to_mat(torch.tensor(np.asarray(pose.quaternion, np.float64))).numpy()
    return np.concatenate([rotation.T, (-rotation.T @ np.asarray(pose.position, np.float64))[:, None]], axis=1)


def write_depth_views(folder: Path, result: WindowResult) -> None:
    """The depth of a window's newest time step (map units, NaN: none) as ``depth/frame_<index>.npy|.png``
    (camera k > 0: ``camk/depth/``)."""
    for view in result.depth:
        _write_depth(folder, view.frame.camera, view.frame.index, view.depth)


def _write_depth(folder: Path, camera: int, index: int, depth: np.ndarray) -> None:
    write_depth(folder if camera == 0 else folder / f"cam{camera}", index, depth)
