"""The ``infer`` use case: images (paths or arrays) -> VGGT -> a reconstruction folder (points.ply, depth,
cameras.json, summary.json). ``vggt-quant infer`` and the demo without ROS call it."""

import argparse
import logging
import time
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


def reconstruct_images(sources: Sequence[ImageSource], args: argparse.Namespace, out: Path,
                       extra_metadata: Optional[dict] = None, names: Optional[Sequence[str]] = None,
                       loaded: Optional[Tuple[VGGT, int, str]] = None) -> Tuple[dict, Reconstruction]:
    """Shared by ``infer`` and ``demo``: load the model (unless ``loaded``, as ``presets.load_model``
    returns it), run it on the images (paths or arrays), write the outputs. Returns the summary and the
    reconstruction. ``names`` label the frames in cameras.json (default: the sources)."""
    if len(sources) > args.max_frames:
        raise ValueError(f"{len(sources)} images exceed --max-frames {args.max_frames}; pass fewer frames "
                         "or raise the limit")
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
