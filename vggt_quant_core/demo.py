"""The demo: record a held-out generated scene as a rosbag2 file, reconstruct it, compare with the ground
truth, and write what a person looks at (cloud, picture, depth maps, summary).

The reconstruction step is a parameter of ``run_demo``: ``vggt-quant demo`` reads the bag and runs the ``infer``
pipeline on one window of all its frames (``reconstruct_recording``); ``vggt_quant_ros.demo`` plays the bag into
the ROS ``reconstruct`` node instead. Recording, scoring, the preview and the screen are shared. ``args`` are
the options of ``cli.demo`` (recording, model and output options); ``Recording`` says what else the bag holds
(a stereo partner, odometry, registered depth: what puts a map in metres). A reconstruction that says its map
is metric is scored on its scale too: the Sim(3) that aligns it to the ground truth has scale 1 when it is.
"""

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from .data import RenderedSequence, generate_sequence
from .data.bags import ODOMETRY_TOPIC, BagCamera, camera_info_topic, depth_topic, image_topic, read_bag
from .data.preprocess import default_height
from .data.trajectories import camera_centres
from .eval.evaluate import (BASELINE, Scored, align_extrinsics, format_accuracy_table, ground_truth_points, score,
                            trivial_prediction)
from .eval.metrics import pose_metrics
from .eval.trajectory import absolute_trajectory_error
from .export.colormap import colorize_depth
from .export.preview import Panel, Trajectory, render_preview
from .export.recording import read_ground_truth, write_scene
from .fileio import atomic_path, write_text_atomic
from .image_reconstruction import reconstruct_images
from .inference import colored_points, resolve_device
from .presets import DEFAULT_PRESET, get_preset, load_model

log = logging.getLogger("vggt_quant")

GROUND_TRUTH_COLOUR = (30, 160, 60)
ESTIMATE_COLOUR = (220, 50, 40)
CAMERAS = ("cam0", "cam1")


@dataclass(frozen=True)
class Recording:
    """What the recorded bag holds: ``cameras`` (2: cam1, the stereo partner, with its CameraInfo baseline),
    and the true ``odometry`` and registered ``depth`` of cam0 (``data.bags.write_bag``)."""

    cameras: int = 1
    odometry: bool = False
    depth: bool = False

    @property
    def topics(self) -> List[str]:
        cameras = [topic for camera in CAMERAS[:self.cameras] for topic in (image_topic(camera),
                                                                            camera_info_topic(camera))]
        return (cameras + ([ODOMETRY_TOPIC] if self.odometry else [])
                + ([depth_topic(CAMERAS[0])] if self.depth else []))


@dataclass
class DemoResult:
    """What a reconstruction step hands to the demo. The world frame and scale are the step's own: scoring
    aligns them to the ground truth with a Sim(3)."""

    frames: np.ndarray        # [S, H, W, 3] uint8, the recording's frames as read from the bag
    posed: np.ndarray         # [P] sorted indices of the frames with an estimated camera
    extrinsics: np.ndarray    # [P, 3, 4] their camera-from-world extrinsics (OpenCV axes)
    with_depth: np.ndarray    # [D] sorted indices of the frames with an estimated depth map (a subset of posed)
    depth: np.ndarray         # [D, H, W] their depth (NaN or <= 0: none)
    points: np.ndarray        # [D, H, W, 3] world points of their pixels
    cloud: np.ndarray         # [N, 3] float32, the cloud written to points.ply and drawn in the preview
    cloud_rgb: np.ndarray     # [N, 3] uint8
    method: str               # one line: how the recording was reconstructed
    timing: str               # one line: where the reconstruction's time went
    seconds: Dict[str, float]                              # into the summary's "seconds"
    details: Dict[str, Any] = field(default_factory=dict)  # into demo_summary.json
    units: str = "up to scale (VGGT's normalised units)"   # one line: what the map's unit is
    metric_source: Optional[str] = None                    # what put the map in metres; None: up to scale


# (bag, args, output folder, the model as presets.load_model returns it) -> result
Reconstruct = Callable[[Path, argparse.Namespace, Path, tuple], DemoResult]


def read_recording(bag: Path) -> BagCamera:
    """The frames of ``/cam0/image_raw`` in the rosbag2 ``bag``."""
    cameras = read_bag(bag)
    topic = image_topic("cam0")
    if topic not in cameras:
        raise ValueError(f"{bag}: no {topic} topic (found {', '.join(sorted(cameras)) or 'no image topics'})")
    return cameras[topic]


