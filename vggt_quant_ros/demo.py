"""``reconstruct-demo`` (``python -m vggt_quant_ros.demo``): ``vggt-quant demo`` with the reconstruction done
by the ROS ``reconstruct`` node.

The held-out scene is recorded as a rosbag2 file by the shared code of ``vggt_quant_core.demo``. The messages
the node subscribes to are then played as recorded (serialized CDR) over rclpy pub/sub into a
``ReconstructNode`` running in this process with the parameters of ``config/reconstruct.yaml``. With
``--scale-source`` the recording holds what that source needs and the node is set up to use it
(``SCALE_SOURCES``): ``stereo`` the second camera ``cam1`` and both CameraInfos (camera 1's projection gives
the baseline), ``odometry`` the true camera positions on ``/odom``, ``depth`` the true depth registered to
cam0; the map is then in metres and the summary scores its scale. What the node publishes is collected and
converted back to what the shared scoring expects:

* ``~/path`` (a pose per time step in the ``map`` frame, FLU axes) -> camera-from-map extrinsics (OpenCV);
* ``~/depth/cam0`` and its ``camera_info`` (the newest frame of each window) -> depth maps, and world points
  from them with those poses, as the node builds its cloud;
* ``~/points`` (the accumulated map) -> ``reconstruction/points.ply`` and the preview.

The path's extrinsics are also written to ``reconstruction/cameras.json``.

Pace: messages go out in stamp order (at equal stamps the scale inputs before the images, so that the window
an image completes finds them); an image, odometry or depth message is published once the node has taken the
previous one (CameraInfo, state the node keeps rather than a stream, is not waited for), and after an image
that completes a window the player waits until the node has processed it and its outputs have arrived. No
window is dropped, so what is scored does not depend on the machine's speed. The graph is private: an rclpy
context of its own on a random domain id, with discovery limited to this process.
"""

import argparse
import functools
import json
import logging
import os
import random
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import rclpy
import torch
import yaml
from nav_msgs.msg import Odometry, Path as PathMessage
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from vggt_quant_core.cli.demo import add_demo_arguments
from vggt_quant_core.cli.errors import run_reporting_errors
from vggt_quant_core.data.bags import (ODOMETRY_TOPIC, camera_info_topic, depth_topic, image_topic,
                                       serialized_messages)
from vggt_quant_core.demo import CAMERAS, DemoResult, Recording, read_recording, run_demo
from vggt_quant_core.export import write_depth, write_ply
from vggt_quant_core.fileio import write_text_atomic
from vggt_quant_core.geometry import quat_to_mat, unproject_depth_map_to_point_map

from . import conversions
from vggt_quant_core.stream import Estimator, estimator_from_model
from .diagnostics import Stats
from vggt_quant_core.stream.metric_scale import SCALE_SOURCES, scale_mode
from .parameters import ConfigurationError
from .reconstruct_node import NODE_NAME, ReconstructNode

PROG = "reconstruct-demo"
CAMERA = CAMERAS[0]
# what each scale_source needs in the recording
SCALE_RECORDINGS = {"none": Recording(), "stereo": Recording(cameras=2), "odometry": Recording(odometry=True),
                    "depth": Recording(depth=True)}
FRAME_TIMEOUT_S = 10.0     # for the node to take one message
WINDOW_TIMEOUT_S = 600.0   # for one window (a large model on a slow CPU); ends at once if the node fails
CAMERA_CONVENTION = ("extrinsic: camera-from-map [R|t] (OpenCV: x right, y down, z forward) of the node's ~/path; "
                     "map = the node's map frame (axes of world_frame_convention at the first camera, the first "
                     "window's scale)")


def default_params_file() -> Path:
    """``config/reconstruct.yaml`` of a source checkout, else the installed copy (``share/vggt_quant_ros``)."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / "reconstruct.yaml",
                  Path(sys.prefix) / "share" / "vggt_quant_ros" / "config" / "reconstruct.yaml"]
    return next((path for path in candidates if path.exists()), candidates[0])


def read_params(path: Path) -> Dict[str, Any]:
    """The node's parameters in a ROS 2 parameter file (its ``/**`` or ``vggt`` entry)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the parameter file {path}: {exc}") from exc
    for key in ("/**", NODE_NAME, f"/{NODE_NAME}"):
        entry = data.get(key) if isinstance(data, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("ros__parameters"), dict):
            return dict(entry["ros__parameters"])
    raise ValueError(f"{path}: no ros__parameters under '/**' or '{NODE_NAME}'")


def scale_source(params: Dict[str, Any], args: argparse.Namespace) -> str:
    """``--scale-source``, else the parameter file's ``scale_source``."""
    source = args.scale_source or params.get("scale_source", "none")
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
        return {**inputs, "depth_topic": depth_topic(CAMERA), "depth_camera": 0}
    return inputs


