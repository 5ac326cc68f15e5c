"""From camera streams to windows of keyframes: stamp checks, approximate time sync, keyframe gating,
depth pairing and sliding windows.

Everything here is plain Python + numpy (no ROS, no torch) and works on nanosecond stamps. Nothing here is
thread-safe: one thread feeds it (the ROS node's input callback group).
"""

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Generic, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class Frame:
    """One camera image of a keyframe."""

    camera: int                               # index into the stream's cameras
    stamp_ns: int                             # capture time (header stamp); strictly increasing per camera
    rgb: np.ndarray                           # [H, W, 3] uint8
    frame_id: str = ""                        # optical frame of the camera
    index: int = 0                            # the source's own number for the image (file, video frame, ...)
    intrinsics: Optional[np.ndarray] = None   # [3, 3] from CameraInfo, pixels of ``rgb``
    distortion_model: str = ""                # CameraInfo's, with ``distortion`` (D); "" and (): a pinhole
    distortion: Tuple[float, ...] = ()
    lens: Any = None                          # the Undistorter applied to ``rgb`` (``lenses``), if any
    metric_depth: Optional[np.ndarray] = None  # [H, W] float32 metres from a registered depth camera (NaN: none)
    odometry: Optional[np.ndarray] = None     # [3] metres: the camera's position in a fixed frame (odometry)
    received: float = 0.0                     # time.monotonic() when the message arrived
    convert_seconds: float = 0.0              # time spent decoding the message
    model_input: Any = None                   # [3, h, w] tensor, filled once by the worker and reused


@dataclass
class FrameSet:
    """The images of all cameras at one time step (camera order), stamped by camera 0."""

    frames: Tuple[Frame, ...]

    @property
    def stamp_ns(self) -> int:
        return self.frames[0].stamp_ns


class StampOrder:
    """Per-camera check that header stamps strictly increase (a replayed or reordered stream breaks windows)."""

    def __init__(self, num_cameras: int):
        self._last: List[Optional[int]] = [None] * num_cameras

    def check(self, camera: int, stamp_ns: int) -> Optional[str]:
        """None if ``stamp_ns`` is newer than the camera's last accepted stamp, else the reason to drop it."""
        last = self._last[camera]
        if last is not None and stamp_ns <= last:
            return (f"stamp {stamp_ns / 1e9:.6f} s is not after the previous one ({last / 1e9:.6f} s); "
                    "non-monotonic stamps are dropped (bag replayed without --clock, or a clock jump?)")
        self._last[camera] = stamp_ns
        return None


class ApproximateSync(Generic[T]):
    """Groups one item per camera whose stamps lie within ``slop_ns`` of each other.

    Every new item is matched against the closest item of each other camera; a complete group is
    emitted at once, and items at or before the matched ones are discarded (streams are monotonic,
    so they can no longer match). Each camera keeps at most ``queue_size`` unmatched items. With
    one camera every item is its own group.
    """

    def __init__(self, num_cameras: int, slop_ns: int, queue_size: int = 10):
        self.slop_ns = slop_ns
        self._queues: List[Deque[Tuple[int, T]]] = [deque(maxlen=queue_size) for _ in range(num_cameras)]

    def add(self, camera: int, stamp_ns: int, item: T) -> Optional[List[T]]:
        if len(self._queues) == 1:
            return [item]
        self._queues[camera].append((stamp_ns, item))
        chosen: List[Tuple[int, T]] = []
        for index, queue in enumerate(self._queues):
            if index == camera:
                chosen.append((stamp_ns, item))
                continue
            if not queue:
                return None
            chosen.append(min(queue, key=lambda entry: abs(entry[0] - stamp_ns)))
        stamps = [stamp for stamp, _ in chosen]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        for queue, (stamp, _) in zip(self._queues, chosen):
            while queue and queue[0][0] <= stamp:
                queue.popleft()
        return [entry for _, entry in chosen]


def thumbnail(rgb: np.ndarray, width: int = 32, height: int = 24) -> np.ndarray:
    """[height, width] float32 grey levels (0-255), area averages over a centred crop of ``rgb`` [H, W, 3]."""
    rows, cols = rgb.shape[0] // height, rgb.shape[1] // width
    if rows == 0 or cols == 0:
        raise ValueError(f"image of {rgb.shape[1]}x{rgb.shape[0]} is smaller than a {width}x{height} thumbnail")
    top, left = (rgb.shape[0] - rows * height) // 2, (rgb.shape[1] - cols * width) // 2
    crop = rgb[top:top + rows * height, left:left + cols * width]
    grey = crop.reshape(height, rows, width, cols, 3).mean(axis=(1, 3), dtype=np.float32)
    return grey.mean(axis=-1)


