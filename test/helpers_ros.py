"""Helpers for the ROS tests (importable as ``helpers_ros``): a private ROS graph per test and image
messages built independently of the node's converters. Importing it skips the test module where
rclpy is missing."""

import os
import random
import threading
import time
from typing import Callable, Dict, List

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

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
        for node in reversed(self._nodes):
            node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)


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


def diagnostic_values(array) -> Dict[str, str]:
    """The key/values of the node's status in a DiagnosticArray."""
    status = next(s for s in array.status if s.name == "vggt_quant_ros: reconstruct")
    return {kv.key: kv.value for kv in status.values} | {"_level": int.from_bytes(status.level, "little")
                                                         if isinstance(status.level, bytes) else int(status.level),
                                                         "_message": status.message}
