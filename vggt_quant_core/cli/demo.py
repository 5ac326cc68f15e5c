"""``vggt-quant demo``: render a small synthetic sequence with ground truth and reconstruct it."""

import argparse
import json
import logging
from pathlib import Path

from PIL import Image

from ..data import generate_sequence
from ..fileio import atomic_path, write_text_atomic
from .infer import add_model_arguments, add_output_arguments, reconstruct_images

log = logging.getLogger("vggt_quant")


def add_parser(commands) -> None:
    parser = commands.add_parser("demo", help="render a synthetic sequence and reconstruct it",
                                 description="Render a procedural room along an orbit (images + ground "
                                             "truth), then run `infer` on it.")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(run=run)


def write_sequence(out: Path, frames: int, width: int, height: int, seed: int):
    """Render and save images (PNG) and ground truth (cameras.json); returns the image paths."""
    sequence = generate_sequence(seed, frames, width, height, trajectory="orbit").cameras[0]
    paths = []
    for i, image in enumerate(sequence.images):
        path = out / "images" / f"frame_{i:03d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        paths.append(path)
    truth = {"convention": "extrinsic: camera-from-world (OpenCV); depth: camera z in metres, 0 = no hit",
             "extrinsics": sequence.extrinsics.tolist(), "intrinsics": sequence.intrinsics.tolist()}
    write_text_atomic(out / "ground_truth" / "cameras.json", json.dumps(truth))
    return paths


def run(args: argparse.Namespace) -> int:
    if args.frames < 2:
        raise ValueError("--frames must be at least 2")
    log.info("rendering %d frames of %dx%d (seed %d) into %s/images", args.frames, args.width, args.height,
             args.seed, args.out)
    paths = write_sequence(args.out, args.frames, args.width, args.height, args.seed)
    summary = reconstruct_images(paths, args, args.out / "reconstruction", {"demo_seed": args.seed})
    print(f"demo done: {summary['frames']} frames, {summary['points']} points\n"
          f"  input images:   {args.out / 'images'}\n"
          f"  point cloud:    {args.out / 'reconstruction' / 'points.ply'}\n"
          f"  depth maps:     {args.out / 'reconstruction' / 'depth'}\n"
          f"  cameras:        {args.out / 'reconstruction' / 'cameras.json'}")
    return 0
