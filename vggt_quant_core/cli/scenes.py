"""``vggt-quant scenes``: write generated scenes to disk as image folders and rosbag2 recordings."""

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from ..data import TRAJECTORIES, RenderedSequence, SceneSequence, generate_sequence
from ..data.bags import STORAGES, write_bag
from ..fileio import atomic_path, write_text_atomic

log = logging.getLogger("vggt_quant")

GROUND_TRUTH_CONVENTION = ("<cam>_extrinsics [S, 3, 4]: camera-from-world (OpenCV: x right, y down, z forward), "
                           "world z up, floor z = 0, metres; <cam>_intrinsics [S, 3, 3]: pixels, principal point "
                           "(W/2, H/2); <cam>_depth [S, H, W]: camera z in metres, 0 = no surface (sky); "
                           "timestamps_ns [S]: header stamps of the bag messages")


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


def write_scene(out: Path, sequence: SceneSequence, images: bool = True, bag: bool = True, storage: str = "mcap",
                camera_info: bool = True) -> Dict[str, Path]:
    """Write ``<cam>/frame_XXX.png`` (``images``), the rosbag2 directory ``bag/`` (``bag``),
    ``ground_truth.npz`` and ``scene.json`` into ``out``; returns the paths written."""
    written = {}
    if images:
        for camera in sequence.cameras:
            for index, image in enumerate(camera.images):
                with atomic_path(out / camera.name / f"frame_{index:03d}.png") as tmp:
                    Image.fromarray(image).save(tmp, format="PNG")
            written[camera.name] = out / camera.name
    if bag:
        written["bag"] = write_bag(out / "bag", sequence, storage=storage, camera_info=camera_info)
    arrays = {"timestamps_ns": sequence.timestamps_ns}
    for camera in sequence.cameras:
        arrays.update({f"{camera.name}_depth": camera.depth, f"{camera.name}_extrinsics": camera.extrinsics,
                       f"{camera.name}_intrinsics": camera.intrinsics})
    written["ground_truth"] = out / "ground_truth.npz"
    with atomic_path(written["ground_truth"]) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    meta = {"seed": sequence.seed, "trajectory": sequence.trajectory, "kind": sequence.kind,
            "cameras": [c.name for c in sequence.cameras], "baseline_m": sequence.baseline,
            "frames": sequence.cameras[0].num_frames, "width": int(sequence.cameras[0].images.shape[2]),
            "height": int(sequence.cameras[0].images.shape[1]), "convention": GROUND_TRUTH_CONVENTION}
    written["scene"] = out / "scene.json"
    write_text_atomic(written["scene"], json.dumps(meta, indent=1))
    return written


def read_ground_truth(path: Path, images: np.ndarray, camera: str = "cam0") -> RenderedSequence:
    """One camera's ground truth from ``ground_truth.npz``, with the given frames [S, H, W, 3]."""
    try:
        with np.load(path) as data:
            truth = RenderedSequence(name=camera, images=images, depth=data[f"{camera}_depth"],
                                     extrinsics=data[f"{camera}_extrinsics"], intrinsics=data[f"{camera}_intrinsics"])
    except KeyError as exc:
        raise ValueError(f"{path}: no ground truth for camera {camera!r}") from exc
    if truth.depth.shape != images.shape[:3]:
        raise ValueError(f"{path}: ground truth is {truth.depth.shape}, the frames are {images.shape[:3]}")
    return truth


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
