"""The demos' shared part: record a held-out generated scene as a rosbag2 file, reconstruct it, compare with the
ground truth next to a trivial baseline, write the preview and ``demo_summary.json``, print one screen.

``vggt-quant demo`` reconstructs the bag with the streaming library (``reconstruct_with_library``: the bag's
messages through a ``StreamReconstructor`` with the node's parameter file); ``vggt_quant_ros.demo`` plays the
bag into the ROS ``reconstruct`` node instead, over the same windows, so both score the same kind of
reconstruction. ``DemoOptions`` are the options of both; ``Recording`` says what else the bag holds for a
scale source (a stereo partner, odometry, registered depth). A reconstruction that says its map is metric is
scored on its scale too: the Sim(3) that aligns it to the ground truth has scale 1 when it is.
"""

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .data import HELD_OUT_SEED_BASE, RenderedSequence, generate_sequence
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
from .geometry import unproject_depth_map_to_point_map
from .inference import resolve_device
from .presets import DEFAULT_PRESET, get_preset, load_model
from .stream import StreamSettings, default_parameter_file, estimator_from_model, read_parameter_file
from .stream.metric_scale import SCALE_SOURCES, scale_mode
from .stream.reconstructor import camera_from_map
from .stream.runner import reconstruct_stream
from .stream.sources import bag_recording
from .stream.window_processor import PathPose

log = logging.getLogger("vggt_quant")

GROUND_TRUTH_COLOUR = (30, 160, 60)
ESTIMATE_COLOUR = (220, 50, 40)
CAMERAS = ("cam0", "cam1")


@dataclass(frozen=True)
class DemoOptions:
    """The demos' options (``console.add_demo_arguments``)."""

    out: Path = Path("outputs/demo")
    frames: int = 16                      # three windows of 8 keyframes every 4 with config/reconstruct.yaml
    width: Optional[int] = None           # recording size; None: the model's input width, 3/4 of it high
    height: Optional[int] = None
    seed: int = HELD_OUT_SEED_BASE + 7
    trajectory: str = "orbit"
    storage: str = "mcap"
    params_file: Optional[Path] = None    # the node's parameters; None: config/reconstruct.yaml
    scale_source: Optional[str] = None    # None: the parameter file's
    checkpoint: Optional[Path] = None     # None and no preset: the parameter file's model
    preset: Optional[str] = None
    device: str = "auto"
    precision: str = "auto"


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


# what each scale_source needs in the recording
SCALE_RECORDINGS = {"none": Recording(), "stereo": Recording(cameras=2), "odometry": Recording(odometry=True),
                    "depth": Recording(depth=True)}


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


@dataclass
class DemoRun:
    """What a reconstruction step gets: the recorded ``bag``, the folder to write, the model (as
    ``presets.load_model`` returns it) and the node's ``parameters`` for this recording."""

    bag: Path
    out: Path
    options: DemoOptions
    loaded: tuple
    parameters: Dict[str, Any]
    params_file: Path

    def method(self, runner: str, processed: int, dropped: int, failed: int) -> str:
        values = self.parameters
        return (f"{runner} ({self.params_file.name}: windows of {values['window_size']} keyframes every "
                f"{values['window_stride']}): {processed} window{'' if processed == 1 else 's'} processed, "
                f"{dropped} dropped, {failed} failed")


Reconstruct = Callable[[DemoRun], DemoResult]


@dataclass
class StreamOutputs:
    """A streaming reconstruction's outputs as the demos collect them: camera 0's path, the depth of each
    window's newest camera-0 frame (stamp, depth [H, W] in map units, intrinsics [3, 3]) and the map."""

    path: List[PathPose]
    depth: List[Tuple[int, np.ndarray, np.ndarray]]
    cloud: np.ndarray        # [N, 3] float32
    cloud_rgb: np.ndarray    # [N, 3] uint8


def read_recording(bag: Path) -> BagCamera:
    """The frames of ``/cam0/image_raw`` in the rosbag2 ``bag``."""
    cameras = read_bag(bag)
    topic = image_topic("cam0")
    if topic not in cameras:
        raise ValueError(f"{bag}: no {topic} topic (found {', '.join(sorted(cameras)) or 'no image topics'})")
    return cameras[topic]


def scale_source_of(params: Dict[str, Any], options: DemoOptions) -> str:
    """``--scale-source``, else the parameter file's ``scale_source``."""
    source = options.scale_source or params.get("scale_source", "none")
    if source not in SCALE_SOURCES:
        raise ValueError(f"scale_source is {source!r}; expected one of {', '.join(SCALE_SOURCES)}")
    return source


