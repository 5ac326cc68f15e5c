"""rosbag2 recordings of scene sequences: written and read with ``rosbags`` (file format only, no ROS).

Layout of a written bag (ROS 2 conventions, REP 103/105 optical frames):

* ``/<cam>/image_raw``: ``sensor_msgs/msg/Image``, ``rgb8``, header ``frame_id`` ``<cam>_optical_frame``;
* ``/<cam>/camera_info`` (optional): ``sensor_msgs/msg/CameraInfo`` with the same header, ``plumb_bob``
  with zero distortion (or the lens ``write_bag`` is given), ``K`` the intrinsics and
  ``P = [K | -fx * baseline, 0, 0]`` (ROS' stereo convention: the right camera's Tx carries the baseline);
* ``/odom`` (optional): ``nav_msgs/msg/Odometry`` in frame ``odom`` (the scene's world: z up, metres) with
  child frame ``cam0_optical_frame``, the true pose of ``cam0`` at each frame stamp (zero twist);
* ``/cam0/depth/image_raw`` (optional): ``sensor_msgs/msg/Image`` ``16UC1``, the true depth of ``cam0`` in
  millimetres (registered to it: same pixels, frame id and stamps), 0 where there is no surface or the depth
  does not fit 16 bits (REP 118);

with ``<cam>`` = ``cam0`` (and ``cam1``, the right camera of a stereo rig). Message time = header stamp.
Storage is ``mcap`` (default) or ``sqlite3`` (``.db3``), bag format version 9, types of ROS 2 Kilted.
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image as PILImage
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..fileio import atomic_directory
from ..geometry import mat_to_quat
from .image_messages import (COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, ImageError, compressed_to_rgb, depth_metres,
                             image_to_rgb)
from .scenes import RenderedSequence, SceneSequence
from .trajectories import camera_centres

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
ODOMETRY_TOPIC = "/odom"
ODOMETRY_FRAME = "odom"
DEPTH_ENCODING = "16UC1"       # millimetres, 0 = no measurement (REP 118)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
COMPRESSIONS = ("jpeg", "png")


def image_topic(camera: str) -> str:
    return f"/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


def depth_topic(camera: str) -> str:
    """The depth image registered to ``camera`` (the naming of depth_image_proc's ``depth_registered``)."""
    return f"/{camera}/depth/image_raw"


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


def _typestore():
    return get_typestore(Stores.ROS2_KILTED)


def write_bag(path: os.PathLike, sequence: SceneSequence, storage: str = "mcap", camera_info: bool = True,
              compression: Optional[str] = None, odometry: bool = False, depth: bool = False,
              lens: Tuple[str, Sequence[float]] = ("plumb_bob", (0.0,) * 5)) -> Path:
    """Write every camera of ``sequence`` to the rosbag2 directory ``path`` (replaced atomically if it
    exists: the new bag is complete before the old one goes). Returns ``path``.

    ``compression`` (``jpeg`` or ``png``) writes ``sensor_msgs/msg/CompressedImage`` on
    ``/<cam>/image_raw/compressed`` (image_transport's naming) instead of raw images. ``odometry`` adds
    ``/odom``, ``depth`` adds ``/cam0/depth/image_raw`` (the module docstring says what they hold). ``lens``:
    the CameraInfo's distortion model and D, for images that were taken through that lens.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if compression is not None and compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    image_type = IMAGE_TYPE if compression is None else COMPRESSED_IMAGE_TYPE
    path = Path(path)
    store = _typestore()
    types = store.types
    with atomic_directory(path) as staged:   # rosbags names the storage file after the directory
        with Writer(staged, version=9, storage_plugin=STORAGES[storage]) as writer:
            connections = {}
            for camera in sequence.cameras:
                connections[camera.name] = (
                    writer.add_connection(image_topic(camera.name) + ("/compressed" if compression else ""),
                                          image_type, typestore=store),
                    writer.add_connection(camera_info_topic(camera.name), CAMERA_INFO_TYPE, typestore=store)
                    if camera_info else None)
            first = sequence.cameras[0]
            odometry_connection = (writer.add_connection(ODOMETRY_TOPIC, ODOMETRY_TYPE, typestore=store)
                                   if odometry else None)
            depth_connection = (writer.add_connection(depth_topic(first.name), IMAGE_TYPE, typestore=store)
                                if depth else None)
            for frame, stamp in enumerate(sequence.timestamps_ns.tolist()):
                time = types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
                if odometry_connection is not None:
                    writer.write(odometry_connection, stamp,
                                 store.serialize_cdr(_odometry(types, time, first, frame), ODOMETRY_TYPE))
                if depth_connection is not None:
                    header = types["std_msgs/msg/Header"](stamp=time, frame_id=optical_frame(first.name))
                    writer.write(depth_connection, stamp,
                                 store.serialize_cdr(_depth_image(types, header, first.depth[frame]), IMAGE_TYPE))
                for index, camera in enumerate(sequence.cameras):
                    header = types["std_msgs/msg/Header"](stamp=time, frame_id=optical_frame(camera.name))
                    height, width = camera.images.shape[1:3]
                    if compression is None:
                        image = types[IMAGE_TYPE](header=header, height=height, width=width, encoding="rgb8",
                                                  is_bigendian=0, step=width * 3,
                                                  data=np.ascontiguousarray(camera.images[frame]).reshape(-1))
                    else:
                        image = types[COMPRESSED_IMAGE_TYPE](header=header, format=f"rgb8; {compression} compressed "
                                                             "rgb8", data=_encode(camera.images[frame], compression))
                    image_connection, info_connection = connections[camera.name]
                    writer.write(image_connection, stamp, store.serialize_cdr(image, image_type))
                    if info_connection is not None:
                        info = _camera_info(types, header, camera.intrinsics[frame].astype(np.float64),
                                            width, height, sequence.baseline * index, lens)
                        writer.write(info_connection, stamp, store.serialize_cdr(info, CAMERA_INFO_TYPE))
    return path


def _encode(rgb: np.ndarray, compression: str) -> np.ndarray:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG" if compression == "jpeg" else "PNG", quality=95)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _camera_info(types, header, intrinsic: np.ndarray, width: int, height: int, baseline: float,
                 lens: Tuple[str, Sequence[float]]):
    projection = np.zeros((3, 4))
    projection[:, :3] = intrinsic
    projection[0, 3] = -intrinsic[0, 0] * baseline
    return types[CAMERA_INFO_TYPE](
        header=header, height=height, width=width, distortion_model=lens[0], d=np.asarray(lens[1], np.float64),
        k=intrinsic.reshape(-1), r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _odometry(types, time, camera: RenderedSequence, frame: int):
    """The true pose of ``camera`` at ``frame`` in the world (``odom``): map-from-camera [R^T | centre]."""
    extrinsic = camera.extrinsics[frame].astype(np.float64)
    x, y, z = camera_centres(extrinsic[None])[0].tolist()
    qx, qy, qz, qw = mat_to_quat(torch.from_numpy(extrinsic[:, :3].T)).tolist()
    point, quaternion = types["geometry_msgs/msg/Point"], types["geometry_msgs/msg/Quaternion"]
    vector = types["geometry_msgs/msg/Vector3"]
    pose = types["geometry_msgs/msg/Pose"](position=point(x=x, y=y, z=z),
                                           orientation=quaternion(x=qx, y=qy, z=qz, w=qw))
    twist = types["geometry_msgs/msg/Twist"](linear=vector(x=0.0, y=0.0, z=0.0), angular=vector(x=0.0, y=0.0, z=0.0))
    return types[ODOMETRY_TYPE](
        header=types["std_msgs/msg/Header"](stamp=time, frame_id=ODOMETRY_FRAME),
        child_frame_id=optical_frame(camera.name),
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))


def _depth_image(types, header, depth_m: np.ndarray):
    """``16UC1`` millimetres of a depth map in metres; 0 where there is no surface or it is beyond 65.535 m."""
    millimetres = np.rint(np.asarray(depth_m, np.float64) * 1000)
    valid = np.isfinite(millimetres) & (millimetres > 0) & (millimetres <= np.iinfo(np.uint16).max)
    values = np.where(valid, millimetres, 0).astype("<u2")
    height, width = values.shape
    return types[IMAGE_TYPE](header=header, height=height, width=width, encoding=DEPTH_ENCODING, is_bigendian=0,
                             step=width * 2, data=values.reshape(-1).view(np.uint8))


@dataclass
class BagCamera:
    """Frames of one image topic, in header-stamp order."""

    topic: str
    frame_id: str
    images: np.ndarray                  # [N, H, W, 3] uint8 RGB
    stamps_ns: np.ndarray               # [N] int64 header stamps
    intrinsics: Optional[np.ndarray]    # [N, 3, 3] float64 from CameraInfo ``K`` at the same stamps, or None


def read_bag(path: os.PathLike) -> Dict[str, BagCamera]:
    """Every ``sensor_msgs/msg/Image`` topic but depth images (``is_depth_image``) of a rosbag2 (directory or
    ``.mcap``/``.db3`` file), keyed by topic, with CameraInfo intrinsics from the sibling ``camera_info``
    topic when it has one message per image stamp."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such bag")
    try:
        with AnyReader([path], default_typestore=_typestore()) as reader:
            images: Dict[str, list] = {}
            infos: Dict[str, dict] = {}
            for connection, _, raw in reader.messages():
                if connection.msgtype == IMAGE_TYPE:
                    msg = reader.deserialize(raw, connection.msgtype)
                    if is_depth_image(connection.topic, msg):
                        continue
                    images.setdefault(connection.topic, []).append((_stamp(msg), msg.header.frame_id,
                                                                    image_to_rgb(msg)))
                elif connection.msgtype == CAMERA_INFO_TYPE:
                    msg = reader.deserialize(raw, connection.msgtype)
                    infos.setdefault(connection.topic, {})[_stamp(msg)] = np.array(msg.k, dtype=np.float64)
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error classes for unreadable or foreign files
        raise ValueError(f"{path}: cannot read as rosbag2 ({type(exc).__name__}: {exc})") from exc
    cameras = {}
    for topic, frames in images.items():
        frames.sort(key=lambda frame: frame[0])
        stamps = np.array([frame[0] for frame in frames], dtype=np.int64)
        info = infos.get(topic.rsplit("/", 1)[0] + "/camera_info", {})
        intrinsics = (np.stack([info[s].reshape(3, 3) for s in stamps.tolist()])
                      if all(s in info for s in stamps.tolist()) else None)
        cameras[topic] = BagCamera(topic=topic, frame_id=frames[0][1], images=np.stack([f[2] for f in frames]),
                                   stamps_ns=stamps, intrinsics=intrinsics)
    return cameras


