"""``vggt-quant demo``: record a held-out generated scene as a rosbag2 file, reconstruct it, compare with
the ground truth, and write what a person looks at (cloud, picture, depth maps, summary).

The reconstruction step reads the bag and runs the ``infer`` pipeline on one window of all its frames
(``reconstruct_recording``); it is the one place to swap for the ROS ``reconstruct`` node.
"""

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from PIL import Image

from ..data import HELD_OUT_SEED_BASE, TRAJECTORIES, RenderedSequence, generate_sequence
from ..data.bags import STORAGES, image_topic, read_bag
from ..eval.evaluate import (BASELINE, HEADLINE_METRICS, Scored, align_extrinsics, ground_truth_points, score,
                             trivial_prediction)
from ..eval.metrics import pose_metrics
from ..export.colormap import colorize_depth
from ..export.preview import Panel, Trajectory, render_preview
from ..fileio import atomic_path, write_text_atomic
from ..inference import Reconstruction, colored_points, resolve_device
from ..presets import DEFAULT_PRESET, get_preset, load_model
from .eval import default_height
from .infer import add_model_arguments, add_output_arguments, reconstruct_images
from .scenes import read_ground_truth, write_scene

log = logging.getLogger("vggt_quant")

GROUND_TRUTH_COLOUR = (30, 160, 60)
ESTIMATE_COLOUR = (220, 50, 40)


def add_parser(commands) -> None:
    parser = commands.add_parser("demo", help="record a synthetic scene as a rosbag2, reconstruct it, compare",
                                 description="Render a held-out procedural scene, record it as a rosbag2 file, "
                                             "reconstruct it from the bag, and compare with the ground truth.")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory")
    parser.add_argument("--frames", type=int, default=10, help="frames in the recording (one window)")
    parser.add_argument("--width", type=int, help="recording width (default: the model's input width)")
    parser.add_argument("--height", type=int, help="recording height (default: 3/4 of the width)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 7, help="scene seed (default: held out)")
    parser.add_argument("--trajectory", default="orbit", choices=sorted(TRAJECTORIES))
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="rosbag2 storage plugin")
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(run=run)


def reconstruct_recording(bag: Path, args: argparse.Namespace, out: Path,
                          loaded) -> Tuple[np.ndarray, dict, Reconstruction]:
    """Read ``/cam0/image_raw`` from the rosbag2 ``bag`` and reconstruct all its frames as one window.

    Returns the frames [S, H, W, 3] uint8, the ``infer`` summary and the reconstruction.
    """
    cameras = read_bag(bag)
    topic = image_topic("cam0")
    if topic not in cameras:
        raise ValueError(f"{bag}: no {topic} topic (found {', '.join(sorted(cameras)) or 'no image topics'})")
    frames = cameras[topic]
    names = [f"{bag}#{topic}@{stamp}" for stamp in frames.stamps_ns.tolist()]
    summary, recon = reconstruct_images(list(frames.images), args, out, {"recording": str(bag)}, names=names,
                                        loaded=loaded)
    return frames.images, summary, recon


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _preview(truth: RenderedSequence, recon: Reconstruction, scored: Scored, args) -> np.ndarray:
    """Predicted cloud (Sim(3)-aligned to the ground truth) and true cloud, both with the true and the
    estimated trajectories, over the first frame, its true depth and its predicted depth."""
    valid = truth.depth > 0
    true_points = ground_truth_points(truth)[valid]
    true_colours = truth.images[valid]
    trajectories = [Trajectory("ground truth", truth.extrinsics.astype(np.float64), GROUND_TRUTH_COLOUR)]
    panels = []
    if scored.alignment is not None:
        points, colours = colored_points(recon, args.conf_percentile, args.conf_min)
        aligned = scored.alignment.apply(torch.from_numpy(points.astype(np.float64))).numpy()
        trajectories.append(Trajectory("estimated (Sim(3)-aligned)",
                                       align_extrinsics(recon.extrinsics.astype(np.float64), scored.alignment),
                                       ESTIMATE_COLOUR))
        panels.append(Panel("estimated cloud, aligned to ground truth", aligned, colours))
    else:
        panels.append(Panel("estimated cloud degenerate: not drawn", true_points[:0], true_colours[:0]))
    panels.append(Panel("ground-truth cloud", true_points, true_colours))
    footer = [("input frame 0", truth.images[0]), ("true depth", colorize_depth(truth.depth[0])),
              ("estimated depth", colorize_depth(recon.depth[0]))]
    return render_preview(panels, trajectories, footer)


