"""``reconstruct-demo`` (``python -m vggt_quant_ros.demo``): ``vggt-quant demo`` with the reconstruction done
by the ROS ``reconstruct`` node.

Recording, parameters (``config/reconstruct.yaml`` with what the recording needs, ``--scale-source``), scoring
and the screen are ``vggt_quant_core.demo``'s, shared with ``vggt-quant demo``; this module is the ROS part.
The messages the node subscribes to are played as recorded (serialized CDR) over rclpy pub/sub into a
``ReconstructNode`` running in this process. What it publishes is collected and handed to the shared scoring
as the library's outputs would be (``demo.StreamOutputs``): ``~/path`` (camera 0 per keyframe in ``map``),
``~/depth/cam0`` with its ``camera_info`` (the newest frame of each window) and ``~/points`` (the map), which
are also written to ``reconstruction/`` (as ``vggt-quant reconstruct`` writes them).

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
from nav_msgs.msg import Odometry, Path as PathMessage
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from vggt_quant_core.console import add_demo_arguments, options_from, run_reporting_errors
from vggt_quant_core.data.bags import serialized_messages
from vggt_quant_core.demo import (CAMERAS, DemoOptions, DemoResult, DemoRun, StreamOutputs, read_recording, run_demo,
                                  stream_result)
from vggt_quant_core.fileio import atomic_directory, write_text_atomic
from vggt_quant_core.stream import Estimator, estimator_from_model
from vggt_quant_core.stream.reconstructor import write_map_outputs
from vggt_quant_core.stream.window_processor import PathPose

from . import conversions
from .diagnostics import Stats
from .parameters import ConfigurationError
from .reconstruct_node import NODE_NAME, ReconstructNode

PROG = "reconstruct-demo"
CAMERA = CAMERAS[0]
FRAME_TIMEOUT_S = 10.0     # for the node to take one message
WINDOW_TIMEOUT_S = 600.0   # for one window (a large model on a slow CPU); ends at once if the node fails


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


def node_outputs(outputs: NodeOutputs, index: Dict[int, int]) -> StreamOutputs:
    """What the node published, as the library's outputs: its last path and map, every depth image with the
    intrinsics of its ``camera_info``; ``index``: the recording's frame number of each stamp."""
    path = []
    for stamped in outputs.path[-1].poses:
        stamp, p, q = conversions.stamp_to_ns(stamped.header.stamp), stamped.pose.position, stamped.pose.orientation
        path.append(PathPose(stamp, index.get(stamp, -1), np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])))
    intrinsics = {conversions.stamp_to_ns(info.header.stamp): conversions.intrinsics_from_info(info)
                  for info in outputs.info}
    depth = [(stamp, conversions.depth_from_image(msg), intrinsics[stamp])
             for msg in outputs.depth for stamp in [conversions.stamp_to_ns(msg.header.stamp)]]
    cloud = conversions.cloud_to_arrays(outputs.points[-1])
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float32)
    return StreamOutputs(path, depth, xyz, cloud["rgb"])


def reconstruct_with_node(run: DemoRun, estimator: Optional[Estimator] = None) -> DemoResult:
    """Play the bag into an in-process ``reconstruct`` node, collect its outputs and write them into ``run.out``.
    ``estimator`` replaces the loaded model (tests)."""
    values = run.parameters
    if run.options.frames < values.get("window_size", 8):
        raise ValueError(f"--frames {run.options.frames} is fewer than the node's window_size "
                         f"{values['window_size']} ({run.params_file}): the node would make no window")
    model, trained_size, description = run.loaded
    estimator = estimator or estimator_from_model(model, trained_size, description, run.options.precision)
    # empty lists are the node's defaults already (and rclpy cannot tell their element type)
    overrides = [Parameter(name, value=value) for name, value in values.items() if value != []]
    started = time.perf_counter()
    with private_graph() as (context, executor, player):
        outputs = NodeOutputs(player)
        try:
            node = ReconstructNode(lambda **_: estimator, context=context, parameter_overrides=overrides)
        except ConfigurationError as exc:
            raise ValueError(f"reconstruct node ({run.params_file}): {exc}") from exc
        executor.add_node(node)
        ready = time.perf_counter()
        windows = play(run.bag, values, player, node, outputs)
        stats = node.stats()
    played = time.perf_counter()
    if not windows:
        raise ValueError(f"the node processed no window ({stats.failed_windows} failed: {stats.last_problem})")
    index = {int(stamp): i for i, stamp in enumerate(read_recording(run.bag).stamps_ns.tolist())}
    streamed = node_outputs(outputs, index)
    node_report = {"params_file": str(run.params_file), "parameters": values, "model": estimator.description,
                   "backend": estimator.backend, "frames_received": sum(stats.frames_received),
                   "keyframes": stats.keyframes, "windows_emitted": stats.windows_emitted,
                   "windows_processed": stats.windows_processed, "dropped_windows": stats.dropped_windows,
                   "failed_windows": stats.failed_windows, "map_points": stats.map_points,
                   "last_alignment_rmse": stats.alignment_rmse, "last_problem": stats.last_problem,
                   "scale": stats.scale, "windows": windows}
    with atomic_directory(run.out) as staged:
        staged.mkdir()
        write_map_outputs(staged, streamed.cloud, streamed.cloud_rgb, streamed.path,
                          [(0, index[stamp], depth) for stamp, depth, _ in streamed.depth])
        write_text_atomic(staged / "summary.json", json.dumps({"recording": str(run.bag), "node": node_report},
                                                              indent=1))
    return stream_result(run, streamed, windows, "the ROS reconstruct node",
                         (stats.windows_processed, stats.dropped_windows, stats.failed_windows),
                         stats.scale["scale_mode"],
                         {"node_start": round(ready - started, 3), "play": round(played - ready, 3)},
                         {"node": node_report})


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``reconstruct-demo``: those of ``vggt-quant demo``, plus ``-v`` and ``-q``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Render a held-out procedural scene, record it as a "
                                     "rosbag2 file, play it into the ROS reconstruct node, and compare what the "
                                     "node publishes with the ground truth.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    add_demo_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None, estimator: Optional[Estimator] = None) -> int:
    """Console script ``reconstruct-demo``; ``estimator`` replaces the model (tests)."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    reconstruct = functools.partial(reconstruct_with_node, estimator=estimator)
    options = options_from(args, DemoOptions)
    return run_reporting_errors(PROG, args.verbose, lambda: run_demo(options, reconstruct, title=PROG))


if __name__ == "__main__":
    sys.exit(main())