def serialized_messages(path: os.PathLike, topics: Sequence[str]) -> List[Tuple[int, str, bytes]]:
    """The messages of ``topics`` as recorded: (log time ns, topic, CDR bytes) in log-time order, for playing
    a bag into a ROS graph unchanged (rclpy publishers accept serialized messages); every topic must be in
    the bag."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such bag")
    try:
        with AnyReader([path], default_typestore=_typestore()) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            missing = sorted(set(topics) - {c.topic for c in connections})
            if missing or not connections:
                found = ", ".join(sorted({c.topic for c in reader.connections})) or "no topics"
                raise ValueError(f"{path}: no {', '.join(missing or topics)} topic (found {found})")
            return [(stamp, c.topic, bytes(raw)) for c, stamp, raw in reader.messages(connections=connections)]
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error classes for unreadable or foreign files
        raise ValueError(f"{path}: cannot read as rosbag2 ({type(exc).__name__}: {exc})") from exc


@dataclass
class BagMessage:
    """One decoded message of ``bag_messages``."""

    topic: str
    kind: str            # "image", "depth", "camera_info" or "odometry"
    stamp_ns: int        # header stamp
    frame_id: str
    data: Any            # image [H, W, 3] uint8 RGB; depth [H, W] float32 metres (NaN: none); odometry position [3];
    #                      camera_info {"k": [3, 3], "size": (width, height), "baseline": metres from P's Tx,
    #                      "distortion_model": str, "d": tuple of D}


def bag_topics(path: os.PathLike) -> Dict[str, str]:
    """Topic -> message type of every connection of a bag."""
    try:
        with AnyReader([Path(path)], default_typestore=_typestore()) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception as exc:  # rosbags raises its own error classes for unreadable or foreign files
        raise _open_error(Path(path), exc) from exc


def bag_messages(path: os.PathLike, topics: Sequence[str]) -> Iterator[BagMessage]:
    """The messages of those ``topics`` that the bag has, decoded one at a time in log-time order (memory does not
    grow with the bag): images (``Image``/``CompressedImage``; depth images as metres), ``CameraInfo`` and
    ``Odometry``. Raises ``ValueError`` for an unreadable bag or message."""
    path = Path(path)
    try:
        with AnyReader([path], default_typestore=_typestore()) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            for connection, _, raw in reader.messages(connections=connections) if connections else ():
                msg = reader.deserialize(raw, connection.msgtype)
                yield _bag_message(connection.topic, connection.msgtype, msg)
    except ImageError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error classes for unreadable, truncated or foreign files
        raise _open_error(path, exc) from exc


def baseline_from_projection(projection: Sequence[float]) -> float:
    """Stereo baseline (metres) from the second camera's CameraInfo projection P [3x4]: Tx = P[0, 3] = -fx * B."""
    fx, tx = float(projection[0]), float(projection[3])
    return abs(tx / fx) if fx else 0.0