def input_parameters(source: str, intrinsics_source: str) -> Dict[str, Any]:
    """The node's inputs for ``source`` on the recording's topics (a launch file would remap them instead);
    CameraInfo when the node uses it (camera 1's projection gives the stereo baseline)."""
    cameras = list(CAMERAS[:SCALE_RECORDINGS[source].cameras])
    infos = source == "stereo" or intrinsics_source == "camera_info"
    inputs = {"scale_source": source, "image_topics": [image_topic(c) for c in cameras], "camera_names": cameras,
              "camera_info_topics": [camera_info_topic(c) for c in cameras] if infos else []}
    if source == "odometry":
        return {**inputs, "odometry_topic": ODOMETRY_TOPIC, "odometry_frame": ""}
    if source == "depth":
        return {**inputs, "depth_topic": depth_topic(CAMERAS[0]), "depth_camera": 0}
    return inputs


def demo_parameters(params: Dict[str, Any], options: DemoOptions, width: int) -> Dict[str, Any]:
    """The parameter file's values, with what the demo must override."""
    return {**params,
            **input_parameters(scale_source_of(params, options), params.get("intrinsics_source", "predicted")),
            # the model the demo loaded is used (not loaded twice); named here for diagnostics
            "checkpoint": str(options.checkpoint or ""), **({} if options.checkpoint else {"preset": options.preset}),
            "device": options.device, "precision": options.precision,
            # the demo records at the model's input size: no resizing, depth compares pixel for pixel
            "image_size": width,
            # the ROS player holds the next image while a window is processed: that silence is no stalled camera
            "camera_timeout_s": 3600.0}


