"""``vggt-quant demo``: record a held-out generated scene as a rosbag2 file, reconstruct it through the same
windows as the ROS node (the streaming library, with the node's parameter file), compare with the ground truth
(``vggt_quant_core.demo``)."""

import argparse

from ..console import add_demo_arguments, options_from
from ..demo import DemoOptions, run_demo


def add_parser(commands) -> None:
    parser = commands.add_parser("demo", help="record a synthetic scene as a rosbag2, reconstruct it, compare",
                                 description="Render a held-out procedural scene, record it as a rosbag2 file, "
                                             "reconstruct it from the bag through the ROS node's windows (without "
                                             "ROS), and compare with the ground truth.")
    add_demo_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(options_from(args, DemoOptions))
