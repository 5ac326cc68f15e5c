"""Where a stream's frames come from without ROS: image files, a video, a rosbag2 recording. Each source reads
one frame at a time (memory does not grow with the sequence) and yields ``Frame``s, plus, from a bag, what a
scale source needs (``DepthSample``, ``OdometrySample``, the stereo baseline of camera 1's CameraInfo).
Unreadable input raises ``ValueError`` with a one-line reason, also in the middle of a sequence.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np

from ..data.bags import bag_messages, bag_topics, image_streams
from ..data.files import find_images
from ..data.preprocess import load_rgb
from .windowing import Frame

VIDEO_EXTRA = "pip install av   (or the package's [video] extra)"


@dataclass(frozen=True)
class DepthSample:
    """A depth image [H, W] in metres (NaN: none) registered to the depth camera."""

    stamp_ns: int
    depth: np.ndarray


@dataclass(frozen=True)
class OdometrySample:
    """Camera 0's body position (metres) in a fixed frame."""

    stamp_ns: int
    position: np.ndarray


@dataclass(frozen=True)
class StereoBaseline:
    """Metres between cameras 0 and 1, from camera 1's CameraInfo projection."""

    metres: float


Item = Union[Frame, DepthSample, OdometrySample, StereoBaseline]


@dataclass
class FrameSource:
    """A sequence to reconstruct: ``items()`` in stamp order, ``frames`` images in all (None: not known ahead),
    ``cameras`` images per time step, and a one-line ``description``."""

    description: str
    frames: Optional[int]
    cameras: int
    reader: object

    def items(self) -> Iterator[Item]:
        return iter(self.reader())


def image_files(specs: Sequence[str], fps: float) -> FrameSource:
    """Image files (directories, globs or files, naturally sorted), ``fps`` apart."""
    if fps <= 0:
        raise ValueError(f"--fps must be positive, got {fps}")
    paths = find_images(specs)

    def read() -> Iterator[Frame]:
        for index, path in enumerate(paths):
            yield Frame(camera=0, stamp_ns=round(index * 1e9 / fps), rgb=np.asarray(load_rgb(path)), index=index,
                        frame_id=str(path))

    return FrameSource(f"{len(paths)} images ({paths[0].parent})", len(paths), 1, read)


def video_file(path: Path) -> FrameSource:
    """The frames of a video's first video stream (any format FFmpeg reads, through PyAV), stamped by their
    presentation time."""
    try:
        import av
    except ImportError as exc:
        raise ValueError(f"reading video needs PyAV, which is not installed: {VIDEO_EXTRA}") from exc
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream (streams: "
                                 f"{', '.join(s.type for s in container.streams) or 'none'})")
            frames = container.streams.video[0].frames or None
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot read as video ({exc})") from exc

    def read() -> Iterator[Frame]:
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                rate = float(stream.average_rate or 30)
                for index, frame in enumerate(container.decode(stream)):
                    seconds = frame.time if frame.time is not None else index / rate
                    yield Frame(camera=0, stamp_ns=round(seconds * 1e9), rgb=frame.to_ndarray(format="rgb24"),
                                index=index)
        except av.error.FFmpegError as exc:
            raise ValueError(f"{path}: video decoding failed ({exc})") from exc

    return FrameSource(f"video {path}", frames, 1, read)


def bag_recording(path: Path, topics: Sequence[str] = (), settings_topics: Sequence[str] = (),
                  odometry_topic: str = "", depth_topic: str = "") -> FrameSource:
    """Image topics of a rosbag2 (``topics``; default: the parameter file's ``settings_topics`` when the bag has
    them all, else its only image topic), one camera per topic, with CameraInfo intrinsics and distortion
    (sibling ``camera_info`` topic), the stereo baseline of camera 1, and odometry and depth when their topics are
    given."""
    streams = image_streams(path)
    if not streams:
        raise ValueError(f"{path}: no sensor_msgs/Image or CompressedImage topics")
    found = ", ".join(sorted(streams))
    chosen: List[str] = list(topics)
    if not chosen:
        if settings_topics and all(topic in streams for topic in settings_topics):
            chosen = list(settings_topics)
        elif len(streams) == 1:
            chosen = list(streams)
        else:
            raise ValueError(f"{path} has several image topics ({found}): choose with --topic")
    missing = [topic for topic in chosen if topic not in streams]
    if missing:
        raise ValueError(f"{path}: no image topic {', '.join(missing)} (image topics: {found})")
    infos = {_camera_info_topic(topic): camera for camera, topic in enumerate(chosen)}
    scale_topics = [name for name in (_absolute(odometry_topic), _absolute(depth_topic)) if name]
    absent = [topic for topic in scale_topics if topic not in bag_topics(path)]
    if absent:
        raise ValueError(f"{path}: no {', '.join(absent)} topic for the scale source (topics: "
                         f"{', '.join(sorted(bag_topics(path)))})")

    def read() -> Iterator[Item]:
        intrinsics: List[Optional[np.ndarray]] = [None] * len(chosen)
        counters = [0] * len(chosen)
        for message in bag_messages(path, [*chosen, *infos, *scale_topics]):
            if message.topic in infos:
                camera = infos[message.topic]
                intrinsics[camera] = message.data
                if camera == 1 and message.data["baseline"] > 0:
                    yield StereoBaseline(message.data["baseline"])
            elif message.kind == "odometry":
                yield OdometrySample(message.stamp_ns, message.data)
            elif message.kind == "depth":
                yield DepthSample(message.stamp_ns, message.data)
            else:
                camera = chosen.index(message.topic)
                rgb, info = message.data, intrinsics[camera]
                lens = {}
                if info is not None and info["size"] == (rgb.shape[1], rgb.shape[0]):
                    lens = dict(intrinsics=info["k"], distortion_model=info["distortion_model"],
                                distortion=info["d"])
                yield Frame(camera=camera, stamp_ns=message.stamp_ns, rgb=rgb, frame_id=message.frame_id,
                            index=counters[camera], **lens)
                counters[camera] += 1

    return FrameSource(f"{', '.join(chosen)} of {path}", len(streams[chosen[0]].times_ns) * len(chosen),
                       len(chosen), read)


def _camera_info_topic(image_topic: str) -> str:
    return image_topic.removesuffix("/compressed").rsplit("/", 1)[0] + "/camera_info"


def _absolute(topic: str) -> str:
    return topic if not topic or topic.startswith("/") else "/" + topic


__all__ = ["DepthSample", "FrameSource", "Item", "OdometrySample", "StereoBaseline",
           "bag_recording", "image_files", "video_file"]
