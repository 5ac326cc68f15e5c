"""Image decoding and message building, checked against independently built messages and formulas."""

import io
import struct

import numpy as np
import pytest
from PIL import Image as PILImage

from helpers_ros import rgb_image  # first: skips this module where rclpy is missing

from sensor_msgs.msg import CompressedImage, Image, PointField
from vggt_quant_ros import conversions
from vggt_quant_ros.conversions import ImageError


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_with_row_padding(rgb, encoding, pad):
    assert np.array_equal(conversions.image_to_rgb(rgb_image(rgb, 0, encoding=encoding, pad=pad)), rgb)


def test_bgra8_and_mono8(rgb):
    bgra = np.concatenate([rgb[..., ::-1], np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=2)
    msg = Image(height=6, width=10, encoding="bgra8", step=40)
    msg.data = bgra.tobytes()
    assert np.array_equal(conversions.image_to_rgb(msg), rgb)
    mono = conversions.image_to_rgb(rgb_image(rgb, 0, encoding="mono8", pad=2))
    assert np.array_equal(mono, np.repeat(rgb[..., :1], 3, axis=2))


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_16bit_mono_is_stretched_to_8_bits(encoding, bigendian):
    values = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    msg = Image(height=2, width=2, encoding=encoding, is_bigendian=bigendian, step=4)
    msg.data = values.astype(">u2" if bigendian else "<u2").tobytes()
    out = conversions.image_to_rgb(msg)
    assert out.shape == (2, 2, 3) and (out[..., 0] == out[..., 2]).all()
    assert out[..., 0].tolist() == [[0, 64], [128, 255]]  # (v - 1000) / 4000 * 255, rounded


def _yuv_bt601(rgb):
    """Forward BT.601 video-range transform (the textbook one, independent of the decoder)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v)]


@pytest.mark.parametrize("encoding, layout", [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuyv", "YUYV"),
                                              ("yuv422_yuy2", "YUYV")])
def test_yuv422_round_trips_bt601(rgb, encoding, layout):
    pairs = np.repeat(rgb[:, :5], 2, axis=1)  # equal horizontal pairs: 4:2:2 chroma loses nothing
    y, u, v = _yuv_bt601(pairs)
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u[:, 0::2], "V": v[:, 0::2]}
    order = ["U", "Y0", "V", "Y1"] if layout == "UYVY" else ["Y0", "U", "Y1", "V"]
    packed = np.stack([planes[name] for name in order], axis=-1).reshape(6, 20)
    msg = Image(height=6, width=10, encoding=encoding, step=20)
    msg.data = packed.tobytes()
    out = conversions.image_to_rgb(msg)
    assert np.abs(out.astype(int) - pairs).max() <= 3


@pytest.mark.parametrize("change, reason", [
    (dict(encoding="bayer_rggb8"), "unsupported encoding 'bayer_rggb8'"),
    (dict(height=0, width=0, step=0), "empty image"),
    (dict(step=20), "step 20 is smaller than width 10"),
    (dict(data_bytes=100), "data has 100 bytes, expected step x height = 30 x 6 = 180"),
    (dict(encoding="yuv422", width=9, step=18), "needs an even width"),
])
def test_bad_images_raise_one_line_reasons(rgb, change, reason):
    msg = rgb_image(rgb, 0)
    nbytes = change.pop("data_bytes", None)
    for key, value in change.items():
        setattr(msg, key, value)
    if nbytes is not None:
        msg.data = bytes(nbytes)
    with pytest.raises(ImageError, match=reason) as info:
        conversions.image_to_rgb(msg)
    assert "\n" not in str(info.value)


def _compressed(image: PILImage.Image, fmt: str, format_field: str) -> CompressedImage:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    msg = CompressedImage(format=format_field)
    msg.data = buffer.getvalue()
    return msg


def test_compressed_png_is_exact_and_jpeg_close():
    columns, rows = np.meshgrid(np.arange(64) * 4, np.arange(48) * 5)
    smooth = np.stack([columns, rows, np.full_like(rows, 90)], axis=-1).astype(np.uint8)
    png = conversions.compressed_to_rgb(_compressed(PILImage.fromarray(smooth), "PNG", "rgb8; png compressed rgb8"))
    assert np.array_equal(png, smooth)
    jpeg = conversions.compressed_to_rgb(_compressed(PILImage.fromarray(smooth), "JPEG", "bgr8; jpeg compressed bgr8"))
    assert jpeg.shape == smooth.shape and np.abs(jpeg.astype(int) - smooth).mean() < 3
    grey16 = PILImage.fromarray(np.array([[0, 1000], [2000, 4000]], np.uint16))
    grey = conversions.compressed_to_rgb(_compressed(grey16, "PNG", "mono16; png"))
    assert grey[..., 0].tolist() == [[0, 64], [128, 255]]


@pytest.mark.parametrize("data, format_field, reason", [
    (b"not an image", "jpeg", "cannot decode compressed image"),
    (b"", "jpeg", "empty compressed image"),
    (b"\x00" * 12, "16UC1; compressedDepth png", "compressed depth image"),
])
def test_bad_compressed_images(data, format_field, reason):
    msg = CompressedImage(format=format_field)
    msg.data = data
    with pytest.raises(ImageError, match=reason):
        conversions.compressed_to_rgb(msg)


def test_point_cloud_layout_and_packed_rgb():
    xyz = np.array([[1.0, 2.0, 3.0], [-1.5, 0.25, 8.0]], np.float32)
    rgb = np.array([[255, 128, 1], [0, 0, 0]], np.uint8)
    msg = conversions.point_cloud(conversions.header("map", 5), xyz, rgb, confidence=np.array([2.0, 7.5]))
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1), ("confidence", 16, PointField.FLOAT32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense, msg.is_bigendian) == (
        1, 2, 20, 40, True, False)
    first = bytes(msg.data[:20])
    assert struct.unpack("<fff", first[:12]) == (1.0, 2.0, 3.0)
    assert struct.unpack("<I", first[12:16])[0] == 0x00FF8001  # what RViz's RGB8 transformer reads
    assert struct.unpack("<f", first[16:20])[0] == 2.0
    back = conversions.cloud_to_arrays(msg)
    assert np.array_equal(back["rgb"], rgb) and np.array_equal(back["z"], xyz[:, 2])
    assert conversions.point_cloud(msg.header, xyz[:0], rgb[:0]).width == 0


def test_depth_image_and_camera_info():
    depth = np.array([[1.5, np.nan, 2.0], [0.25, 3.0, 4.0]], np.float32)
    head = conversions.header("cam0_optical_frame", 1_500_000_001)
    msg = conversions.depth_image(head, depth)
    assert (msg.encoding, msg.step, msg.height, msg.width, msg.is_bigendian) == ("32FC1", 12, 2, 3, 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 500_000_001)
    assert np.array_equal(conversions.depth_from_image(msg), depth, equal_nan=True)
    k = np.array([[100.0, 0, 1.5], [0, 90.0, 1.0], [0, 0, 1]])
    info = conversions.camera_info(head, k, 3, 2)
    assert (info.width, info.height) == (3, 2)
    assert np.array_equal(np.reshape(info.p, (3, 4))[:, :3], k)
    assert np.array_equal(conversions.intrinsics_from_info(info), k)


def test_pose_messages():
    pose = (np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.6, 0.8]))
    head = conversions.header("map", 7)
    array = conversions.pose_array(head, [pose, pose])
    assert len(array.poses) == 2 and array.poses[1].orientation.w == 0.8 and array.header.frame_id == "map"
    path = conversions.path_message(head, [(3, "map", pose), (4, "map", pose)])
    assert [p.header.stamp.nanosec for p in path.poses] == [3, 4] and path.poses[0].pose.position.z == 3.0
    odom = conversions.odometry(head, "cam0_optical_frame", pose)
    assert odom.child_frame_id == "cam0_optical_frame" and odom.pose.pose.position.y == 2.0
    tf = conversions.transform(head, "cam0_optical_frame", pose)
    assert tf.transform.translation.x == 1.0 and tf.transform.rotation.z == 0.6