def collect_result(frames: np.ndarray, stamps_ns: np.ndarray, outputs: StreamOutputs
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outputs as frame-indexed arrays: posed [P], extrinsics [P, 3, 4] (camera-from-map), with_depth [D],
    depth [D, H, W] and world points [D, H, W, 3] (the depth unprojected with those poses, as the cloud is)."""
    stamps = {int(stamp): index for index, stamp in enumerate(stamps_ns.tolist())}

    def frame_index(stamp: int) -> int:
        if stamp not in stamps:
            raise ValueError(f"the reconstruction gave an output stamped {stamp} ns, which is no frame of the "
                             "recording")
        return stamps[stamp]

    posed_poses = sorted((frame_index(pose.stamp_ns), camera_from_map(pose)) for pose in outputs.path)
    posed = np.array([index for index, _ in posed_poses])
    extrinsics = np.stack([extrinsic for _, extrinsic in posed_poses])
    depth_maps = sorted((frame_index(stamp), depth, k) for stamp, depth, k in outputs.depth)
    with_depth = np.array([index for index, _, _ in depth_maps])
    depth = np.stack([d for _, d, _ in depth_maps]).astype(np.float32)
    if depth.shape[1:] != frames.shape[1:3]:
        raise ValueError(f"the reconstruction's depth is {depth.shape[2]}x{depth.shape[1]}, the recording "
                         f"{frames.shape[2]}x{frames.shape[1]}: record at the model's input size")
    at = np.searchsorted(posed, with_depth)
    intrinsics = np.stack([k for _, _, k in depth_maps]).astype(np.float64)
    points = unproject_depth_map_to_point_map(torch.from_numpy(depth).double(), torch.from_numpy(extrinsics[at]),
                                              torch.from_numpy(intrinsics)).numpy()
    return posed, extrinsics, with_depth, depth, points


def stream_result(run: DemoRun, outputs: StreamOutputs, windows: List[Dict[str, Any]], runner: str,
                  counts: Tuple[int, int, int], units: str, seconds: Dict[str, float],
                  details: Dict[str, Any]) -> DemoResult:
    """A ``DemoResult`` from a streaming reconstruction's outputs; ``windows``: per processed window its last
    frame and stage timings (``inference_ms``, ``overhead_ms``); ``counts``: windows processed, dropped, failed;
    ``details``: the runner's report for ``demo_summary.json``."""
    recording = read_recording(run.bag)
    posed, extrinsics, with_depth, depth, points = collect_result(recording.images, recording.stamps_ns, outputs)
    inference = [w["inference_ms"] for w in windows]
    overhead = [w["overhead_ms"] for w in windows]
    metric = units == scale_mode(run.parameters["scale_source"], metric=True)["scale_mode"]
    return DemoResult(
        frames=recording.images, posed=posed, extrinsics=extrinsics, with_depth=with_depth, depth=depth,
        points=points, cloud=outputs.cloud, cloud_rgb=outputs.cloud_rgb, method=run.method(runner, *counts),
        # median: the first window carries one-off set-up (the middleware's, the allocator's)
        timing=f"time per window (median of {len(windows)}): {np.median(inference):.0f} ms inference, "
               f"{np.median(overhead):.0f} ms overhead (preprocessing, mapping, output)",
        seconds={**seconds, "inference": round(sum(inference) / 1000, 3), "overhead": round(sum(overhead) / 1000, 3)},
        details=details, units=units,
        metric_source=run.parameters["scale_source"] if metric else None)


def reconstruct_with_library(run: DemoRun) -> DemoResult:
    """Stream the bag's messages that the node would subscribe to through a ``StreamReconstructor`` with the
    node's parameters (``stream.runner``, which writes ``run.out``)."""
    values = run.parameters
    if run.options.frames < values["window_size"]:
        raise ValueError(f"--frames {run.options.frames} is fewer than the node's window_size "
                         f"{values['window_size']} ({run.params_file}): the node would make no window")
    settings = StreamSettings.from_parameters(values, cameras=len(values["image_topics"]))
    model, trained_size, description = run.loaded
    estimator = estimator_from_model(model, trained_size, description, run.options.precision)
    source = bag_recording(run.bag, values["image_topics"], odometry_topic=values.get("odometry_topic", "")
                           if settings.scale_source == "odometry" else "",
                           depth_topic=values.get("depth_topic", "") if settings.scale_source == "depth" else "")
    depth, windows = [], []

    def on_window(result) -> None:
        result.clock.finish()
        view = result.depth[0]
        depth.append((view.frame.stamp_ns, view.depth, view.intrinsics))
        windows.append({"last_frame": view.frame.index, **{f"{stage}_ms": round(ms, 2)
                                                           for stage, ms in result.clock.wall_ms.items()}})

    started = time.perf_counter()
    recon = reconstruct_stream(source, settings, estimator, run.out, on_window=on_window,
                               extra_summary={"recording": str(run.bag)})
    xyz, rgb, _ = recon.cloud()
    counts = recon.counts
    return stream_result(run, StreamOutputs(recon.trajectory, depth, xyz, rgb), windows,
                         "the streaming reconstruction", (counts.processed, 0, counts.failed),
                         recon.processor.scale.status(settings.scale_source)["scale_mode"],
                         {"stream": round(time.perf_counter() - started, 3)},
                         {"stream": {"params_file": str(run.params_file), "parameters": values,
                                     "counts": dataclasses.asdict(counts), "map_points": len(xyz),
                                     "scale": recon.processor.scale.status(settings.scale_source),
                                     "windows": windows}})


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


def run_demo(args: DemoOptions, reconstruct: Reconstruct = reconstruct_with_library,
             title: str = "vggt-quant demo") -> int:
    """Record what the scale source needs (``SCALE_RECORDINGS``), reconstruct with ``reconstruct``, score against
    the ground truth next to the baseline (and the scale of a metric map), and write the preview, the
    ground-truth depth and ``demo_summary.json``; print the one-screen summary."""
    if args.frames < 2:
        raise ValueError("--frames must be at least 2")
    started = time.perf_counter()
    params_file = args.params_file or default_parameter_file()
    params = read_parameter_file(params_file)
    if args.checkpoint is None and args.preset is None:   # the model of the parameter file
        checkpoint = Path(params["checkpoint"]) if params.get("checkpoint") else None
        args = dataclasses.replace(args, checkpoint=checkpoint,
                                   preset=None if checkpoint else params.get("preset") or None)
    recording = SCALE_RECORDINGS[scale_source_of(params, args)]
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint, args.preset, device=device)
    model, trained_size, description = loaded
    patch = model.config.patch_size
    width = args.width or trained_size
    height = args.height or default_height(width, patch)
    if width < patch or height < patch or width % patch or height % patch:
        raise ValueError(f"--width and --height must be multiples of the patch size {patch} (the demo records at "
                         f"the model's input size, so no resizing blurs the comparison), got {width}x{height}")

    folder = args.out / "recording"
    log.info("recording %d frames of %dx%d (seed %d, %s) into %s", args.frames, width, height, args.seed,
             args.trajectory, folder)
    sequence = generate_sequence(args.seed, args.frames, width, height, trajectory=args.trajectory,
                                 cameras=recording.cameras)
    written = write_scene(folder, sequence, images=False, bag=True, storage=args.storage,
                          odometry=recording.odometry, depth=recording.depth)
    recorded = time.perf_counter()

    result = reconstruct(DemoRun(written["bag"], args.out / "reconstruction", args, loaded,
                                 demo_parameters(params, args, width), params_file))
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
