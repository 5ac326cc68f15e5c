"""``vggt-quant demo``: record a held-out generated scene as a rosbag2 file, reconstruct it with the ``infer``
pipeline, compare with the ground truth (``vggt_quant_core.demo``)."""

import argparse
from pathlib import Path

from ..data import HELD_OUT_SEED_BASE, TRAJECTORIES
from ..data.bags import STORAGES
from ..demo import run_demo
from .infer import add_model_arguments, add_output_arguments


def add_demo_arguments(parser: argparse.ArgumentParser, frames: int, frames_help: str) -> None:
    """The recording's arguments (shared with the ROS demo)."""
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory")
    parser.add_argument("--frames", type=int, default=frames, help=frames_help)
    parser.add_argument("--width", type=int, help="recording width (default: the model's input width)")
    parser.add_argument("--height", type=int, help="recording height (default: 3/4 of the width)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 7, help="scene seed (default: held out)")
    parser.add_argument("--trajectory", default="orbit", choices=sorted(TRAJECTORIES))
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="rosbag2 storage plugin")
    add_model_arguments(parser)


def add_parser(commands) -> None:
    parser = commands.add_parser("demo", help="record a synthetic scene as a rosbag2, reconstruct it, compare",
                                 description="Render a held-out procedural scene, record it as a rosbag2 file, "
                                             "reconstruct it from the bag, and compare with the ground truth.")
    add_demo_arguments(parser, frames=10, frames_help="frames in the recording (one window)")
    add_output_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(args)
