"""The ``infer`` use case: images (paths or arrays) -> VGGT as one window -> a reconstruction folder
(points.ply, depth, cameras.json, summary.json). ``vggt-quant infer`` calls it; sequences longer than a window
go through ``vggt-quant reconstruct`` (``stream``)."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from .data import load_and_preprocess_images
from .data.preprocess import ImageSource
from .export import write_reconstruction
from .inference import Reconstruction, predictions_to_reconstruction, report_progress, resolve_device, run_vggt
from .kernels.allocator import tune_glibc_malloc
from .model import VGGT
from .presets import load_model

log = logging.getLogger("vggt_quant")


@dataclass(frozen=True)
class InferOptions:
    """How ``reconstruct_images`` runs (``vggt-quant infer``'s options)."""

    checkpoint: Optional[Path] = None     # weights file or directory; None: ``preset``
    preset: Optional[str] = None          # None: the default preset
    device: str = "auto"
    precision: str = "auto"
    mode: str = "crop"                    # preprocessing: crop or pad
    size: Optional[int] = None            # preprocessing width; None: the model's
    points: str = "depth"                 # cloud from depth + cameras, or the point head ("pointmap")
    conf_percentile: float = 50.0
    conf_min: float = 1.0
    max_frames: int = 64


def reconstruct_images(sources: Sequence[ImageSource], args: InferOptions, out: Path,
                       extra_metadata: Optional[dict] = None, names: Optional[Sequence[str]] = None,
                       loaded: Optional[Tuple[VGGT, int, str]] = None) -> Tuple[dict, Reconstruction]:
    """Load the model (unless ``loaded``, as ``presets.load_model``
    returns it), run it on the images (paths or arrays), write the outputs. Returns the summary and the
    reconstruction. ``names`` label the frames in cameras.json (default: the sources)."""
    if len(sources) > args.max_frames:
        raise ValueError(f"{len(sources)} images exceed --max-frames {args.max_frames} (one window: memory and time "
                         "grow with frames^2); stream a longer sequence through overlapping windows with "
                         "`vggt-quant reconstruct --images ...`, or raise the limit")
    if not 0 <= args.conf_percentile < 100:
        raise ValueError(f"--conf-percentile must be in [0, 100), got {args.conf_percentile}")
    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_glibc_malloc()  # large activations: reuse freed heap instead of page-faulting new mmaps
    started = time.perf_counter()
    model, trained_size, description = loaded or load_model(args.checkpoint, args.preset, device=device)
    device = next(model.parameters()).device
    params = sum(p.numel() for p in model.parameters())
    log.info("model: %s (%.2fM parameters) on %s", description, params / 1e6, device)
    size = args.size or trained_size
    log.info("loading %d images (%s mode, width %d)", len(sources), args.mode, size)
    images = load_and_preprocess_images(sources, mode=args.mode, target_size=size)
    loaded_at = time.perf_counter()
    log.info("running VGGT on %d frames of %dx%d ...", images.shape[0], images.shape[-1], images.shape[-2])
    with report_progress(model, log.info):
        predictions = run_vggt(model, images, precision=args.precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    inferred = time.perf_counter()
    recon = predictions_to_reconstruction(predictions, point_source=args.points)
    metadata = {"model": description, "device": str(device), "precision": args.precision,
                "point_source": args.points, "seconds": {"load": round(loaded_at - started, 3),
                                                         "inference": round(inferred - loaded_at, 3)},
                **(extra_metadata or {})}
    summary = write_reconstruction(recon, out, conf_percentile=args.conf_percentile, conf_min=args.conf_min,
                                   sources=[str(s) for s in (names or sources)], metadata=metadata)
    log.info("inference %.2f s; kept %d of %d points", inferred - loaded_at, summary["points"],
             summary["points_total"])
    log.info("wrote %s/: points.ply (open in MeshLab/CloudCompare), depth/frame_*.png|.npy, cameras.json, "
             "summary.json", out)
    return summary, recon