def node_parameters(params: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """The parameter file's values, with what the demo must override."""
    return {**params,
            **input_parameters(scale_source(params, args), params.get("intrinsics_source", "predicted")),
            # the model the demo loaded is handed to the node (not loaded twice); named here for diagnostics
            "checkpoint": str(args.checkpoint or ""), **({} if args.checkpoint else {"preset": args.preset}),
            "device": args.device, "precision": args.precision,
            # the demo records at the model's input size: no resizing, depth compares pixel for pixel
            "image_size": args.size,
            # the player holds the next image while a window is processed: that silence is no stalled camera
            "camera_timeout_s": 3600.0}


@contextmanager
def private_graph() -> Iterator[Tuple[Any, MultiThreadedExecutor, Node]]:
    """An rclpy context on a random domain id with discovery limited to this process (no other ROS process
    hears the demo or is heard), a player node, and a multi-threaded executor spinning in a thread (the node's
    input and worker groups run in parallel, as under ``reconstruct``). Yields (context, executor, player);
    nodes added to the executor are destroyed on exit."""
    context = rclpy.context.Context()
    saved = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"   # read by rclpy.init only
    try:
        rclpy.init(context=context, domain_id=random.randint(100, 200))
    finally:
        if saved is None:
            del os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    player = rclpy.create_node("demo_player", context=context)
    executor.add_node(player)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield context, executor, player
    finally:
        nodes = executor.get_nodes()
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)   # no callback may run on a node being destroyed
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.shutdown(context=context)


class NodeOutputs:
    """What the node publishes, as the player receives it: every depth image and CameraInfo, every path
    and cloud (the last ones are the whole path and map)."""

    def __init__(self, player: Node):
        prefix = f"/{NODE_NAME}"
        self.depth: List[Image] = []
        self.info: List[CameraInfo] = []
        self.path: List[PathMessage] = []
        self.points: List[PointCloud2] = []
        for msg_type, topic, received in ((Image, f"depth/{CAMERA}", self.depth),
                                          (CameraInfo, f"depth/{CAMERA}/camera_info", self.info),
                                          (PathMessage, "path", self.path), (PointCloud2, "points", self.points)):
            player.create_subscription(msg_type, f"{prefix}/{topic}", received.append, 10)

    def complete(self, windows: int) -> bool:
        return min(len(self.depth), len(self.info), len(self.path), len(self.points)) >= windows