def reconstruct_recording(bag: Path, args: argparse.Namespace, out: Path, loaded) -> DemoResult:
    """Read ``/cam0/image_raw`` from the rosbag2 ``bag`` and reconstruct all its frames as one window with the
    ``infer`` pipeline (which writes ``out``)."""
    frames = read_recording(bag)
    topic = frames.topic
    names = [f"{bag}#{topic}@{stamp}" for stamp in frames.stamps_ns.tolist()]
    summary, recon = reconstruct_images(list(frames.images), args, out, {"recording": str(bag)}, names=names,
                                        loaded=loaded)
    cloud, cloud_rgb = colored_points(recon, args.conf_percentile, args.conf_min)   # as in points.ply
    every = np.arange(len(frames.images))
    seconds = summary["seconds"]
    return DemoResult(frames=frames.images, posed=every, extrinsics=recon.extrinsics, with_depth=every,
                      depth=recon.depth, points=recon.points, cloud=cloud, cloud_rgb=cloud_rgb,
                      method=f"the `infer` pipeline, all {len(every)} frames as one window",
                      timing=f"time per window ({len(every)} frames): {seconds['inference']:.2f} s inference, "
                             f"{seconds['load']:.2f} s image loading", seconds=seconds)


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _preview(truth: RenderedSequence, result: DemoResult, scored: Scored) -> np.ndarray:
    """Estimated cloud (Sim(3)-aligned to the ground truth) and true cloud, both with the true and the
    estimated trajectories, over the first frame with estimated depth, its true depth and its estimated depth."""
    valid = truth.depth > 0
    true_points = ground_truth_points(truth)[valid]
    true_colours = truth.images[valid]
    trajectories = [Trajectory("ground truth", truth.extrinsics.astype(np.float64), GROUND_TRUTH_COLOUR)]
    panels = []
    if scored.alignment is not None:
        aligned = scored.alignment.apply(torch.from_numpy(result.cloud.astype(np.float64))).numpy()
        trajectories.append(Trajectory("estimated (Sim(3)-aligned)",
                                       align_extrinsics(result.extrinsics.astype(np.float64), scored.alignment),
                                       ESTIMATE_COLOUR))
        panels.append(Panel("estimated cloud, aligned to ground truth", aligned, result.cloud_rgb))
    else:
        panels.append(Panel("estimated cloud degenerate: not drawn", true_points[:0], true_colours[:0]))
    panels.append(Panel("ground-truth cloud", true_points, true_colours))
    shown = int(result.with_depth[0])
    footer = [(f"input frame {shown}", truth.images[shown]), ("true depth", colorize_depth(truth.depth[shown])),
              ("estimated depth", colorize_depth(result.depth[0]))]
    return render_preview(panels, trajectories, footer)


def scale_scores(result: DemoResult, truth: RenderedSequence, scored: Scored) -> Dict[str, Any]:
    """How metric a metric map is: the scale of the Sim(3) aligning its cloud (``scored.alignment``) and its
    camera trajectory to the ground truth (1 when in metres), |scale - 1|, and the trajectory's ATE (RMSE of
    camera centres) after an SE(3) and a Sim(3) alignment, in metres (``eval.trajectory``); NaN where the
    estimate is degenerate (collapsed)."""
    map_scale = float(scored.alignment.scale) if scored.alignment is not None else math.nan
    estimated = camera_centres(result.extrinsics.astype(np.float64))
    true = camera_centres(truth.extrinsics[result.posed].astype(np.float64))
    try:
        se3, sim3 = (absolute_trajectory_error(estimated, true, metric=metric) for metric in (True, False))
    except ValueError:
        se3 = sim3 = {"sim3_scale": math.nan, "ate_rmse": math.nan}
    return {"source": result.metric_source, "map_sim3_scale": map_scale, "map_scale_error": abs(map_scale - 1),
            "trajectory_sim3_scale": se3["sim3_scale"], "trajectory_scale_error": abs(se3["sim3_scale"] - 1),
            "ate_se3_m": se3["ate_rmse"], "ate_sim3_m": sim3["ate_rmse"]}


