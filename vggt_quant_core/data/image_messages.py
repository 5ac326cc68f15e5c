"""Decoding ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` messages to RGB arrays.

Pure numpy/Pillow and duck-typed on the message fields (``encoding``, ``height``, ``width``, ``step``,
``is_bigendian``, ``data``; ``format`` and ``data`` for compressed images), so the same code decodes
rclpy messages in the ROS node and rosbags messages read from bag files. Both image functions return
H x W x 3 uint8 RGB, ``depth_metres`` a depth image in metres; all raise ``ImageError`` with a one-line
reason for anything they cannot convert.
"""

import io
from typing import Tuple

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"


class ImageError(ValueError):
    """An input image that cannot be used; the message says why in one line."""


class UnsupportedEncoding(ImageError):
    """An encoding this decoder does not know (cv_bridge may, where installed)."""


# channels of the 8-bit encodings converted here; mono16/16UC1 and YUV 4:2:2 are handled apart
_CHANNELS_8BIT = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_MONO16 = ("mono16", "16UC1")
# legacy names (sensor_msgs image_encodings.hpp): yuv422 = uyvy (U Y0 V Y1), yuv422_yuy2 = yuyv (Y0 U Y1 V)
_YUV422 = {"uyvy": (1, 0, 2), "yuv422": (1, 0, 2), "yuyv": (0, 1, 3), "yuv422_yuy2": (0, 1, 3)}
SUPPORTED_ENCODINGS = tuple(_CHANNELS_8BIT) + _MONO16 + tuple(_YUV422)


def _pixel_rows(msg, bytes_per_pixel: int) -> np.ndarray:
    """The message's pixels as [height, width * bytes_per_pixel] uint8 (row padding dropped)."""
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ImageError(f"empty image ({width}x{height})")
    if step < width * bytes_per_pixel:
        raise ImageError(f"step {step} is smaller than width {width} x {bytes_per_pixel} bytes per pixel "
                         f"({msg.encoding})")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < step * height:
        raise ImageError(f"data has {data.size} bytes, expected step x height = {step} x {height} = "
                         f"{step * height}")
    return data[:step * height].reshape(height, step)[:, :width * bytes_per_pixel]


def normalize_to_uint8(gray: np.ndarray) -> np.ndarray:
    """Stretch a 16-bit (or any) single-channel image's [min, max] to [0, 255] (as RViz's normalize does)."""
    gray = gray.astype(np.float32)
    low, high = float(gray.min()), float(gray.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((gray - low) * scale).round().astype(np.uint8)


def yuv422_to_rgb(rows: np.ndarray, order: Tuple[int, int, int]) -> np.ndarray:
    """[H, 2W] packed 4:2:2 bytes -> [H, W, 3] RGB, BT.601 video range (as OpenCV's YUV2RGB_UYVY/YUYV).

    ``order`` gives the byte offsets of (Y0, U, V) within each 4-byte group; Y1 follows Y0 by 2.
    """
    groups = rows.reshape(rows.shape[0], -1, 4).astype(np.float32)
    y0, u, v = (groups[..., i] for i in order)
    y = np.stack([y0, groups[..., order[0] + 2]], axis=-1).reshape(rows.shape[0], -1)  # [H, W]
    u, v = np.repeat(u - 128, 2, axis=1), np.repeat(v - 128, 2, axis=1)
    y = 1.164 * np.maximum(y - 16, 0)
    rgb = np.stack([y + 1.596 * v, y - 0.391 * u - 0.813 * v, y + 2.018 * u], axis=-1)
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> [H, W, 3] uint8 RGB.

    8-bit colour and mono encodings are converted exactly (mono is repeated into three channels,
    alpha is dropped); 16-bit mono is stretched to 8 bits per image; YUV 4:2:2 uses BT.601 video
    range. Other encodings raise ``UnsupportedEncoding``.
    """
    encoding = msg.encoding
    if encoding in _CHANNELS_8BIT:
        channels = _CHANNELS_8BIT[encoding]
        pixels = _pixel_rows(msg, channels).reshape(msg.height, msg.width, channels)
        if channels == 1:
            return np.repeat(pixels, 3, axis=2)
        if encoding.startswith("bgr"):
            return np.ascontiguousarray(pixels[..., 2::-1])
        return np.ascontiguousarray(pixels[..., :3])
    if encoding in _MONO16:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        gray = _pixel_rows(msg, 2).copy().view(dtype)
        return np.repeat(normalize_to_uint8(gray)[..., None], 3, axis=2)
    if encoding in _YUV422:
        if msg.width % 2:
            raise ImageError(f"{encoding} needs an even width, got {msg.width}")
        return yuv422_to_rgb(_pixel_rows(msg, 2), _YUV422[encoding])
    raise UnsupportedEncoding(f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def compressed_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG, as image_transport's ``compressed``) -> [H, W, 3] uint8.

    ``format`` is ``"<encoding>; jpeg compressed <bgr8|rgb8>"``, ``png`` or empty; the codec is read
    from the data itself. ``compressedDepth`` (depth images) is rejected: it is not camera input.
    """
    if "compresseddepth" in msg.format.lower():
        raise ImageError(f"format {msg.format!r} is a compressed depth image, not a camera image")
    if len(msg.data) == 0:
        raise ImageError("empty compressed image (0 bytes)")
    try:
        image = PILImage.open(io.BytesIO(bytes(msg.data)))
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc
    if image.mode in ("I;16", "I;16B", "I"):
        return np.repeat(normalize_to_uint8(np.asarray(image))[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


DEPTH_ENCODINGS = {"16UC1": ("u2", 0.001), "mono16": ("u2", 0.001), "32FC1": ("f4", 1.0)}   # REP 118: mm or m


def depth_metres(msg) -> np.ndarray:
    """A depth image (``16UC1`` millimetres or ``32FC1`` metres, REP 118) -> [H, W] float32 metres, NaN where
    invalid (0, NaN, inf); raises ``ImageError`` for other encodings or a short buffer."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageError(f"depth encoding {msg.encoding!r} is not supported; expected "
                         + " or ".join(DEPTH_ENCODINGS))
    kind, unit = DEPTH_ENCODINGS[msg.encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    if msg.step < msg.width * dtype.itemsize or len(msg.data) < msg.step * msg.height:
        raise ImageError(f"depth image of {msg.width}x{msg.height} has {len(msg.data)} bytes with step {msg.step}")
    rows = np.frombuffer(msg.data, np.uint8)[:msg.step * msg.height].reshape(msg.height, msg.step)
    depth = rows[:, :msg.width * dtype.itemsize].copy().view(dtype).astype(np.float32) * np.float32(unit)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