def run(args: argparse.Namespace) -> int:
    if args.frames < 2:
        raise ValueError("--frames must be at least 2")
    started = time.perf_counter()
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint, args.preset, device=device)
    model, trained_size, description = loaded
    patch = model.config.patch_size
    width = args.width or trained_size
    height = args.height or default_height(width, patch)
    if width % patch or height % patch:
        raise ValueError(f"--width and --height must be multiples of the patch size {patch} (the demo records at "
                         f"the model's input size, so no resizing blurs the comparison), got {width}x{height}")
    if args.size not in (None, width):
        raise ValueError("the demo records at the model's input size: use --width instead of --size")
    args.size = width

    recording = args.out / "recording"
    log.info("recording %d frames of %dx%d (seed %d, %s) into %s", args.frames, width, height, args.seed,
             args.trajectory, recording)
    sequence = generate_sequence(args.seed, args.frames, width, height, trajectory=args.trajectory)
    written = write_scene(recording, sequence, images=False, bag=True, storage=args.storage)
    recorded = time.perf_counter()

    frames, summary, recon = reconstruct_recording(written["bag"], args, args.out / "reconstruction", loaded)
    truth = read_ground_truth(written["ground_truth"], frames)
    model_scored = score(recon.extrinsics, recon.depth, recon.points, truth)
    baseline_scored = score(*trivial_prediction(truth), truth)
    for index, depth in enumerate(truth.depth):
        _write_png(args.out / "ground_truth" / "depth" / f"frame_{index:03d}.png", colorize_depth(depth))
    _write_png(args.out / "preview.png", _preview(truth, recon, model_scored, args))

    metrics = {name: {**pose_metrics(s.rotation_errors, s.translation_errors), **s.metrics}
               for name, s in (("model", model_scored), (BASELINE, baseline_scored))}
    untrained = args.checkpoint is None and get_preset(args.preset or DEFAULT_PRESET).weights is None
    report = {"model_name": description, "untrained": untrained,
              "recording": str(written["bag"]), "frames": args.frames, "image_size_wh": [width, height],
              "seed": args.seed, "trajectory": args.trajectory, "scene_kind": sequence.kind, **metrics,
              "seconds": {"record": round(recorded - started, 3), **summary["seconds"],
                          "total": round(time.perf_counter() - started, 3)}}
    write_text_atomic(args.out / "demo_summary.json", json.dumps(report, indent=1))
    print(_screen(report, args.out, summary))
    return 0


def _screen(report: dict, out: Path, summary: dict) -> str:
    """The one-screen summary."""
    rows = [f"{'':<22}{'model':>10}{'baseline':>10}"]
    for name in HEADLINE_METRICS:
        values = [report[key][name] for key in ("model", BASELINE)]
        rows.append(f"{name:<22}" + "".join("       nan" if math.isnan(v) else f"{v:>10.3f}" for v in values))
    seconds = report["seconds"]
    warning = ("\nNOTE: the default model is UNTRAINED (random weights): the pipeline and pictures are real, the "
               "numbers are not.\n" if report["untrained"] else "")
    return (f"vggt-quant demo: {report['model_name']}, {report['frames']} frames {report['image_size_wh'][0]}x"
            f"{report['image_size_wh'][1]} ({report['trajectory']} in a {report['scene_kind']}, seed {report['seed']})"
            f"{warning}\naccuracy vs ground truth (baseline: identity poses, constant depth):\n" + "\n".join(rows)
            + f"\ntime per window ({report['frames']} frames): {seconds['inference']:.2f} s inference, "
            f"{seconds['load']:.2f} s image loading; whole demo {seconds['total']:.1f} s\n"
            f"outputs in {out}/:\n"
            f"  recording/bag/            rosbag2: /cam0/image_raw, /cam0/camera_info; + recording/ground_truth.npz\n"
            f"  preview.png               estimated vs true cloud and camera trajectories\n"
            f"  reconstruction/points.ply {summary['points']} points (MeshLab, CloudCompare)\n"
            f"  reconstruction/depth/     estimated depth PNG/NPY; ground_truth/depth/ the true depth\n"
            f"  demo_summary.json         all metrics and timings")
