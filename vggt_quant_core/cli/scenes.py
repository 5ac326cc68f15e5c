"""``vggt-quant scenes``: write generated scenes to disk as image folders and rosbag2 recordings."""

import argparse
import logging
import time
from pathlib import Path
from typing import List

from ..data import TRAJECTORIES, generate_sequence
from ..data.bags import STORAGES
from ..export.recording import write_scene

log = logging.getLogger("vggt_quant")


def add_parser(commands) -> None:
    parser = commands.add_parser("scenes", help="write generated scenes with ground truth (images, rosbag2)",
                                 description="Render procedural scenes along robot/handheld trajectories and write, "
                                             "per scene, PNG frames and/or a rosbag2 recording, plus ground truth "
                                             "(ground_truth.npz, scene.json).")
    parser.add_argument("--out", type=Path, required=True, help="output directory (one folder per scene)")
    parser.add_argument("--count", type=int, default=1, help="number of scenes (default 1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seed of the first scene; seeds below 1000000 are for training, from 1000000 on "
                             "held out for evaluation (default 0)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--trajectory", default="any", choices=["any", *sorted(TRAJECTORIES)])
    parser.add_argument("--cameras", type=int, default=1, choices=[1, 2], help="1, or 2 for a stereo rig")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the recording's stamps")
    parser.add_argument("--format", choices=["images", "bag", "both"], default="both")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--no-camera-info", action="store_true", help="leave CameraInfo topics out of the bag")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise ValueError("--count must be at least 1")
    started = time.perf_counter()
    folders: List[Path] = []
    for seed in range(args.first_seed, args.first_seed + args.count):
        sequence = generate_sequence(seed, args.frames, args.width, args.height, trajectory=args.trajectory,
                                     cameras=args.cameras, fps=args.fps)
        folder = args.out / f"scene_{seed:07d}"
        write_scene(folder, sequence, images=args.format != "bag", bag=args.format != "images",
                    storage=args.storage, camera_info=not args.no_camera_info)
        folders.append(folder)
        log.info("%s: %s, %s, %d frames x %d camera(s)", folder, sequence.kind, sequence.trajectory, args.frames,
                 args.cameras)
    print(f"wrote {len(folders)} scene(s) to {args.out} in {time.perf_counter() - started:.1f} s "
          f"({folders[0].name} ... {folders[-1].name})")
    return 0
