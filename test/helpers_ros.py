"""Helpers for the ROS tests (importable as ``helpers_ros``): a private ROS graph per test, image
messages built independently of the node's converters, a ground-truth model double and the
distance of points to the synthetic scene."""

import os
import random
import threading
import time
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch

from vggt_quant_core.data.scenes import Scene, intrinsics_for, orbit_cameras, random_room, render
from vggt_quant_core.geometry import extri_intri_to_pose_encoding, unproject_depth_map_to_point_map

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


class Rig:
    """Cameras moving along an orbit in ``random_room(seed)``; camera c sits ``baseline * c`` to the right
    of camera 0. Ground truth per camera: images [T, H, W, 3], depth [T, H, W], extrinsics [T, 3, 4]
    (camera-from-world, OpenCV), one intrinsic matrix [3, 3]."""

    def __init__(self, steps: int, width: int, height: int, cameras: int = 1, seed: int = 0, baseline: float = 0.3):
        self.scene: Scene = random_room(seed)
        self.intrinsics = intrinsics_for(width, height)
        self.extrinsics = np.repeat(orbit_cameras(steps, seed)[None], cameras, axis=0)   # [C, T, 3, 4]
        self.extrinsics[:, :, 0, 3] -= baseline * np.arange(cameras)[:, None]   # centre moves along camera x
        frames = [[render(self.scene, e, self.intrinsics, width, height) for e in cam] for cam in self.extrinsics]
        self.images = np.stack([[f[0] for f in cam] for cam in frames])            # [C, T, H, W, 3]
        self.depth = np.stack([[f[1] for f in cam] for cam in frames])             # [C, T, H, W]

    def centre(self, camera: int, step: int) -> np.ndarray:
        e = self.extrinsics[camera, step]
        return -e[:, :3].T @ e[:, 3]


@lru_cache(maxsize=4)
def rig(steps: int, width: int, height: int, cameras: int = 1) -> Rig:
    return Rig(steps, width, height, cameras)


class GroundTruthModel:
    """Stands in for VGGT: recognises each input image among the rig's frames and returns its true depth
    and camera, relative to the window's first image (VGGT's convention) and multiplied by a scale of
    its own per call (``scales``, cycled), as VGGT's per-window normalisation does.

    ``gate``: if given, each call waits for it (tests hold inference); ``entered`` is set on entry.
    ``corrupt``: call indices whose poses come back NaN.
    """

    def __init__(self, rig: Rig, scales: Sequence[float] = (0.7, 1.3, 0.9, 1.1), gate: Optional[threading.Event] = None,
                 corrupt: Sequence[int] = ()):
        self.rig, self.scales, self.gate, self.corrupt = rig, list(scales), gate, set(corrupt)
        self.calls = 0
        self.entered = threading.Event()
        self.windows: List[List[tuple]] = []     # per call: (camera, step) of each image
        images = rig.images.reshape(-1, *rig.images.shape[2:])
        self._library = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).flatten(1)

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test never released the model"
        call, self.calls = self.calls, self.calls + 1
        steps = self.rig.images.shape[1]
        found = [int(torch.cdist(image.flatten()[None], self._library).argmin()) for image in images]
        ids = [divmod(i, steps) for i in found]
        self.windows.append(ids)
        extrinsics = np.stack([np.vstack([self.rig.extrinsics[c, t], [0, 0, 0, 1]]) for c, t in ids])
        relative = extrinsics @ np.linalg.inv(extrinsics[0])     # camera-from-first-camera
        scale = self.scales[call % len(self.scales)]
        relative[:, :3, 3] *= scale
        depth = torch.from_numpy(np.stack([self.rig.depth[c, t] for c, t in ids]) * scale).float()
        extri = torch.from_numpy(relative[:, :3]).float()
        intri = torch.from_numpy(np.repeat(self.rig.intrinsics[None], len(ids), 0)).float()
        height, width = depth.shape[-2:]
        pose_enc = extri_intri_to_pose_encoding(extri[None], intri[None], (height, width))
        if call in self.corrupt:
            pose_enc[:] = float("nan")
        conf = torch.full_like(depth, 3.0)
        return {"pose_enc": pose_enc, "depth": depth[None, ..., None], "depth_conf": conf[None],
                "world_points": unproject_depth_map_to_point_map(depth, extri, intri)[None],
                "world_points_conf": conf[None], "images": images[None]}


def scene_distance(scene: Scene, points: np.ndarray) -> np.ndarray:
    """Unsigned distance [N] of world points [N, 3] to the nearest surface of ``scene``."""
    distances = [np.abs((points - p) @ n) for p, n, _, _ in scene.planes]
    for lo, hi, _, _ in scene.boxes:
        d = np.maximum(lo - points, points - hi)
        outside = np.linalg.norm(np.maximum(d, 0), axis=1)
        distances.append(np.where((d <= 0).all(axis=1), -d.max(axis=1), outside))
    for centre, radius, _, _ in scene.spheres:
        distances.append(np.abs(np.linalg.norm(points - centre, axis=1) - radius))
    return np.min(distances, axis=0)


def diagnostic_values(array) -> Dict[str, str]:
    """The key/values of the node's status in a DiagnosticArray."""
    status = next(s for s in array.status if s.name == "vggt_quant_ros: reconstruct")
    return {kv.key: kv.value for kv in status.values} | {"_level": int.from_bytes(status.level, "little")
                                                         if isinstance(status.level, bytes) else int(status.level),
                                                         "_message": status.message}
