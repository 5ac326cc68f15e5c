"""rosbag2 recordings of scene sequences: written and read with ``rosbags`` (file format only, no ROS).

Layout of a written bag (ROS 2 conventions, REP 103/105 optical frames):

* ``/<cam>/image_raw``: ``sensor_msgs/msg/Image``, ``rgb8``, header ``frame_id`` ``<cam>_optical_frame``;
* ``/<cam>/camera_info`` (optional): ``sensor_msgs/msg/CameraInfo`` with the same header, ``plumb_bob``
  with zero distortion, ``K`` the intrinsics and ``P = [K | -fx * baseline, 0, 0]`` (ROS' stereo
  convention: the right camera's Tx carries the baseline);

with ``<cam>`` = ``cam0`` (and ``cam1``, the right camera of a stereo rig). Message time = header stamp.
Storage is ``mcap`` (default) or ``sqlite3`` (``.db3``), bag format version 9, types of ROS 2 Kilted.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .image_messages import IMAGE_TYPE, image_to_rgb
from .scenes import SceneSequence
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# Channel order of the encodings we read, as indices into RGB(A).


def image_topic(camera: str) -> str:
    return f"/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


def _typestore():
    return get_typestore(Stores.ROS2_KILTED)


def _replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` onto ``target``; an old ``target`` is removed only after."""
    old = None
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{target} exists and is not a directory (a bag is a directory)")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / "bag")
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old)


def write_bag(path: os.PathLike, sequence: SceneSequence, storage: str = "mcap", camera_info: bool = True) -> Path:
    """Write every camera of ``sequence`` to the rosbag2 directory ``path`` (replaced atomically if it
    exists: the new bag is complete before the old one goes). Returns ``path``."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = _typestore()
    types = store.types
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = scratch / path.name  # rosbags names the storage file after the directory
        with Writer(staged, version=9, storage_plugin=STORAGES[storage]) as writer:
            connections = {}
            for camera in sequence.cameras:
                connections[camera.name] = (
                    writer.add_connection(image_topic(camera.name), IMAGE_TYPE, typestore=store),
                    writer.add_connection(camera_info_topic(camera.name), CAMERA_INFO_TYPE, typestore=store)
                    if camera_info else None)
            for frame, stamp in enumerate(sequence.timestamps_ns.tolist()):
                for index, camera in enumerate(sequence.cameras):
                    header = types["std_msgs/msg/Header"](
                        stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                        frame_id=optical_frame(camera.name))
                    height, width = camera.images.shape[1:3]
                    image = types[IMAGE_TYPE](header=header, height=height, width=width, encoding="rgb8",
                                              is_bigendian=0, step=width * 3,
                                              data=np.ascontiguousarray(camera.images[frame]).reshape(-1))
                    image_connection, info_connection = connections[camera.name]
                    writer.write(image_connection, stamp, store.serialize_cdr(image, IMAGE_TYPE))
                    if info_connection is not None:
                        info = _camera_info(types, header, camera.intrinsics[frame].astype(np.float64),
                                            width, height, sequence.baseline * index)
                        writer.write(info_connection, stamp, store.serialize_cdr(info, CAMERA_INFO_TYPE))
        _replace_directory(staged, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def _camera_info(types, header, intrinsic: np.ndarray, width: int, height: int, baseline: float):
    projection = np.zeros((3, 4))
    projection[:, :3] = intrinsic
    projection[0, 3] = -intrinsic[0, 0] * baseline
    return types[CAMERA_INFO_TYPE](
        header=header, height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
        k=intrinsic.reshape(-1), r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


@dataclass
class BagCamera:
    """Frames of one image topic, in header-stamp order."""

    topic: str
    frame_id: str
    images: np.ndarray                  # [N, H, W, 3] uint8 RGB
    stamps_ns: np.ndarray               # [N] int64 header stamps
    intrinsics: Optional[np.ndarray]    # [N, 3, 3] float64 from CameraInfo ``K`` at the same stamps, or None


def read_bag(path: os.PathLike) -> Dict[str, BagCamera]:
    """Every ``sensor_msgs/msg/Image`` topic of a rosbag2 (directory or ``.mcap``/``.db3`` file), keyed
    by topic, with CameraInfo intrinsics from the sibling ``camera_info`` topic when it has one message
    per image stamp."""
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


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