def run_demo(args: argparse.Namespace, reconstruct: Reconstruct = reconstruct_recording,
             title: str = "vggt-quant demo", recording: Recording = Recording()) -> int:
    """Record (what ``recording`` says), reconstruct with ``reconstruct``, score against the ground truth next
    to the baseline (and the scale of a metric map), and write the preview, the ground-truth depth and
    ``demo_summary.json``; print the one-screen summary."""
    if args.frames < 2:
        raise ValueError("--frames must be at least 2")
    started = time.perf_counter()
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint, args.preset, device=device)
    model, trained_size, description = loaded
    patch = model.config.patch_size
    width = args.width or trained_size
    height = args.height or default_height(width, patch)
    if width < patch or height < patch or width % patch or height % patch:
        raise ValueError(f"--width and --height must be multiples of the patch size {patch} (the demo records at "
                         f"the model's input size, so no resizing blurs the comparison), got {width}x{height}")
    if getattr(args, "size", None) not in (None, width):
        raise ValueError("the demo records at the model's input size: use --width instead of --size")
    args.size = width

    folder = args.out / "recording"
    log.info("recording %d frames of %dx%d (seed %d, %s) into %s", args.frames, width, height, args.seed,
             args.trajectory, folder)
    sequence = generate_sequence(args.seed, args.frames, width, height, trajectory=args.trajectory,
                                 cameras=recording.cameras)
    written = write_scene(folder, sequence, images=False, bag=True, storage=args.storage,
                          odometry=recording.odometry, depth=recording.depth)
    recorded = time.perf_counter()

    result = reconstruct(written["bag"], args, args.out / "reconstruction", loaded)
    truth = read_ground_truth(written["ground_truth"], result.frames)
    frames = dict(posed=result.posed, with_depth=result.with_depth)
    model_scored = score(result.extrinsics, result.depth, result.points, truth, **frames)
    extrinsics, depth, points = trivial_prediction(truth)
    baseline_scored = score(extrinsics[result.posed], depth[result.with_depth], points[result.with_depth], truth,
                            **frames)
    for index, true_depth in enumerate(truth.depth):
        _write_png(args.out / "ground_truth" / "depth" / f"frame_{index:03d}.png", colorize_depth(true_depth))
    _write_png(args.out / "preview.png", _preview(truth, result, model_scored))

    metrics = {name: {**pose_metrics(s.rotation_errors, s.translation_errors), **s.metrics}
               for name, s in (("model", model_scored), (BASELINE, baseline_scored))}
    untrained = args.checkpoint is None and get_preset(args.preset or DEFAULT_PRESET).weights is None
    report = {"model_name": description, "untrained": untrained, "reconstruction": result.method,
              "recording": str(written["bag"]), "frames": args.frames, "image_size_wh": [width, height],
              "seed": args.seed, "trajectory": args.trajectory, "scene_kind": sequence.kind,
              "frames_posed": result.posed.tolist(), "frames_with_depth": result.with_depth.tolist(),
              "points": len(result.cloud), "recording_topics": recording.topics, "map_units": result.units,
              **metrics, **({"metric_scale": scale_scores(result, truth, model_scored)} if result.metric_source
                            else {}), **result.details,
              "seconds": {"record": round(recorded - started, 3), **result.seconds,
                          "total": round(time.perf_counter() - started, 3)}}
    write_text_atomic(args.out / "demo_summary.json", json.dumps(report, indent=1))
    print(_screen(report, args.out, result, title))
    return 0


def _scope(report: dict) -> str:
    posed, with_depth = report["frames_posed"], report["frames_with_depth"]
    if len(posed) == len(with_depth) == report["frames"]:
        return f"all {report['frames']} frames"
    return (f"poses of {len(posed)} frames, depth and points of frame{'s' if len(with_depth) > 1 else ''} "
            + ", ".join(map(str, with_depth)))


def _scale_lines(scale: Optional[Dict[str, Any]]) -> str:
    if scale is None:
        return ""
    return (f"\nscale error vs ground truth (Sim(3) scale, 1 = metric): map {scale['map_sim3_scale']:.4f} "
            f"({100 * scale['map_scale_error']:.1f} %), trajectory {scale['trajectory_sim3_scale']:.4f} "
            f"({100 * scale['trajectory_scale_error']:.1f} %)\n"
            f"trajectory error (ATE RMSE): {scale['ate_se3_m']:.4f} m after SE(3) alignment, "
            f"{scale['ate_sim3_m']:.4f} m after Sim(3)")


def _screen(report: dict, out: Path, result: DemoResult, title: str) -> str:
    """The one-screen summary."""
    warning = ("\nNOTE: the default model is UNTRAINED (random weights): the pipeline and pictures are real, the "
               "numbers are not.\n" if report["untrained"] else "")
    depth_frames = len(report["frames_with_depth"])
    depth_frames = f"{depth_frames} frame{'' if depth_frames == 1 else 's'}"
    return (f"{title}: {report['model_name']}, {report['frames']} frames {report['image_size_wh'][0]}x"
            f"{report['image_size_wh'][1]} ({report['trajectory']} in a {report['scene_kind']}, seed {report['seed']})"
            f"{warning}\nreconstructed by {result.method}\n"
            f"accuracy vs ground truth ({_scope(report)}; baseline: identity poses, constant depth):\n"
            + format_accuracy_table(report)
            + f"\nmap: {report['map_units']}" + _scale_lines(report.get("metric_scale"))
            + f"\n{result.timing}; whole demo {report['seconds']['total']:.1f} s\n"
            f"outputs in {out}/:\n"
            f"  recording/bag/            rosbag2: {', '.join(report['recording_topics'])}; "
            f"+ recording/ground_truth.npz\n"
            f"  preview.png               estimated vs true cloud and camera trajectories\n"
            f"  reconstruction/points.ply {report['points']} points (MeshLab, CloudCompare)\n"
            f"  reconstruction/depth/     estimated depth PNG/NPY ({depth_frames}); "
            f"ground_truth/depth/ the true depth\n"
            f"  demo_summary.json         all metrics and timings")
