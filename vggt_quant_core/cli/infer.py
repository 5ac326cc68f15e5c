"""``vggt-quant infer``: images in, point cloud + depth + cameras out."""

import argparse
import logging
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from ..data import load_and_preprocess_images
from ..data.files import find_images
from ..data.preprocess import ImageSource
from ..export import write_reconstruction
from ..inference import (POINT_SOURCES, PRECISIONS, Reconstruction, predictions_to_reconstruction, report_progress,
                         resolve_device, run_vggt)
from ..kernels.allocator import tune_glibc_malloc
from ..model import VGGT
from ..presets import DEFAULT_PRESET, PRESETS, load_model

log = logging.getLogger("vggt_quant")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="weights file or directory (e.g. VGGT-1B model.pt)")
    source.add_argument("--preset", choices=sorted(PRESETS), help=f"named model (default: {DEFAULT_PRESET})")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                        help="autocast precision of the aggregator; heads always run in fp32 "
                             "(auto: bf16/fp16 on CUDA, fp32 on CPU)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["crop", "pad"], default="crop",
                        help="preprocessing as the official loader: crop (default) or pad to a square")
    parser.add_argument("--size", type=int, help="preprocessing width (default: what the model was trained at)")
    parser.add_argument("--points", choices=POINT_SOURCES, default="depth",
                        help="point cloud from depth + cameras (default) or from the point head")
    parser.add_argument("--conf-percentile", type=float, default=50.0,
                        help="drop this percentage of lowest-confidence points (default 50)")
    parser.add_argument("--conf-min", type=float, default=1.0,
                        help="also drop points with confidence <= this (confidence is >= 1; default 1.0)")
    parser.add_argument("--max-frames", type=int, default=64,
                        help="refuse more frames than this (memory and time grow with frames^2)")


def add_parser(commands) -> None:
    parser = commands.add_parser("infer", help="reconstruct a folder of images",
                                 description="Reconstruct images with VGGT; write points.ply, per-frame depth, "
                                             "cameras.json and summary.json.")
    parser.add_argument("--images", nargs="+", required=True, metavar="DIR_GLOB_OR_FILE",
                        help="a directory of images, a glob pattern (quote it) or image files")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(run=run)


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


def run(args: argparse.Namespace) -> int:
    paths = find_images(args.images)
    reconstruct_images(paths, args, args.out)
    return 0
