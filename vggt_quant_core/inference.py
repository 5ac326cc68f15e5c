"""Running VGGT: precision policy, and turning raw predictions into a reconstruction.

Precision follows the official demos: the aggregator runs under autocast (bf16 on GPUs that have
it, else fp16), LayerNorms and the residual stream stay float32, and the heads run in float32.
"""

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Union

import numpy as np
import torch

from .geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map
from .model import VGGT
from .model.aggregator import Aggregator
from .model.loading import low_precision_parameter_names
from .quant import fuse_residual_epilogues

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
POINT_SOURCES = ("depth", "pointmap")


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA request without CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return device


def storage_dtype(model: VGGT) -> torch.dtype:
    """dtype of the aggregator's Linear/Conv weights (float32 unless loaded in reduced precision)."""
    names = low_precision_parameter_names(model)
    dtypes = {p.dtype for n, p in model.named_parameters() if n in names}
    if len(dtypes) != 1:
        raise ValueError(f"aggregator weights have mixed dtypes {sorted(map(str, dtypes))}")
    return dtypes.pop()


def resolve_precision(precision: str, model: VGGT, device: torch.device) -> torch.dtype:
    """Autocast dtype for a precision name (``auto``, ``fp32``, ``bf16``, ``fp16``)."""
    stored = storage_dtype(model)
    if precision == "auto":
        if stored != torch.float32:
            return stored
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
        return torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {['auto', *PRECISIONS]}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if stored != torch.float32 and dtype != stored:
        raise ValueError(f"the model's weights are stored in {stored}; run it with that precision "
                         f"(or 'auto'), not {precision}")
    return dtype


