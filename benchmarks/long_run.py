"""Long runs through the ROS ``reconstruct`` node: trajectory error and metric scale per scale source.

Generated sequences of 200+ frames (a stereo rig moving along the generator's trajectories) are published
over rclpy into an in-process ``ReconstructNode``, one time step at a time, paced so that no window is
dropped (what is measured does not depend on the machine's speed). Each source gets what it needs: stereo
both cameras and camera 1's CameraInfo (Tx = -fx * baseline), odometry a ``nav_msgs/Odometry`` at each
frame (the true camera centre in an ``odom`` frame of its own origin), depth a registered 16UC1 depth image
(true depth, millimetres); ``none`` only camera 0.

From the node's final ``~/path`` (camera 0 at every keyframe): ATE after an SE(3) alignment when the map is
metric and Sim(3) otherwise, the Sim(3) scale (1 = a correct metric scale; the scale error is |s - 1|), and
the relative pose error per 100 frames. Models: ``truth`` (``eval.oracle.TrueGeometryModel`` at a random
scale per window: pure chaining and scale estimation), ``truth-drift`` (the same with the scale growing by
``--drift`` per frame within each window, so that chaining drifts as a real model's does) and ``default``
(the shipped preset).

    python benchmarks/long_run.py --frames 200 --json benchmarks/results/long_run.json
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from nav_msgs.msg import Odometry, Path as PathMessage
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.scenes import SceneSequence
from vggt_quant_core.data.trajectories import camera_centres
from vggt_quant_core.eval.oracle import TrueGeometryModel
from vggt_quant_core.eval.trajectory import absolute_trajectory_error, relative_pose_error
from vggt_quant_core.fileio import write_text_atomic
from vggt_quant_core.geometry import quat_to_mat
from vggt_quant_core.presets import DEFAULT_PRESET, load_model
from vggt_quant_ros import conversions
from vggt_quant_ros.demo import private_graph
from vggt_quant_ros.estimator import Estimator, estimator_from_model
from vggt_quant_ros.metric_scale import SCALE_SOURCES
from vggt_quant_ros.reconstruct_node import ReconstructNode

TIMEOUT_S = 600.0
MODELS = ("truth", "truth-drift", "default")
WINDOW_SCALES = (0.7, 1.3, 0.9, 1.1, 0.45, 2.1)   # the true-geometry double's model units per metre, cycled
ODOM_ORIGIN = np.array([5.0, -2.0, 0.3])   # the odometry frame is not the map: only distances matter


def _wait(predicate, what: str, node: ReconstructNode) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if node.fatal.done():
            raise RuntimeError(f"the node stopped: {node.fatal.result()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _image(rgb: np.ndarray, stamp: int, frame_id: str) -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=3 * rgb.shape[1])
    msg.header = conversions.header(frame_id, stamp)
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def _messages(sequence: SceneSequence, source: str, step: int) -> List[tuple]:
    """(topic index, message) of one time step for ``source``; topic 0/1: images, 2: odometry, 3: depth."""
    stamp = int(sequence.timestamps_ns[step])
    cam0 = sequence.cameras[0]
    out = []
    if source == "odometry":
        odom = Odometry()
        odom.header = conversions.header("odom", stamp)
        centre = camera_centres(cam0.extrinsics[step:step + 1].astype(np.float64))[0] + ODOM_ORIGIN
        odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.position.z = (float(v) for v in centre)
        out.append((2, odom))
    if source == "depth":
        millimetres = np.round(cam0.depth[step] * 1000).astype("<u2")
        depth = Image(height=millimetres.shape[0], width=millimetres.shape[1], encoding="16UC1", is_bigendian=0,
                      step=2 * millimetres.shape[1])
        depth.header = conversions.header("cam0_optical_frame", stamp)
        depth.data = millimetres.tobytes()
        out.append((3, depth))
    out.append((0, _image(cam0.images[step], stamp, "cam0_optical_frame")))
    if source == "stereo":
        out.append((1, _image(sequence.cameras[1].images[step], stamp, "cam1_optical_frame")))
    return out


def _camera_to_map(pose) -> np.ndarray:
    q = pose.orientation
    out = np.eye(4)
    out[:3, :3] = quat_to_mat(torch.tensor([q.x, q.y, q.z, q.w], dtype=torch.float64)).numpy()
    out[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    return out


def play(sequence: SceneSequence, estimator: Estimator, source: str, window_size: int, window_stride: int
         ) -> Dict:
    """One run: the sequence into a fresh node; returns its trajectory errors and final scale diagnostics."""
    width = sequence.cameras[0].images.shape[2]
    cameras = 2 if source == "stereo" else 1
    params = {"image_topics": [f"/cam{c}/image_raw" for c in range(cameras)], "image_size": width,
              "window_size": window_size, "window_stride": window_stride, "camera_timeout_s": 3600.0,
              "scale_source": source, "odometry_topic": "/odom", "depth_topic": "/cam0/depth/image_raw",
              "sync_slop_s": 0.01, "publish_tf": False}
    if source == "stereo":
        params["camera_info_topics"] = ["/cam0/camera_info", "/cam1/camera_info"]
    started = time.perf_counter()
    with private_graph() as (context, executor, player):
        node = ReconstructNode(lambda **_: estimator, context=context,
                               parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        executor.add_node(node)
        paths: List[PathMessage] = []
        depths: List[Image] = []
        player.create_subscription(PathMessage, "/vggt/path", paths.append, 10)
        player.create_subscription(Image, "/vggt/depth/cam0", depths.append, 10)
        topics = [(Image, "/cam0/image_raw"), (Image, "/cam1/image_raw"), (Odometry, "/odom"),
                  (Image, "/cam0/depth/image_raw")]
        publishers = [player.create_publisher(kind, topic, 10) for kind, topic in topics]
        used = {index for index, _ in _messages(sequence, source, 0)}
        _wait(lambda: all(publishers[i].get_subscription_count() > 0 for i in used), "subscriptions", node)
        if source == "stereo":
            info = player.create_publisher(CameraInfo, "/cam1/camera_info", 10)
            _wait(lambda: info.get_subscription_count() > 0, "the CameraInfo subscription", node)
            k = sequence.cameras[1].intrinsics[0].astype(np.float64)
            info.publish(CameraInfo(width=width, height=sequence.cameras[1].images.shape[1], k=k.flatten().tolist(),
                                    p=[k[0, 0], 0.0, k[0, 2], -k[0, 0] * sequence.baseline, 0.0, k[1, 1], k[1, 2], 0.0,
                                       0.0, 0.0, 1.0, 0.0]))
            _wait(lambda: node.scale_inputs.sensors.baseline_m() > 0, "the baseline", node)
        for step in range(sequence.cameras[0].num_frames):
            for index, msg in _messages(sequence, source, step):
                if index >= 2:
                    taken = node.scale_inputs.received
                    publishers[index].publish(msg)
                    _wait(lambda: node.scale_inputs.received > taken, "a scale message", node)
                else:
                    taken = node.stats().frames_received[index]
                    publishers[index].publish(msg)
                    _wait(lambda: node.stats().frames_received[index] > taken, "an image", node)
            _wait(lambda: (lambda s: s.windows_processed + s.failed_windows + s.dropped_windows
                           == s.windows_emitted)(node.stats()), "the window", node)
        stats = node.stats()
        _wait(lambda: len(paths) >= stats.windows_processed and len(depths) >= stats.windows_processed,
              "the last outputs", node)
        path = paths[-1]
    index_of = {int(stamp): i for i, stamp in enumerate(sequence.timestamps_ns.tolist())}
    steps = [index_of[conversions.stamp_to_ns(p.header.stamp)] for p in path.poses]
    estimated = np.stack([_camera_to_map(p.pose) for p in path.poses])
    truth = np.repeat(np.eye(4)[None], len(steps), 0)
    extrinsics = sequence.cameras[0].extrinsics[steps].astype(np.float64)
    truth[:, :3, :3] = extrinsics[:, :, :3].transpose(0, 2, 1)
    truth[:, :3, 3] = camera_centres(extrinsics)
    metric = stats.scale.get("scale_mode", "").startswith("metric")
    # the map's unit seen in its depth images (independent of the poses): published / true depth per window
    depth_ratio = [np.nanmedian(conversions.depth_from_image(msg) / sequence.cameras[0].depth[index_of[stamp]])
                   for msg in depths for stamp in [conversions.stamp_to_ns(msg.header.stamp)]]
    ate = absolute_trajectory_error(estimated[:, :3, 3], truth[:, :3, 3], metric=metric)
    rpe = relative_pose_error(estimated, truth, delta=min(100, len(steps) - 1),
                              scale=1.0 if metric else ate["sim3_scale"])
    depth_scale = float(np.median(depth_ratio))
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
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, _, description = load_model(None, DEFAULT_PRESET)
    default = estimator_from_model(model, args.width, description)
    runs = []
    for seed, trajectory in zip(args.seeds, args.trajectories):
        sequence = generate_sequence(seed, args.frames, args.width, args.height, trajectory=trajectory, cameras=2)
        for name in args.models:
            for source in args.sources:
                drift = args.drift if name == "truth-drift" else 0.0
                estimator = default if name == "default" else Estimator(
                    predict=TrueGeometryModel.of(sequence, WINDOW_SCALES, drift).predict, image_size=args.width,
                    description=f"true geometry, drift {drift}", backend="cpu fp32", bits=32)
                result = {"seed": seed, "trajectory": trajectory, "model": name,
                          **play(sequence, estimator, source, args.window_size, args.window_stride)}
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
