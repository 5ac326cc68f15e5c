"""``calibrate``: calibrate a quantized VGGT on the robot's own rosbag recordings.

    ros2 run vggt_quant_ros calibrate --bag run1 [--bag run2 ...] [--topic /cam0/image_raw] --out vggt_w4a4.safetensors

(or plain ``calibrate ...`` without the ROS CLI). Reads rosbag2 directories (sqlite3 or mcap), bare
``.mcap`` files and ROS 1 ``.bag`` files with ``rosbags``, no ROS install needed. Windows of
``--window`` frames are taken per image topic and never cross a bag boundary or a time gap above
``--max-gap``; frames are decoded only when a window is used. The result is a quantized checkpoint that
the ``reconstruct`` node loads with its ``checkpoint`` parameter; its header names the bags, topics and
sample windows. An interrupted run (Ctrl-C) resumes when the same command is run again.

This is ``vggt-quant calibrate --bag ...`` under the name ROS users run (no rclpy node: it only reads files).
"""

import sys
from typing import List, Optional

from vggt_quant_core.cli.calibrate import bags_main


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ros-args" in argv:  # `ros2 run` may append ROS arguments; this tool has no ROS parameters
        argv = argv[:argv.index("--ros-args")]
    return bags_main(argv, prog="calibrate", description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