def run_vggt(model: VGGT, images: torch.Tensor, precision: str = "auto",
             query_points: Optional[torch.Tensor] = None,
             frame_tokens: Optional[Callable[[Aggregator, torch.Tensor], torch.Tensor]] = None
             ) -> Dict[str, torch.Tensor]:
    """Forward pass without autograd; images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1]. A quantized model's
    attn.proj/mlp.fc2 epilogues run fused with their LayerScale + residual add (``fuse_residual_epilogues``:
    the same outputs, one pass fewer per layer; inference only, so set here). ``frame_tokens(aggregator,
    images)``, if given, supplies the aggregator's per-frame work (``VGGT.forward``), under the same autocast
    as the rest."""
    fuse_residual_epilogues(model)
    device = next(model.parameters()).device
    dtype = resolve_precision(precision, model, device)
    images = images.to(device=device, dtype=torch.float32)
    low, high = images.min().item(), images.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"images must be RGB in [0, 1], got values in [{low:.3g}, {high:.3g}]"
                         + (" (0-255 data? divide by 255)" if high > 2 else ""))
    if query_points is not None:
        query_points = query_points.to(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        tokens = None if frame_tokens is None else frame_tokens(model.aggregator, images)
        return model(images, query_points=query_points, frame_tokens=tokens)


@contextlib.contextmanager
def report_progress(model: VGGT, report: Callable[[str], None], every_seconds: float = 5.0) -> Iterator[None]:
    """During forwards inside the block, call ``report`` with the aggregator layer reached, at most
    every ``every_seconds`` (VGGT-1B on a CPU spends minutes in the aggregator)."""
    depth = model.aggregator.depth
    state = {"start": time.perf_counter(), "last": time.perf_counter()}

    def hook(module, inputs, output, index):
        now = time.perf_counter()
        if index == 0:
            state["start"] = state["last"] = now
        elif now - state["last"] >= every_seconds:
            state["last"] = now
            report(f"  aggregator layer {index + 1}/{depth} ({now - state['start']:.0f} s)")

    handles = [block.register_forward_hook(lambda m, i, o, index=index: hook(m, i, o, index))
               for index, block in enumerate(model.aggregator.global_blocks)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Reconstruction:
    """One window of frames reconstructed in the frame of its first camera (VGGT's world frame).

    Units are the model's (VGGT normalises scale by the scene's mean point distance in training).
    """

    images: np.ndarray       # [S, H, W, 3] uint8 RGB, the model input
    depth: np.ndarray        # [S, H, W] float32, > 0
    depth_conf: np.ndarray   # [S, H, W] float32, >= 1
    extrinsics: np.ndarray   # [S, 3, 4] float32, camera-from-world, OpenCV (x right, y down, z forward)
    intrinsics: np.ndarray   # [S, 3, 3] float32, pixels of the model input (of its subsampled grid)
    points: np.ndarray       # [S, H, W, 3] float32 world points
    points_conf: np.ndarray  # [S, H, W] float32 confidence of ``points``

    @property
    def num_frames(self) -> int:
        return self.depth.shape[0]


def predictions_to_reconstruction(predictions: Dict[str, torch.Tensor], point_source: str = "depth",
                                  batch_index: int = 0, pixel_stride: int = 1,
                                  intrinsics: Optional[torch.Tensor] = None) -> Reconstruction:
    """Raw model outputs -> cameras, depth and world points of one sequence.

    ``point_source``: ``depth`` unprojects depth with the predicted cameras (the official demos'
    default, usually more accurate); ``pointmap`` uses the point head.
    ``pixel_stride``: keep every ``pixel_stride``-th row and column (pixel (i, j) of the result is
    pixel (s i, s j) of the model input); the intrinsics are those of that subsampled grid.
    ``intrinsics``: [S, 3, 3] in pixels of the model input, used instead of the predicted ones
    (calibrated cameras); they only change the ``depth`` point source.
    """
    if point_source not in POINT_SOURCES:
        raise ValueError(f"point_source must be one of {POINT_SOURCES}, got {point_source!r}")
    if pixel_stride < 1:
        raise ValueError(f"pixel_stride must be >= 1, got {pixel_stride}")
    grid = (slice(None, None, pixel_stride),) * 2
    images = predictions["images"][batch_index].float()
    extrinsics, predicted = pose_encoding_to_extri_intri(predictions["pose_enc"][batch_index:batch_index + 1].float(),
                                                         images.shape[-2:])
    intrinsics = (predicted[0] if intrinsics is None else intrinsics.float()).clone()
    intrinsics[:, :2] /= pixel_stride  # pixel s*j of the input is pixel j of the grid
    images = images[(Ellipsis, *grid)]
    depth = predictions["depth"][(batch_index, Ellipsis, *grid, 0)].float().contiguous()
    if point_source == "depth":
        points = unproject_depth_map_to_point_map(depth, extrinsics[0], intrinsics)
        points_conf = predictions["depth_conf"][(batch_index, Ellipsis, *grid)]
    else:
        points = predictions["world_points"][(batch_index, Ellipsis, *grid, slice(None))]
        points_conf = predictions["world_points_conf"][(batch_index, Ellipsis, *grid)]

    def to_numpy(tensor: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(tensor.detach().float().cpu().numpy())

    rgb = (images.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    depth_conf = predictions["depth_conf"][(batch_index, Ellipsis, *grid)]
    return Reconstruction(images=np.ascontiguousarray(rgb), depth=to_numpy(depth), depth_conf=to_numpy(depth_conf),
                          extrinsics=to_numpy(extrinsics[0]), intrinsics=to_numpy(intrinsics),
                          points=to_numpy(points), points_conf=to_numpy(points_conf))


def confidence_mask(conf: np.ndarray, percentile: float = 50.0, min_conf: float = 1.0) -> np.ndarray:
    """Points to keep: confidence at or above the ``percentile``-th percentile and above ``min_conf``.

    The official demos drop the lowest 25-50 % (percentile rule); an absolute floor (e.g. 5 as in
    the official COLMAP export) can be combined with it.
    """
    if not 0 <= percentile < 100:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    finite = np.isfinite(conf)
    if not finite.any():
        return finite
    threshold = np.percentile(conf[finite], percentile)
    return finite & (conf >= threshold) & (conf > min_conf)


def colored_points(recon: Reconstruction, percentile: float = 50.0, min_conf: float = 1.0):
    """Confidence-filtered world points [N, 3] float32 and their colours [N, 3] uint8.

    Non-finite points (e.g. from a degenerate camera with zero field of view) are dropped.
    """
    keep = confidence_mask(recon.points_conf, percentile, min_conf)
    keep &= np.isfinite(recon.points).all(axis=-1)
    return recon.points[keep].astype(np.float32), recon.images[keep]