def _bag_message(topic: str, msgtype: str, msg) -> BagMessage:
    head = (topic, _stamp(msg), msg.header.frame_id)
    if msgtype == CAMERA_INFO_TYPE:
        k = np.array(msg.k, dtype=np.float64).reshape(3, 3)
        info = {"k": k, "size": (int(msg.width), int(msg.height)), "baseline": baseline_from_projection(msg.p),
                "distortion_model": msg.distortion_model, "d": tuple(float(v) for v in msg.d)}
        return BagMessage(head[0], "camera_info", *head[1:], info)
    if msgtype == ODOMETRY_TYPE:
        p = msg.pose.pose.position
        return BagMessage(head[0], "odometry", *head[1:], np.array([p.x, p.y, p.z]))
    if msgtype == IMAGE_TYPE and is_depth_image(topic, msg):
        return BagMessage(head[0], "depth", *head[1:], depth_metres(msg))
    return BagMessage(head[0], "image", *head[1:], _decode(msgtype, msg))


def is_depth_image(topic: str, msg) -> bool:
    """A depth image rather than a camera to reconstruct: float depth (``32FC1``/``64FC1``), or 16-bit on a
    topic named like one (``/camera/depth/image_raw``, ``/camera/aligned_depth_to_color/image_raw``)."""
    encoding = getattr(msg, "encoding", "")
    return encoding in ("32FC1", "64FC1") or (encoding in ("16UC1", "mono16") and "depth" in topic)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


