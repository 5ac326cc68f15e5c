"""One window of keyframes -> VGGT -> cameras, depth, cloud and map update.

``StreamReconstructor.process`` (and so the ROS node's worker) hands each window to
``WindowProcessor.process``. The processor owns what outlives a window: the map (``WindowMapper``), the
metric scale (``ScaleFilter``), the keyframes shared with the next window, and camera 0's path.
"""

import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from vggt_quant_core.data import preprocess_image, preprocessed_intrinsics, stack_padded
from vggt_quant_core.data.trajectories import camera_centres
from vggt_quant_core.geometry import pose_encoding_to_extri_intri
from vggt_quant_core.inference import Reconstruction, predictions_to_reconstruction

from .estimator import Estimator
from .lenses import Lenses
from .mapping import WORLD_ROTATIONS, Alignment, WindowMapper, WindowUpdate
from .metric_scale import NoScale, ScaleFilter, ScaleSample, depth_pairs, depth_scale, stereo_scale, travel_scale
from .settings import StreamSettings
from .windowing import Frame, FrameSet, compose_window

Pose = Tuple[np.ndarray, np.ndarray]   # position [3], quaternion [4] (x, y, z, w) in the map


class PathPose(NamedTuple):
    """Camera 0 of one keyframe in the map."""

    stamp_ns: int
    index: int                 # the source's number of the image (``Frame.index``)
    position: np.ndarray       # [3]
    quaternion: np.ndarray     # [4] (x, y, z, w), the optical axes in the map


# (camera or None for the whole window, kind, text): a problem worth a throttled warning, not a failed window
Warn = Callable[[Optional[int], str, str], None]


@dataclass
class MetricSensors:
    """What the metric scale is measured with (``scale_source``), as plain callables."""

    baseline_m: Callable[[], float] = lambda: 0.0   # stereo: metres between cameras 0 and 1 (0: not known yet)
    # odometry: metres of the given frames' cameras in a fixed frame, [K, 3], NaN rows where unknown
    positions_at: Callable[[List[Frame]], np.ndarray] = lambda frames: np.full((len(frames), 3), np.nan)


class WindowError(Exception):
    """A window that cannot be used (e.g. non-finite model output); the stream skips it."""


class StageClock:
    """Wall and CPU milliseconds per stage; this thread's CPU time is not inflated by a busy machine."""

    def __init__(self) -> None:
        self.wall_ms: Dict[str, float] = {}
        self.cpu_ms: Dict[str, float] = {}
        self._last = (time.perf_counter(), time.thread_time())

    def lap(self, stage: str) -> None:
        now = (time.perf_counter(), time.thread_time())
        self.wall_ms[stage], self.cpu_ms[stage] = (1000 * (b - a) for a, b in zip(self._last, now))
        self._last = now

    def finish(self) -> None:
        """Add ``overhead``: every stage but inference."""
        for stages in (self.wall_ms, self.cpu_ms):
            stages["overhead"] = sum(v for k, v in stages.items() if k != "inference")


@dataclass
class DepthView:
    """Depth of one image at model resolution, with the intrinsics to back-project it."""

    frame: Frame
    depth: np.ndarray        # [H, W] float32, map units, NaN where invalid
    intrinsics: np.ndarray   # [3, 3] pixels of ``depth`` (predicted, or from CameraInfo)


@dataclass
class WindowResult:
    """What one window adds, in the map frame."""

    window: List[FrameSet]
    frames: List[Frame]                  # time-major, then camera
    update: WindowUpdate                 # the window's placement, cameras and own cloud
    cloud: Tuple[np.ndarray, np.ndarray, np.ndarray]   # xyz, rgb, conf of ~/points (map or window)
    depth: List[DepthView]               # the newest time step, one per camera
    map_points: int
    path: List[PathPose]                 # camera 0 at every keyframe so far, this window's included
    scale_status: Dict[str, str]         # the metric scale's state (``ScaleFilter.status``)
    rescaled_map: float = 1.0            # factor the existing map was multiplied by (the switch to metres)
    clock: StageClock = field(default_factory=StageClock)
    generation: int = 0                  # the stream's reset count when the window was placed

    @property
    def poses(self) -> List[Pose]:
        return list(zip(self.update.positions, self.update.quaternions))

    @property
    def newest(self) -> int:
        """Index in ``frames`` of the newest time step's first image."""
        return len(self.frames) - len(self.window[0].frames)


