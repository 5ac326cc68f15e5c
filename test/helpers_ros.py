"""Helpers for the ROS tests (importable as ``helpers_ros``): a private ROS graph per test and image
messages built independently of the node's converters. Importing it skips the test module where
rclpy is missing."""

import io
import os
import random
import threading
import time
from typing import Callable, Dict, List

import numpy as np
import pytest
from PIL import Image as PILImage

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

# one DDS domain per test session so parallel sessions on the machine never hear each other
DOMAIN_ID = random.randint(100, 200)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class RosGraph:
    """An rclpy context on ``DOMAIN_ID``, a probe node and a multi-threaded executor spinning in a thread."""

    def __init__(self):
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.probe = rclpy.create_node("probe", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.probe)
        self._nodes = [self.probe]
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node):
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def collect(self, msg_type, topic: str, qos=10) -> List:
        """Messages received on ``topic``, appended as they arrive."""
        received: List = []
        self.probe.create_subscription(msg_type, topic, received.append, qos)
        return received

    def close(self):
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)   # no callback may run on a node being destroyed
        for node in reversed(self._nodes):
            node.destroy_node()
        rclpy.shutdown(context=self.context)


def rgb_image(rgb: np.ndarray, stamp_ns: int, frame_id: str = "cam0_optical_frame", encoding: str = "rgb8",
              pad: int = 0) -> Image:
    """An Image from [H, W, 3] uint8 RGB, written in ``encoding`` (rgb8, bgr8, rgba8, mono8) with ``pad``
    bytes of row padding."""
    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., :1],
                "rgba8": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)}[encoding]
    height, width, depth = channels.shape
    rows = np.zeros((height, width * depth + pad), np.uint8)
    rows[:, :width * depth] = channels.reshape(height, -1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * depth + pad)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.data = rows.tobytes()
    return msg


def jpeg_image(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> CompressedImage:
    """A CompressedImage as image_transport's ``compressed`` plugin sends it (JPEG, quality 95)."""
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, "JPEG", quality=95)
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.data = buffer.getvalue()
    return msg


def diagnostic_values(array) -> Dict[str, str]:
    """The key/values of the node's status in a DiagnosticArray."""
    status = next(s for s in array.status if s.name == "vggt_quant_ros: reconstruct")
    return {kv.key: kv.value for kv in status.values} | {"_level": int.from_bytes(status.level, "little")
                                                         if isinstance(status.level, bytes) else int(status.level),
                                                         "_message": status.message}


def start_node(graph: RosGraph, estimator=None, **params):
    """A ``ReconstructNode`` in ``graph`` with parameter overrides; ``estimator`` replaces model loading."""
    from rclpy.parameter import Parameter

    from vggt_quant_ros.reconstruct_node import ReconstructNode

    overrides = [Parameter(name, value=value) for name, value in params.items()]
    loader = {} if estimator is None else {"estimator_loader": lambda **_: estimator}
    return graph.add(ReconstructNode(context=graph.context, parameter_overrides=overrides, **loader))


class Feeder:
    """Publishes to the node's image topics and waits until the node has counted each message."""

    def __init__(self, graph: RosGraph, node, topics, msg_type=Image):
        self.node, self.topics = node, topics
        self.publishers = [graph.probe.create_publisher(msg_type, topic, 10) for topic in topics]
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in self.publishers), 10, "the node to subscribe")

    def send(self, camera: int, msg, timeout: float = 10.0) -> None:
        before = self.node.stats().frames_received[camera]
        self.publishers[camera].publish(msg)
        wait_for(lambda: self.node.stats().frames_received[camera] > before, timeout,
                 f"the node to receive a message on {self.topics[camera]}")

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every window made so far was processed, failed, dropped or discarded by a reset (the worker
        is idle)."""
        def idle():
            s = self.node.stats()
            return s.windows_processed + s.failed_windows + s.dropped_windows + s.discarded_windows \
                == s.windows_emitted
        wait_for(idle, timeout, "the worker to finish its windows")

    def send_all(self, msgs_per_camera) -> None:
        """One message per camera (a time step), then wait for the windows it completes."""
        for camera, msg in enumerate(msgs_per_camera):
            self.send(camera, msg)
        self.drain()
