"""Long runs through the ROS ``reconstruct`` node: trajectory error and metric scale per scale source.

Generated sequences of 200+ frames (a stereo rig moving along the generator's trajectories) are recorded as
rosbag2 files with everything a scale source can use (both cameras and their CameraInfo, the true camera
pose on ``/odom``, the true depth registered to cam0 in millimetres) and played into an in-process
``ReconstructNode`` by the player of ``reconstruct-demo`` (``vggt_quant_ros.demo.play``): each topic the node
subscribes to in stamp order, paced so that no window is dropped (what is measured does not depend on the
machine's speed). ``none`` plays camera 0 only.

From the node's final ``~/path`` (camera 0 at every keyframe): ATE after an SE(3) alignment when the map is
metric and Sim(3) otherwise, the Sim(3) scale (1 = a correct metric scale; the scale error is |s - 1|), and
the relative pose error per 100 frames; from its ``~/depth/cam0`` the map's unit seen in depth. Models:
``truth`` (``eval.oracle.TrueGeometryModel`` at a random scale per window: pure chaining and scale
estimation), ``truth-drift`` (the same with the scale growing by ``--drift`` per frame within each window, so
that chaining drifts as a real model's does) and ``default`` (the shipped preset).

    python benchmarks/long_run.py --frames 200 --json benchmarks/results/long_run.json
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from rclpy.parameter import Parameter

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.bags import write_bag
from vggt_quant_core.data.scenes import SceneSequence
from vggt_quant_core.eval.oracle import TrueGeometryModel
from vggt_quant_core.eval.trajectory import absolute_trajectory_error, relative_pose_error
from vggt_quant_core.fileio import write_text_atomic
from vggt_quant_core.geometry import closed_form_inverse_se3
from vggt_quant_core.presets import DEFAULT_PRESET, load_model
from vggt_quant_ros import conversions
from vggt_quant_core.demo import input_parameters
from vggt_quant_core.stream.estimator import Estimator, estimator_from_model
from vggt_quant_core.stream.metric_scale import SCALE_SOURCES
from vggt_quant_core.stream.reconstructor import camera_from_map
from vggt_quant_ros.demo import NodeOutputs, node_outputs, play, private_graph
from vggt_quant_ros.reconstruct_node import ReconstructNode

MODELS = ("truth", "truth-drift", "default")
WINDOW_SCALES = (0.7, 1.3, 0.9, 1.1, 0.45, 2.1)   # the true-geometry double's model units per metre, cycled


def _camera_to_world(extrinsics: np.ndarray) -> np.ndarray:
    """[N, 4, 4] camera-to-world of camera-from-world extrinsics [N, 3, 4]."""
    return closed_form_inverse_se3(torch.from_numpy(np.asarray(extrinsics, np.float64))).numpy()


def run(bag: Path, sequence: SceneSequence, estimator: Estimator, source: str, window_size: int,
        window_stride: int) -> Dict:
    """One run: the bag into a fresh node; returns its trajectory errors and final scale diagnostics."""
    values = {**input_parameters(source, "predicted"), "image_size": int(sequence.cameras[0].images.shape[2]),
              "window_size": window_size, "window_stride": window_stride, "camera_timeout_s": 3600.0,
              "sync_slop_s": 0.01, "tf_mode": "none"}
    started = time.perf_counter()
    with private_graph() as (context, executor, player):
        outputs = NodeOutputs(player)
        node = ReconstructNode(lambda **_: estimator, context=context,
                               parameter_overrides=[Parameter(k, value=v) for k, v in values.items() if v != []])
        executor.add_node(node)
        play(bag, values, player, node, outputs)
        stats = node.stats()
    index_of = {int(stamp): i for i, stamp in enumerate(sequence.timestamps_ns.tolist())}
    path = node_outputs(outputs, index_of).path
    steps = [pose.index for pose in path]
    estimated = _camera_to_world(np.stack([camera_from_map(pose) for pose in path]))
    truth = _camera_to_world(sequence.cameras[0].extrinsics[steps].astype(np.float64))
    metric = stats.scale.get("scale_mode", "").startswith("metric")
    ate = absolute_trajectory_error(estimated[:, :3, 3], truth[:, :3, 3], metric=metric)
    rpe = relative_pose_error(estimated, truth, delta=min(100, len(steps) - 1),
                              scale=1.0 if metric else ate["sim3_scale"])
    # the map's unit seen in its depth images (independent of the poses): published / true depth
    depth_scale = float(np.median([np.nanmedian(conversions.depth_from_image(msg) / sequence.cameras[0].depth[
        index_of[conversions.stamp_to_ns(msg.header.stamp)]]) for msg in outputs.depth]))
    return {"source": source, "metric": metric, "poses": len(steps), "windows": stats.windows_processed,
            "failed_windows": stats.failed_windows, **ate,
            "scale_error": abs(ate["sim3_scale"] - 1) if metric else None, "depth_scale": depth_scale,
            "depth_scale_error": abs(depth_scale - 1) if metric else None, **rpe,
            "travelled_m": float(np.linalg.norm(np.diff(truth[:, :3, 3], axis=0), axis=1).sum()),
            "scale": stats.scale, "seconds": round(time.perf_counter() - started, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--trajectories", nargs="+", default=["orbit", "forward"])
    parser.add_argument("--sources", nargs="+", default=list(SCALE_SOURCES), choices=SCALE_SOURCES)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--drift", type=float, default=0.01, help="truth-drift: scale growth per frame in a window")
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--height", type=int, default=84)
    parser.add_argument("--window-size", type=int, default=8)
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    model, _, description = load_model(None, DEFAULT_PRESET)
    default = estimator_from_model(model, args.width, description)
    runs = []
    scratch = tempfile.TemporaryDirectory(prefix="long_run.")
    for seed, trajectory in zip(args.seeds, args.trajectories):
        sequence = generate_sequence(seed, args.frames, args.width, args.height, trajectory=trajectory, cameras=2)
        bag = write_bag(Path(scratch.name) / f"seed{seed}", sequence, odometry=True, depth=True)
        for name in args.models:
            for source in args.sources:
                drift = args.drift if name == "truth-drift" else 0.0
                estimator = default if name == "default" else Estimator(
                    predict=TrueGeometryModel.of(sequence, WINDOW_SCALES, drift).predict, image_size=args.width,
                    description=f"true geometry, drift {drift}", backend="cpu fp32", bits=32)
                result = {"seed": seed, "trajectory": trajectory, "model": name,
                          **run(bag, sequence, estimator, source, args.window_size, args.window_stride)}
                print(json.dumps({k: v for k, v in result.items() if k != "scale"}), file=sys.stderr, flush=True)
                runs.append(result)
    report = {"command": "python benchmarks/long_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "frames": args.frames, "image_wh": [args.width, args.height], "window_size": args.window_size,
              "drift": args.drift,
              "window_stride": args.window_stride, "default_model": description, "runs": runs}
    text = json.dumps(report, indent=1)
    if args.json:
        write_text_atomic(args.json, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
