"""ROS messages <-> numpy, without cv_bridge or sensor_msgs_py (neither has a pip wheel; cv_bridge, when
installed, converts the encodings the table below does not know).

Images in: ``image_to_rgb`` (``sensor_msgs/Image``) and ``compressed_to_rgb``
(``sensor_msgs/CompressedImage``) return H x W x 3 uint8 RGB and raise ``ImageError`` with a
one-line reason for anything they cannot convert; ``depth_metres`` reads depth images (metres).
Messages out: ``point_cloud``, ``depth_image``, ``camera_info``, ``pose_array``, ``path_message``,
``odometry``, ``transform`` build messages from arrays. Poses are (position [3], quaternion x, y, z, w [4])
pairs. No torch here.
"""

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseArray, PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from vggt_quant_core.data.image_messages import (SUPPORTED_ENCODINGS, ImageError, UnsupportedEncoding,  # noqa: F401
                                                 compressed_to_rgb, depth_metres)
from vggt_quant_core.data.image_messages import image_to_rgb as decode_image

try:  # a full ROS install has it: it then converts encodings the table below does not know (bayer, 16UC3, ...)
    from cv_bridge import CvBridge
except ImportError:  # the pip-wheel environment
    CvBridge = None


Pose7 = Tuple[np.ndarray, np.ndarray]  # position [3], quaternion (x, y, z, w) [4]


def stamp_to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_to_rgb(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> [H, W, 3] uint8 RGB (see ``vggt_quant_core.data.image_messages``); encodings
    the numpy decoder does not know go through cv_bridge when it is installed."""
    try:
        return decode_image(msg)
    except UnsupportedEncoding as unsupported:
        if CvBridge is None:
            raise ImageError(f"{unsupported} (install cv_bridge for more)") from unsupported
        try:
            return np.asarray(CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as exc:  # cv_bridge raises its own CvBridgeError and cv2.error
            raise ImageError(f"unsupported encoding {msg.encoding!r} (cv_bridge: {exc})") from exc


def header(frame_id: str, stamp_ns: int) -> Header:
    return Header(frame_id=frame_id, stamp=ns_to_stamp(stamp_ns))


def _fields(names: Sequence[str]):
    return [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate(names)]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 -> [N] float32 whose bits are 0x00RRGGBB (PCL's and RViz's ``rgb`` field)."""
    c = rgb.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def point_cloud(head: Header, xyz: np.ndarray, rgb: np.ndarray, confidence: Optional[np.ndarray] = None
                ) -> PointCloud2:
    """Unorganised, dense cloud: fields x, y, z, rgb (+ confidence), all FLOAT32, little-endian.

    xyz [N, 3] float, rgb [N, 3] uint8, confidence [N]; points must be finite.
    """
    names = ["x", "y", "z", "rgb"] + (["confidence"] if confidence is not None else [])
    columns = np.empty((len(xyz), len(names)), "<f4")
    columns[:, :3] = xyz
    columns[:, 3] = pack_rgb(rgb)
    if confidence is not None:
        columns[:, 4] = confidence
    step = 4 * len(names)
    msg = PointCloud2(header=head, height=1, width=len(xyz), fields=_fields(names), is_bigendian=False,
                      point_step=step, row_step=step * len(xyz), is_dense=True)
    msg.data = columns.tobytes()  # assigned after construction: a bytes copy, not a per-element check
    return msg


def cloud_to_arrays(msg: PointCloud2) -> dict:
    """Fields of a cloud written by ``point_cloud`` -> {name: [N] array} (``rgb`` as [N, 3] uint8)."""
    columns = np.frombuffer(msg.data, "<f4").reshape(msg.width * msg.height, msg.point_step // 4)
    out = {field.name: columns[:, field.offset // 4] for field in msg.fields}
    packed = out["rgb"].view(np.uint32)
    out["rgb"] = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    return out


def depth_image(head: Header, depth: np.ndarray) -> Image:
    """[H, W] float depth (NaN = invalid) -> ``32FC1`` Image (REP 118)."""
    depth = np.ascontiguousarray(depth, dtype="<f4")
    msg = Image(header=head, height=depth.shape[0], width=depth.shape[1], encoding="32FC1", is_bigendian=0,
                step=4 * depth.shape[1])
    msg.data = depth.tobytes()
    return msg


def depth_from_image(msg: Image) -> np.ndarray:
    """Inverse of ``depth_image``."""
    return np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.step // 4)[:, :msg.width]


def camera_info(head: Header, intrinsics: np.ndarray, width: int, height: int) -> CameraInfo:
    """Pinhole ``CameraInfo`` without distortion (model outputs are undistorted) for a [3, 3] K."""
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    projection = np.concatenate([k, np.zeros((3, 1))], axis=1)
    return CameraInfo(header=head, width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=k.flatten(), r=np.eye(3).flatten(), p=projection.flatten())


def intrinsics_from_info(msg: CameraInfo) -> np.ndarray:
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3)


def pose(position: np.ndarray, quaternion: np.ndarray) -> Pose:
    out = Pose()
    out.position.x, out.position.y, out.position.z = (float(v) for v in position)
    out.orientation.x, out.orientation.y, out.orientation.z, out.orientation.w = (float(v) for v in quaternion)
    return out


def pose_array(head: Header, poses: Iterable[Pose7]) -> PoseArray:
    return PoseArray(header=head, poses=[pose(p, q) for p, q in poses])


def path_message(head: Header, stamped: Iterable[Tuple[int, str, Pose7]]) -> Path:
    """``Path`` from (stamp_ns, frame_id, pose) entries, oldest first."""
    return Path(header=head, poses=[PoseStamped(header=header(frame, ns), pose=pose(*p)) for ns, frame, p in stamped])


def odometry(head: Header, child_frame_id: str, pose7: Pose7) -> Odometry:
    """Pose only: VGGT gives no velocity, so the twist stays zero."""
    msg = Odometry(header=head, child_frame_id=child_frame_id)
    msg.pose.pose = pose(*pose7)
    return msg


def transform(head: Header, child_frame_id: str, pose7: Pose7) -> TransformStamped:
    msg = TransformStamped(header=head, child_frame_id=child_frame_id)
    position, quaternion = pose7
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in position)
    (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
     msg.transform.rotation.w) = (float(v) for v in quaternion)
    return msg
