"""``vggt-quant quantize``: calibration-free quantization of a model into a quantized checkpoint."""

import argparse
import logging
from pathlib import Path
from typing import List

import torch

from ..data import load_and_preprocess_images
from ..eval.fidelity_bench import scene_windows
from ..inference import resolve_device
from ..presets import load_model_spec
from ..quant import RECIPES, QuantConfig, parse_bits, quantize, save_quantized
from ..data.files import find_images

log = logging.getLogger("vggt_quant")


def add_parser(commands) -> None:
    parser = commands.add_parser("quantize", help="quantize a model into a quantized checkpoint",
                                 description="Quantize with a calibration-free method (RTN, SmoothQuant, QuaRot, "
                                             "DSFQ initialisation) and write a quantized checkpoint that `infer` "
                                             "and the ROS node load with --checkpoint.")
    parser.add_argument("--model", default="vggt-1b", help="preset name or checkpoint path (default: vggt-1b)")
    parser.add_argument("--method", default="dsfq", choices=sorted(RECIPES))
    parser.add_argument("--bits", default="w4a8", help="wXaY, e.g. w8a8, w4a8, w4a4, w4a16 (default: w4a8)")
    parser.add_argument("--calibration", nargs="+", metavar="DIR_GLOB_OR_FILE",
                        help="images for the activation statistics of smoothing methods (windows of --frames in "
                             "natural order); default: rendered synthetic scenes")
    parser.add_argument("--calibration-scenes", type=int, default=4,
                        help="rendered windows used when --calibration is not given (default 4)")
    parser.add_argument("--frames", type=int, default=8, help="frames per calibration window (default 8)")
    parser.add_argument("--include-patch-embed", action="store_true", help="also quantize the DINOv2 blocks")
    parser.add_argument("--include-camera-trunk", action="store_true", help="also quantize the camera trunk")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random Hadamard signs")
    parser.add_argument("--no-base", action="store_true",
                        help="store only the quantized layers (loading then needs the base model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    parser.set_defaults(run=run)


def calibration_windows(args: argparse.Namespace, width: int) -> List[torch.Tensor]:
    if not args.calibration:
        log.warning("no --calibration images: using %d rendered synthetic windows (calibrate on your own data "
                    "for best accuracy)", args.calibration_scenes)
        return scene_windows(range(args.calibration_scenes), args.frames, width)
    images = load_and_preprocess_images(find_images(args.calibration), target_size=width)
    if len(images) < 2:
        raise ValueError("--calibration needs at least 2 images (one window)")
    return [images[i:i + args.frames] for i in range(0, len(images) - 1, args.frames) if len(images[i:]) >= 2]


def run(args: argparse.Namespace) -> int:
    w_bits, a_bits = parse_bits(args.bits)
    config = QuantConfig(method=args.method, w_bits=w_bits, a_bits=a_bits, seed=args.seed,
                         include_patch_embed=args.include_patch_embed,
                         include_camera_trunk=args.include_camera_trunk)
    device = resolve_device(args.device)
    model, width, description = load_model_spec(args.model, device)
    windows = calibration_windows(args, width) if config.needs_calibration_data else []
    quantize(model, config, calibration_images=windows)
    report = save_quantized(model, args.out, include_base=not args.no_base,
                            calibration={"source": args.calibration or f"rendered scenes 0..{len(windows) - 1}",
                                         "windows": len(windows), "frames": args.frames} if windows else None)
    mb = {k: v / 1e6 for k, v in report.items()}
    print(f"wrote {args.out} ({config.label} of {description})\n"
          f"  quantized layers: {mb['quantized_layers_bytes']:.1f} MB "
          f"(fp16 {mb['quantized_layers_fp16_bytes']:.1f} MB, fp32 {mb['quantized_layers_fp32_bytes']:.1f} MB)\n"
          f"  file: {mb['file_bytes']:.1f} MB (whole model fp16 {mb['model_fp16_bytes']:.1f} MB, "
          f"fp32 {mb['model_fp32_bytes']:.1f} MB)")
    return 0