@dataclass
class Inference:
    """A window after the model, before the map (``WindowProcessor.infer``)."""

    window: List[FrameSet]
    frames: List[Frame]
    keys: List[Tuple[int, int]]          # (stamp, camera) per image
    predictions: Dict[str, torch.Tensor]
    recon: Reconstruction
    intrinsics: torch.Tensor             # [S, 3, 3] model-input pixels
    clock: StageClock


class WindowProcessor:
    """The per-window work. ``settings`` fixes the map (voxels, axes), the window overlap and the path length;
    each ``process`` call takes the settings snapshot its window runs with. ``epoch`` tells the estimator's frame
    keys of this processor from those of an earlier one (a stream that was reset)."""

    def __init__(self, estimator: Estimator, settings: StreamSettings, warn: Warn,
                 sensors: Optional[MetricSensors] = None, epoch: int = 0, lenses: Optional[Lenses] = None):
        self.estimator = estimator
        self.epoch = epoch
        self.lenses = lenses or Lenses(warn)
        self.scale = ScaleFilter(settings.scale_drift)
        self._sensors = sensors or MetricSensors()
        self.input_size = settings.image_size or estimator.image_size
        self.mapper = WindowMapper(settings.voxel_size, settings.max_map_points,
                                   WORLD_ROTATIONS[settings.world_frame_convention])
        self._size, self._shared = settings.window_size, settings.window_size - settings.window_stride
        self._anchors: List[FrameSet] = []
        self._path: Deque[PathPose] = deque(maxlen=settings.path_max_size or None)
        self._warn = warn

    @property
    def path(self) -> List[PathPose]:
        """Camera 0 at every keyframe so far (the newest ``path_max_size``), oldest first."""
        return list(self._path)

    def process(self, latest: List[FrameSet], settings: StreamSettings) -> WindowResult:
        """Keyframes of the newest window (plus the shared ones of the last processed window when windows were
        dropped) -> result; raises ``WindowError`` or ``mapping.AlignmentError`` for an unusable window."""
        return self.integrate(self.infer(latest, settings), settings)

    def infer(self, latest: List[FrameSet], settings: StreamSettings) -> Inference:
        """The model's part of ``process`` (the long one): it changes nothing that ``integrate`` or the map's
        readers share, so it may run without the lock that guards them. Raises ``WindowError``."""
        clock = StageClock()
        window = compose_window(latest, self._anchors, self._size)
        frames = [frame for frameset in window for frame in frameset.frames]   # time-major, then camera
        # decoded in the subscription thread as they arrived: its wall time stands in for CPU time
        convert = 1000 * sum(frame.convert_seconds for frame in frames if frame.model_input is None)
        clock.wall_ms["convert"] = clock.cpu_ms["convert"] = convert
        images = self._model_inputs(frames, settings)
        clock.lap("preprocess")
        keys = [(f.stamp_ns, f.camera) for f in frames]
        # the epoch keeps a reset stream from reusing the model work of an earlier frame with the same stamp
        predictions = self.estimator.predict(images, [(self.epoch, *key) for key in keys]
                                             if settings.reuse_frame_tokens else None)
        clock.lap("inference")
        pose_enc = predictions["pose_enc"][0].float()
        bad = int((~torch.isfinite(pose_enc).all(dim=-1)).sum())
        if bad:
            raise WindowError(f"the model returned non-finite camera poses for {bad} of {len(frames)} images")
        calibrated = self._calibrated_intrinsics(frames, images, settings)
        if calibrated is None:
            _, predicted = pose_encoding_to_extri_intri(pose_enc[None], images.shape[-2:])
            intrinsics = predicted[0]
        else:
            intrinsics = calibrated
        recon = predictions_to_reconstruction(predictions, point_source=settings.point_source,
                                              pixel_stride=settings.pixel_stride, intrinsics=intrinsics)
        clock.lap("reconstruct")
        return Inference(window, frames, keys, predictions, recon, intrinsics, clock)

    def integrate(self, inferred: Inference, settings: StreamSettings) -> WindowResult:
        """``process`` after the model: place the window in the map, extend the path (short; callers that read
        the map from other threads hold a lock around it). Raises ``mapping.AlignmentError``."""
        window, frames, keys, predictions, recon = (inferred.window, inferred.frames, inferred.keys,
                                                    inferred.predictions, inferred.recon)
        clock = inferred.clock
        accumulate = settings.cloud_mode == "map"
        alignment = self.mapper.align(keys, recon, settings.conf_percentile, settings.conf_min)
        alignment, rescaled = self._metric(alignment, window, frames, predictions, recon, settings)
        update = self.mapper.place(keys, recon, alignment, accumulate=accumulate)
        self._anchors = window[len(window) - self._shared:]
        clock.lap("align")   # what follows belongs to the node's "publish" stage, as the messages it fills
        cameras = len(window[0].frames)
        last_stamp = self._path[-1].stamp_ns if self._path else -1
        for step, frameset in enumerate(window):
            if frameset.stamp_ns > last_stamp:
                self._path.append(PathPose(frameset.stamp_ns, frameset.frames[0].index,
                                           update.positions[step * cameras], update.quaternions[step * cameras]))
        newest = len(frames) - cameras
        depth = [self._depth_view(predictions, frames[i], i, inferred.intrinsics[i].numpy(), update.scale,
                                  settings.conf_min) for i in range(newest, len(frames))]
        cloud = self.mapper.map.arrays() if accumulate else (update.xyz, update.rgb, update.conf)
        return WindowResult(window=window, frames=frames, update=update, cloud=cloud, depth=depth,
                            map_points=len(self.mapper.map), path=self.path,
                            scale_status=self.scale.status(settings.scale_source), rescaled_map=rescaled, clock=clock)

    def _metric(self, alignment: Alignment, window: List[FrameSet], frames: List[Frame],
                predictions: Dict[str, torch.Tensor], recon, settings: StreamSettings) -> Tuple[Alignment, float]:
        """The window's placement at the metric scale, and the factor the existing map was rescaled by."""
        source = settings.scale_source
        if source == "none":
            return alignment, 1.0
        try:
            sample = self._scale_sample(window, frames, predictions, recon, settings)
        except NoScale as exc:
            sample = None
            self._warn(None, "scale-missing", f"no {source} scale for a window: {exc}")
        decision = self.scale.update(alignment.scale, sample)
        if decision.problem:
            self._warn(None, "scale-clipped" if decision.used else "scale-rejected", decision.problem)
        factor = decision.rescale_map
        if factor != 1.0:   # the map becomes metric: what is in it already follows, once
            self.mapper.rescale(factor)
            self._path = deque((pose._replace(position=factor * pose.position) for pose in self._path),
                               maxlen=self._path.maxlen)
            alignment = dataclasses.replace(alignment, scale=factor * alignment.scale,
                                            translation=factor * alignment.translation)
        return alignment.with_scale(decision.scale), factor

    def _scale_sample(self, window: List[FrameSet], frames: List[Frame], predictions: Dict[str, torch.Tensor],
                      recon, settings: StreamSettings) -> ScaleSample:
        """The window's metres per model unit from ``settings.scale_source``; raises ``NoScale``."""
        if settings.scale_source == "depth":
            return depth_scale([depth_pairs(_measured_depth(frame), _depth_of(predictions, index),
                                            settings.preprocess_mode, self.input_size,
                                            _pad_offset(frame, predictions["depth"].shape[2:4]))
                                for index, frame in enumerate(frames)
                                if frame.camera == settings.depth_camera and frame.metric_depth is not None])
        centres = camera_centres(recon.extrinsics.astype(np.float64)).reshape(len(window), len(window[0].frames), 3)
        if settings.scale_source == "stereo":
            return stereo_scale(centres, self._sensors.baseline_m())
        measured = self._sensors.positions_at([frameset.frames[0] for frameset in window])
        return travel_scale(centres[:, 0], measured, settings.scale_min_travel_m)

    @staticmethod
    def _depth_view(predictions: Dict[str, torch.Tensor], frame: Frame, index: int, intrinsics: np.ndarray,
                    scale: float, conf_min: float) -> DepthView:
        """Depth in map units (like the cloud), NaN where invalid or not confident."""
        depth = _depth_of(predictions, index)
        conf = predictions["depth_conf"][0, index].float().cpu().numpy()
        depth = np.where(np.isfinite(depth) & (depth > 0) & (conf > conf_min), depth * scale, np.nan)
        return DepthView(frame=frame, depth=depth, intrinsics=intrinsics)

    def _model_inputs(self, frames: List[Frame], settings: StreamSettings) -> torch.Tensor:
        """[S, 3, H, W] in [0, 1]; each frame is preprocessed once and reused by overlapping windows."""
        for frame in frames:
            if frame.model_input is None:
                self.lenses.rectify(frame, settings.rectify)
                frame.model_input = preprocess_image(frame.rgb, mode=settings.preprocess_mode,
                                                     target_size=self.input_size)
        sizes = sorted({(f.model_input.shape[-1], f.model_input.shape[-2]) for f in frames})
        if len(sizes) > 1:
            self._warn(None, "sizes", "images of different sizes in one window (model inputs "
                       + ", ".join(f"{w}x{h}" for w, h in sizes) + "): smaller ones are padded with white")
        return stack_padded([frame.model_input for frame in frames])

    def _calibrated_intrinsics(self, frames: List[Frame], images: torch.Tensor, settings: StreamSettings
                               ) -> Optional[torch.Tensor]:
        """CameraInfo intrinsics in model-input pixels when ``intrinsics_source`` asks for them, else None."""
        if settings.intrinsics_source != "camera_info":
            return None
        missing = sorted({f.camera for f in frames if f.intrinsics is None})
        if missing:
            self._warn(missing[0], "camera_info", "no usable CameraInfo yet: this window uses predicted intrinsics")
            return None
        out = []
        for frame in frames:
            k = preprocessed_intrinsics(frame.intrinsics, frame.rgb.shape[1], frame.rgb.shape[0],
                                        mode=settings.preprocess_mode, target_size=self.input_size)
            top, left = _pad_offset(frame, images.shape[-2:])
            k[0, 2] += left
            k[1, 2] += top
            out.append(k)
        return torch.tensor(np.stack(out), dtype=torch.float32)


def _measured_depth(frame: Frame) -> np.ndarray:
    """The depth image registered to the frame, undistorted with it (NaN spreads to a pixel's neighbours)."""
    return frame.metric_depth if frame.lens is None else frame.lens(frame.metric_depth)


def _depth_of(predictions: Dict[str, torch.Tensor], index: int) -> np.ndarray:
    """The model's depth [H, W] of image ``index`` (model units)."""
    return predictions["depth"][0, index, ..., 0].float().cpu().numpy()


def _pad_offset(frame: Frame, size: Tuple[int, int]) -> Tuple[int, int]:
    """(top, left) of the frame's model input in a batch of ``size`` (H, W): the white padding of smaller
    images (``stack_padded``)."""
    return (size[0] - frame.model_input.shape[-2]) // 2, (size[1] - frame.model_input.shape[-1]) // 2
