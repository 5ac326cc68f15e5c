"""Image preprocessing exactly as VGGT's official loader (``load_and_preprocess_images``).

Images become float RGB in [0, 1] (exactly k/255: the resize is PIL's antialiased bicubic on uint8)
at a size whose sides are multiples of the patch size:

* ``crop``: width -> ``target_size``, height scaled and rounded to a multiple of 14 with Python's
  round-half-to-even; taller than ``target_size`` is centre-cropped (portrait -> square).
* ``pad``: the longer side -> ``target_size``, the other scaled likewise, then white padding to a
  square, centred (the odd pixel goes bottom/right).

Frames of different sizes in one batch are padded with white to the largest, centred.
"""

import logging
import os
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]
MODES = ("crop", "pad")


def load_rgb(source: ImageSource) -> Image.Image:
    """Open a path, PIL image or HxWx3/HxWx4/HxW uint8 array as an RGB PIL image.

    Transparent pixels are composited onto white.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8, got {source.dtype}")
        image = Image.fromarray(source)
    else:
        try:
            image = Image.open(Path(source))
            image.load()
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{source}: cannot read image ({exc})") from exc
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return image.convert("RGB")


def default_height(width: int, patch_size: int) -> int:
    """3/4 of ``width`` rounded to a multiple of the patch size (4:3, like most robot cameras)."""
    return max(patch_size, round(width * 0.75 / patch_size) * patch_size)


def model_input_size(width: int, height: int, mode: str = "crop", target_size: int = 518,
                     patch_size: int = 14) -> Tuple[int, int]:
    """(width, height) the image is resized to before any crop or pad."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "pad" and height > width:
        return round(width * (target_size / height) / patch_size) * patch_size, target_size
    return target_size, round(height * (target_size / width) / patch_size) * patch_size


def preprocessed_intrinsics(intrinsics: np.ndarray, width: int, height: int, mode: str = "crop",
                            target_size: int = 518, patch_size: int = 14) -> np.ndarray:
    """Intrinsics [3, 3] of a ``width`` x ``height`` image -> those of its ``preprocess_image`` output.

    Pixel centres are at integer coordinates (OpenCV, ROS ``CameraInfo``), so a resize by ``s``
    maps ``u`` to ``(u + 0.5) * s - 0.5``; crops and pads shift the principal point.
    """
    new_w, new_h = model_input_size(width, height, mode=mode, target_size=target_size, patch_size=patch_size)
    scale_x, scale_y = new_w / width, new_h / height
    out = np.array(intrinsics, dtype=np.float64).reshape(3, 3).copy()
    out[0] *= scale_x
    out[1] *= scale_y
    out[0, 2] += 0.5 * scale_x - 0.5
    out[1, 2] += 0.5 * scale_y - 0.5
    if mode == "crop" and new_h > target_size:
        out[1, 2] -= (new_h - target_size) // 2
    if mode == "pad":
        out[0, 2] += (target_size - new_w) // 2
        out[1, 2] += (target_size - new_h) // 2
    return out


def preprocess_image(source: ImageSource, mode: str = "crop", target_size: int = 518,
                     patch_size: int = 14) -> torch.Tensor:
    """One image -> [3, H, W] float32 in [0, 1]."""
    image = load_rgb(source)
    new_w, new_h = model_input_size(*image.size, mode=mode, target_size=target_size, patch_size=patch_size)
    if new_w < patch_size or new_h < patch_size:
        raise ValueError(f"image of {image.size[0]}x{image.size[1]} is too thin: it would become "
                         f"{new_w}x{new_h}, below one {patch_size}-pixel patch")
    resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC))
    tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(255)
    if mode == "crop" and new_h > target_size:
        top = (new_h - target_size) // 2
        tensor = tensor[:, top:top + target_size]
    if mode == "pad":
        tensor = _pad_white(tensor, target_size, target_size)
    return tensor


def _pad_white(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    pad_h, pad_w = height - tensor.shape[1], width - tensor.shape[2]
    if pad_h <= 0 and pad_w <= 0:
        return tensor
    top, left = pad_h // 2, pad_w // 2
    return F.pad(tensor, (left, pad_w - left, top, pad_h - top), mode="constant", value=1.0)


def stack_padded(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """[3, H_i, W_i] images -> [N, 3, H, W], padding smaller ones with white to the largest, centred
    (as the official loader does for mixed sizes); the pad offset of image i is
    ``((H - H_i) // 2, (W - W_i) // 2)`` (top, left)."""
    if len(images) == 0:
        raise ValueError("At least 1 image is required")
    shapes = {tuple(t.shape[1:]) for t in images}
    if len(shapes) > 1:
        height, width = max(s[0] for s in shapes), max(s[1] for s in shapes)
        images = [_pad_white(t, height, width) for t in images]
    return torch.stack(list(images))


def load_and_preprocess_images(sources: Sequence[ImageSource], mode: str = "crop", target_size: int = 518,
                               patch_size: int = 14) -> torch.Tensor:
    """Images -> [N, 3, H, W] float32 in [0, 1], ready for ``VGGT.forward``."""
    if len(sources) == 0:
        raise ValueError("At least 1 image is required")
    images = [preprocess_image(s, mode=mode, target_size=target_size, patch_size=patch_size) for s in sources]
    shapes = {tuple(t.shape[1:]) for t in images}
    if len(shapes) > 1:
        logger.warning("images have different shapes %s; padding with white to the largest", sorted(shapes))
    return stack_padded(images)
