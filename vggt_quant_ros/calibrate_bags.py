"""``calibrate``: calibrate a quantized VGGT on the robot's own rosbag recordings.

    ros2 run vggt_quant_ros calibrate --bag run1 [--bag run2 ...] [--topic /cam0/image_raw] --out vggt_w4a4.safetensors

(or plain ``calibrate ...`` without the ROS CLI). Reads rosbag2 directories (sqlite3 or mcap), bare
``.mcap`` files and ROS 1 ``.bag`` files with ``rosbags``, no ROS install needed. Windows of
``--window`` frames are taken per image topic and never cross a bag boundary or a time gap above
``--max-gap``; frames are decoded only when a window is used. The result is a quantized checkpoint that
the ``reconstruct`` node loads with its ``checkpoint`` parameter; its header names the bags, topics and
sample windows. An interrupted run (Ctrl-C) resumes when the same command is run again.
"""

import argparse
import logging
import sys
from typing import List, Optional

from vggt_quant_core.cli.calibrate import add_calibration_arguments, run_with_sources
from vggt_quant_core.cli.main import run_reporting_errors
from vggt_quant_core.data.bags import bag_sources

log = logging.getLogger("vggt_quant")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", action="append", required=True, metavar="PATH",
                        help="rosbag2 directory, .mcap/.db3 file or ROS 1 .bag (repeatable)")
    parser.add_argument("--topic", action="append", metavar="TOPIC",
                        help="image topic (Image or CompressedImage; repeatable; default: every image topic)")
    parser.add_argument("--max-gap", type=float, default=1.0,
                        help="seconds without a frame that end a stretch: windows never span it (default 1.0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    add_calibration_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ros-args" in argv:  # `ros2 run` may append ROS arguments; this tool has no ROS parameters
        argv = argv[:argv.index("--ros-args")]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr, force=True)

    def calibrate_bags() -> int:
        sources, found = bag_sources(args.bag, args.topic, args.max_gap)
        for bag, topics in found.items():
            log.info("%s: %s", bag, ", ".join(f"{topic} ({count} frames)" for topic, count in topics.items()))
        topics = sorted({source.stream.topic for source in sources})
        return run_with_sources(args, sources, {"bags": [str(b) for b in args.bag], "topics": topics})

    work_dir = args.work_dir or args.out.with_name(args.out.name + ".work")
    return run_reporting_errors("calibrate", args.verbose, calibrate_bags,
                                f"interrupted; progress is kept in {work_dir}: run the same command again to "
                                "resume (no checkpoint was written)")


if __name__ == "__main__":
    raise SystemExit(main())
