"""``vggt-quant infer``: images in, point cloud + depth + cameras out."""

import argparse
from pathlib import Path

from ..console import add_model_arguments, options_from
from ..data.files import find_images
from ..image_reconstruction import InferOptions, reconstruct_images
from ..inference import POINT_SOURCES


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
                        help="refuse more frames than this (memory and time grow with frames^2; longer sequences: "
                             "vggt-quant reconstruct)")


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


def run(args: argparse.Namespace) -> int:
    paths = find_images(args.images)
    reconstruct_images(paths, options_from(args, InferOptions), args.out)
    return 0