def _wait(predicate: Callable[[], bool], timeout: float, node: ReconstructNode, what: str) -> None:
    """Poll ``predicate``; a fatal node error or ``timeout`` seconds end the demo with one line."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if node.fatal.done():
            raise ValueError(f"the reconstruct node stopped: {node.fatal.result()}")
        if time.monotonic() > deadline:
            problem = node.stats().last_problem or "no problem reported"
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (node: {problem})")
        time.sleep(0.005)


def _idle(stats: Stats) -> bool:
    """Every window made so far was processed, failed or dropped."""
    return stats.windows_processed + stats.failed_windows + stats.dropped_windows == stats.windows_emitted


# per topic played: the message type and a count of the messages the node has taken (None: not counted)
Streams = Dict[str, Tuple[type, Optional[Callable[[], int]]]]


def _streams(values: Dict[str, Any], node: ReconstructNode) -> Streams:
    """The topics the node subscribes to (``values``: its parameters), images last."""
    scale = node.scale_inputs
    streams: Streams = {topic: (CameraInfo, None) for topic in values["camera_info_topics"]}
    if values["scale_source"] == "odometry":
        streams[values["odometry_topic"]] = (Odometry, lambda: scale.received)
    if values["scale_source"] == "depth":
        streams[values["depth_topic"]] = (Image, lambda: scale.received)
    for camera, topic in enumerate(values["image_topics"]):
        streams[topic] = (Image, lambda camera=camera: node.stats().frames_received[camera])
    return streams


def play(bag: Path, values: Dict[str, Any], player: Node, node: ReconstructNode, outputs: NodeOutputs
         ) -> List[Dict[str, Any]]:
    """Publish the recorded messages of every topic the node subscribes to (``values``: its parameters) at the
    pace of the module docstring. Returns, per processed window, the index of the image that completed it
    (among camera 0's) and the node's stage timings (wall ms)."""
    streams = _streams(values, node)
    order = {topic: rank for rank, topic in enumerate(streams)}   # at equal stamps: scale inputs, then images
    messages = sorted(serialized_messages(bag, list(streams)), key=lambda m: (m[0], order[m[1]]))
    publishers = {topic: player.create_publisher(msg_type, topic, 10) for topic, (msg_type, _) in streams.items()}
    for topic, publisher in publishers.items():
        _wait(lambda: publisher.get_subscription_count() > 0, FRAME_TIMEOUT_S, node,
              f"the node to subscribe to {topic}")
    frames: Dict[int, int] = {}   # stamp -> frame index
    windows: List[Dict[str, Any]] = []
    for stamp, topic, raw in messages:
        index = frames.setdefault(stamp, len(frames))
        taken = streams[topic][1]
        before = taken() if taken else 0
        publishers[topic].publish(raw)
        if taken is None:
            continue
        _wait(lambda: taken() > before, FRAME_TIMEOUT_S, node, f"the node to take {topic} of frame {index}")
        _wait(lambda: _idle(node.stats()), WINDOW_TIMEOUT_S, node, f"the window ending at frame {index}")
        stats = node.stats()
        if stats.windows_processed > len(windows):
            _wait(lambda: outputs.complete(stats.windows_processed), FRAME_TIMEOUT_S, node, "the node's outputs")
            windows.append({"last_frame": index, **{f"{stage}_ms": round(ms, 2)
                                                    for stage, ms in stats.timings_ms.items()}})
    return windows


def camera_from_map(pose) -> np.ndarray:
    """[3, 4] camera-from-map extrinsic (OpenCV axes) of a pose in the map: the pose places the camera's optical
    frame in the map (map-from-camera R, p), so the extrinsic is its inverse [R^T | -R^T p]. The map's own axes
    (FLU, ``mapping.FLU_FROM_OPTICAL``), origin and scale stay: scoring aligns worlds with a Sim(3)."""
    q = pose.orientation
    rotation = quat_to_mat(torch.tensor([q.x, q.y, q.z, q.w], dtype=torch.float64)).numpy()
    position = np.array([pose.position.x, pose.position.y, pose.position.z])
    return np.concatenate([rotation.T, (-rotation.T @ position)[:, None]], axis=1)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _frame_index(stamps: Dict[int, int], msg) -> int:
    stamp = conversions.stamp_to_ns(msg.header.stamp)
    if stamp not in stamps:
        raise ValueError(f"the node published an output stamped {stamp} ns, which is no frame of the recording")
    return stamps[stamp]


def collect_result(frames: np.ndarray, stamps_ns: np.ndarray, outputs: NodeOutputs
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The node's outputs as frame-indexed arrays: posed [P], extrinsics [P, 3, 4] (camera-from-map),
    with_depth [D], depth [D, H, W] and world points [D, H, W, 3] (map frame)."""
    stamps = {int(stamp): index for index, stamp in enumerate(stamps_ns.tolist())}
    posed_poses = sorted((_frame_index(stamps, p), camera_from_map(p.pose)) for p in outputs.path[-1].poses)
    posed = np.array([index for index, _ in posed_poses])
    extrinsics = np.stack([extrinsic for _, extrinsic in posed_poses])
    intrinsics = {_frame_index(stamps, info): conversions.intrinsics_from_info(info) for info in outputs.info}
    depth_maps = sorted((_frame_index(stamps, msg), conversions.depth_from_image(msg)) for msg in outputs.depth)
    with_depth = np.array([index for index, _ in depth_maps])
    depth = np.stack([d for _, d in depth_maps]).astype(np.float32)
    if depth.shape[1:] != frames.shape[1:3]:
        raise ValueError(f"the node's depth is {depth.shape[2]}x{depth.shape[1]}, the recording "
                         f"{frames.shape[2]}x{frames.shape[1]}: record at the model's input size")
    at = np.searchsorted(posed, with_depth)
    points = unproject_depth_map_to_point_map(torch.from_numpy(depth).double(), torch.from_numpy(extrinsics[at]),
                                              torch.from_numpy(np.stack([intrinsics[i] for i in with_depth]))).numpy()
    return posed, extrinsics, with_depth, depth, points


def reconstruct_with_node(bag: Path, args: argparse.Namespace, out: Path, loaded, params: Dict[str, Any],
                          params_file: Path, estimator: Optional[Estimator] = None) -> DemoResult:
    """Play the bag into an in-process ``reconstruct`` node, collect its outputs, write ``points.ply`` and
    ``depth/`` into ``out``. ``estimator`` replaces the loaded model (tests)."""
    recording = read_recording(bag)
    values = node_parameters(params, args)
    if args.frames < values.get("window_size", 8):
        raise ValueError(f"--frames {args.frames} is fewer than the node's window_size {values['window_size']} "
                         f"({params_file}): the node would make no window")
    model, trained_size, description = loaded
    estimator = estimator or estimator_from_model(model, trained_size, description, args.precision)
    # empty lists are the node's defaults already (and rclpy cannot tell their element type)
    overrides = [Parameter(name, value=value) for name, value in values.items() if value != []]
    started = time.perf_counter()
    with private_graph() as (context, executor, player):
        outputs = NodeOutputs(player)
        try:
            node = ReconstructNode(lambda **_: estimator, context=context, parameter_overrides=overrides)
        except ConfigurationError as exc:
            raise ValueError(f"reconstruct node ({params_file}): {exc}") from exc
        executor.add_node(node)
        ready = time.perf_counter()
        windows = play(bag, values, player, node, outputs)
        stats = node.stats()
    played = time.perf_counter()
    if not windows:
        raise ValueError(f"the node processed no window ({stats.failed_windows} failed: {stats.last_problem})")
    posed, extrinsics, with_depth, depth, points = collect_result(recording.images, recording.stamps_ns, outputs)
    cloud = conversions.cloud_to_arrays(outputs.points[-1])
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float32)
    write_ply(out / "points.ply", xyz, cloud["rgb"])
    for index, frame_depth in zip(with_depth.tolist(), depth):
        write_depth(out, index, frame_depth)
    cameras = [{"index": index, "stamp_ns": int(recording.stamps_ns[index]), "extrinsic": extrinsic.tolist()}
               for index, extrinsic in zip(posed.tolist(), extrinsics)]
    write_text_atomic(out / "cameras.json", json.dumps({"convention": CAMERA_CONVENTION, "frames": cameras}, indent=1))

    inference = [w["inference_ms"] for w in windows]
    overhead = [w["overhead_ms"] for w in windows]
    node_report = {"params_file": str(params_file), "parameters": values, "model": estimator.description,
                   "backend": estimator.backend, "frames_received": sum(stats.frames_received),
                   "keyframes": stats.keyframes, "windows_emitted": stats.windows_emitted,
                   "windows_processed": stats.windows_processed, "dropped_windows": stats.dropped_windows,
                   "failed_windows": stats.failed_windows, "map_points": stats.map_points,
                   "last_alignment_rmse": stats.alignment_rmse, "last_problem": stats.last_problem,
                   "scale": stats.scale, "windows": windows}
    units = stats.scale["scale_mode"]
    metric = units == scale_mode(values["scale_source"], metric=True)["scale_mode"]
    return DemoResult(
        frames=recording.images, posed=posed, extrinsics=extrinsics, with_depth=with_depth, depth=depth,
        points=points, cloud=xyz, cloud_rgb=cloud["rgb"],
        method=f"the ROS reconstruct node ({params_file.name}: windows of {values['window_size']} keyframes every "
               f"{values['window_stride']}): {_count(stats.windows_processed, 'window')} processed, "
               f"{stats.dropped_windows} dropped, {stats.failed_windows} failed",
        # median: the first window's publishing carries the middleware's one-off set-up (over a second here)
        timing=f"node time per window (median of {len(windows)}): {np.median(inference):.0f} ms inference, "
               f"{np.median(overhead):.0f} ms overhead (preprocessing, mapping, publishing)",
        seconds={"node_start": round(ready - started, 3), "play": round(played - ready, 3),
                 "inference": round(sum(inference) / 1000, 3), "overhead": round(sum(overhead) / 1000, 3)},
        details={"node": node_report}, units=units,
        metric_source=values["scale_source"] if metric else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Render a held-out procedural scene, record it as a "
                                     "rosbag2 file, play it into the ROS reconstruct node, and compare what the "
                                     "node publishes with the ground truth.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    add_demo_arguments(parser, frames=16, frames_help="frames in the recording (default 16: three windows of 8 "
                                                      "keyframes every 4 with config/reconstruct.yaml)")
    parser.add_argument("--params-file", type=Path, help="the node's parameters (default: config/reconstruct.yaml)")
    parser.add_argument("--scale-source", choices=SCALE_SOURCES,
                        help="what puts the map in metres; the recording gains it: 'stereo' (a second camera, "
                             "cam1, and its CameraInfo baseline), 'odometry' (/odom, the true camera positions), "
                             "'depth' (/cam0/depth/image_raw, the true depth in mm); default: the parameter "
                             "file's scale_source (none)")
    return parser


def main(argv: Optional[List[str]] = None, estimator: Optional[Estimator] = None) -> int:
    """Console script ``reconstruct-demo``; ``estimator`` replaces the model (tests)."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)

    def body() -> int:
        params_file = args.params_file or default_params_file()
        params = read_params(params_file)
        if args.checkpoint is None and args.preset is None:   # the model of the parameter file
            args.checkpoint = Path(params["checkpoint"]) if params.get("checkpoint") else None
            args.preset = None if args.checkpoint else params.get("preset") or None
        reconstruct = functools.partial(reconstruct_with_node, params=params, params_file=params_file,
                                        estimator=estimator)
        return run_demo(args, reconstruct, title=PROG, recording=SCALE_RECORDINGS[scale_source(params, args)])

    return run_reporting_errors(PROG, args.verbose, body)


if __name__ == "__main__":
    sys.exit(main())