class KeyframeGate:
    """Decides which synchronised time steps become keyframes.

    A time step is *due* when at least ``frame_stride`` steps arrived since the last keyframe
    (count stride) and at least ``min_interval_ns`` passed (time stride). A due step becomes a
    keyframe when its thumbnail differs from the last keyframe's by a mean absolute grey-level
    change of at least ``min_motion`` (cheap motion gate; 0 disables it). The first step is always
    a keyframe. The settings are plain attributes so a running node can change them.
    """

    def __init__(self, frame_stride: int = 1, min_interval_ns: int = 0, min_motion: float = 0.0):
        self.frame_stride, self.min_interval_ns, self.min_motion = frame_stride, min_interval_ns, min_motion
        self._since_last = 0
        self._last_stamp: Optional[int] = None
        self._last_thumb: Optional[np.ndarray] = None

    def due(self, stamp_ns: int) -> bool:
        """Count and time strides; call once per synchronised step, before decoding its images."""
        self._since_last += 1
        if self._last_stamp is None:
            return True
        return self._since_last >= self.frame_stride and stamp_ns - self._last_stamp >= self.min_interval_ns

    def moved(self, thumb: np.ndarray) -> bool:
        if self._last_thumb is None or self.min_motion <= 0 or thumb.shape != self._last_thumb.shape:
            return True
        return float(np.abs(thumb - self._last_thumb).mean()) >= self.min_motion

    def accept(self, stamp_ns: int, thumb: np.ndarray) -> None:
        self._since_last, self._last_stamp, self._last_thumb = 0, stamp_ns, thumb


class StampPairing(Generic[T]):
    """Pairs keyframe frames with the item of another stream (e.g. a registered depth image) whose stamp is
    nearest and within ``slop_ns``; whichever of the two arrives second completes the pair, and ``attach``
    (frame, item) is called once per frame. Both sides keep only their ``keep`` most recent unpaired entries."""

    def __init__(self, slop_ns: int, attach: Callable[[Frame, T], None], keep: int = 8):
        self.slop_ns, self._attach = slop_ns, attach
        self._items: Deque[Tuple[int, T]] = deque(maxlen=keep)
        self._frames: Deque[Frame] = deque(maxlen=keep)

    def add_item(self, stamp_ns: int, item: T) -> None:
        frame = self._take_nearest(self._frames, stamp_ns, lambda f: f.stamp_ns)
        if frame is None:
            self._items.append((stamp_ns, item))
        else:
            self._attach(frame, item)

    def add_frame(self, frame: Frame) -> None:
        entry = self._take_nearest(self._items, frame.stamp_ns, lambda e: e[0])
        if entry is None:
            self._frames.append(frame)
        else:
            self._attach(frame, entry[1])

    def _take_nearest(self, waiting: Deque, stamp_ns: int, stamp_of: Callable[[Any], int]) -> Any:
        """Remove and return the entry of ``waiting`` nearest to ``stamp_ns`` within the slop (None if none)."""
        near = [entry for entry in waiting if abs(stamp_of(entry) - stamp_ns) <= self.slop_ns]
        if not near:
            return None
        entry = min(near, key=lambda e: abs(stamp_of(e) - stamp_ns))
        waiting.remove(entry)
        return entry


class SlidingWindow(Generic[T]):
    """Keyframes -> windows of the newest ``size`` keyframes, one every ``stride`` keyframes once full.

    Consecutive windows share ``size - stride`` keyframes, which is what chains them into one map.
    """

    def __init__(self, size: int, stride: int):
        if not 1 <= stride < size:
            raise ValueError(f"window_stride must be in [1, window_size - 1] so that windows overlap, got "
                             f"stride {stride} for size {size}")
        self.size, self.stride = size, stride
        self._items: Deque[T] = deque(maxlen=size)
        self._new = 0

    def add(self, item: T) -> Optional[List[T]]:
        self._items.append(item)
        self._new += 1
        if len(self._items) == self.size and self._new >= self.stride:
            self._new = 0
            return list(self._items)
        return None

    def flush(self) -> Optional[List[T]]:
        """At the end of a stream: the newest keyframes (up to ``size``, at least 2) if any came after the last
        window, so that the tail of a stream (or a stream shorter than a window) is reconstructed too."""
        if self._new == 0 or len(self._items) < 2:
            return None
        self._new = 0
        return list(self._items)


def compose_window(latest: Sequence[FrameSet], anchors: Sequence[FrameSet], size: int) -> List[FrameSet]:
    """The frame sets to reconstruct: ``anchors`` (already in the map) + the newest later sets, ``size`` in all.

    Without dropped windows ``latest`` starts with the anchors and is returned unchanged. After drops
    ``latest`` no longer contains them; prepending them keeps the new window chained to the map.
    """
    if not anchors:
        return list(latest)
    newer = [fs for fs in latest if fs.stamp_ns > anchors[-1].stamp_ns]
    return list(anchors) + newer[max(0, len(newer) - (size - len(anchors))):]