# ---- lazy access for calibration pools ------------------------------------------------------------------

def _open_error(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{path}: cannot read as a bag ({type(exc).__name__}: {exc})")


def _decode(msgtype: str, msg) -> np.ndarray:
    return image_to_rgb(msg) if msgtype == IMAGE_TYPE else compressed_to_rgb(msg)


@dataclass
class ImageStream:
    """One image topic of one bag: message (log) times in order, nothing decoded."""

    bag: Path
    topic: str
    msgtype: str
    times_ns: np.ndarray  # [N] int64, sorted


def image_streams(path: os.PathLike) -> Dict[str, ImageStream]:
    """Every ``Image``/``CompressedImage`` topic but depth images (``is_depth_image``) of a bag (rosbag2
    directory, ``.mcap``/``.db3`` file or ROS 1 ``.bag``), keyed by topic. Reads message times only; the first
    message of each topic is decoded so that an unsupported encoding is reported now, not in the middle of a
    calibration."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such bag")
    try:
        with AnyReader([path], default_typestore=_typestore()) as reader:
            connections = [c for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)]
            times: Dict[str, List[int]] = {c.topic: [] for c in connections}
            checked, depth = set(), set()
            # (an empty connection list would mean "all topics" to rosbags)
            for connection, stamp, raw in reader.messages(connections=connections) if connections else ():
                times[connection.topic].append(stamp)
                if connection.topic not in checked:
                    checked.add(connection.topic)
                    msg = reader.deserialize(raw, connection.msgtype)
                    if is_depth_image(connection.topic, msg):
                        depth.add(connection.topic)
                        continue
                    try:
                        _decode(connection.msgtype, msg)
                    except ImageError as exc:
                        raise ValueError(f"{path}: topic {connection.topic}: {exc}") from exc
            kinds = {c.topic: c.msgtype for c in connections}
            message_count = reader.message_count
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error classes for unreadable, truncated or foreign files
        raise _open_error(path, exc) from exc
    if message_count == 0:
        raise ValueError(f"{path}: the bag is empty")
    return {topic: ImageStream(path, topic, kinds[topic], np.sort(np.asarray(stamps, dtype=np.int64)))
            for topic, stamps in times.items() if stamps and topic not in depth}


class BagFrames:
    """A calibration source: consecutive frames of one image topic of one bag, decoded on demand.

    Implements the ``calib.pool.SequenceSource`` protocol (name, len, frames)."""

    def __init__(self, stream: ImageStream, first: int, last: int, name: str) -> None:
        self.stream, self.name = stream, name
        self.times_ns = stream.times_ns[first:last + 1]

    def __len__(self) -> int:
        return len(self.times_ns)

    def frames(self, start: int, stop: int) -> List[np.ndarray]:
        """Frames ``start``..``stop - 1`` as H x W x 3 uint8 RGB (one seek into the bag)."""
        stream = self.stream
        try:
            with AnyReader([stream.bag], default_typestore=_typestore()) as reader:
                connections = [c for c in reader.connections if c.topic == stream.topic]
                wanted = set(self.times_ns[start:stop].tolist())
                images = [(stamp, _decode(c.msgtype, reader.deserialize(raw, c.msgtype)))
                          for c, stamp, raw in reader.messages(connections=connections,
                                                               start=int(self.times_ns[start]),
                                                               stop=int(self.times_ns[stop - 1]) + 1)
                          if stamp in wanted]
        except ImageError as exc:
            raise ValueError(f"{stream.bag}: topic {stream.topic}: {exc}") from exc
        except Exception as exc:
            raise _open_error(stream.bag, exc) from exc
        images.sort(key=lambda item: item[0])
        return [image for _, image in images[:stop - start]]


def split_at_gaps(times_ns: np.ndarray, max_gap_ns: int) -> List[Tuple[int, int]]:
    """(first, last) index ranges of ``times_ns`` with no step above ``max_gap_ns``."""
    breaks = np.flatnonzero(np.diff(times_ns) > max_gap_ns)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(times_ns) - 1]])
    return list(zip(starts.tolist(), ends.tolist()))


def bag_sources(paths: Sequence[os.PathLike], topics: Optional[Sequence[str]] = None, max_gap_s: float = 1.0
                ) -> Tuple[List[BagFrames], Dict[str, Dict[str, int]]]:
    """Calibration sources from bags: one per (bag, image topic, stretch without a gap above ``max_gap_s``),
    so windows never cross a gap or a bag boundary. ``topics`` default to every image topic.

    Returns the sources and, per bag, the frame count of every image topic found (for the log)."""
    if not paths:
        raise ValueError("no bag given")
    streams = {Path(path): image_streams(path) for path in paths}
    found = {str(path): {topic: len(s.times_ns) for topic, s in by_topic.items()} for path, by_topic in streams.items()}
    for path, by_topic in streams.items():
        if not by_topic:
            raise ValueError(f"{path}: no sensor_msgs/Image or CompressedImage topics")
    available = sorted({topic for by_topic in streams.values() for topic in by_topic})
    missing = [t for t in (topics or []) if t not in available]
    if missing:
        raise ValueError(f"no topic {', '.join(missing)} in the bags; image topics found: {', '.join(available)}")
    sources = []
    for path, by_topic in streams.items():
        for topic in (t for t in (topics or by_topic) if t in by_topic):
            for part, (first, last) in enumerate(split_at_gaps(by_topic[topic].times_ns, int(max_gap_s * 1e9))):
                sources.append(BagFrames(by_topic[topic], first, last, f"{path.name}{topic}#{part}"))
    return sources, found
