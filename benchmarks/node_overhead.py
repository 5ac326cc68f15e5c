"""The reconstruct node's own cost per window, model inference excluded.

The real node runs over real rclpy pub/sub with the tests' ground-truth model double (it answers with
the rendered room's true depth and poses, so the Sim(3) chaining works on real geometry, and its own
time is reported as inference and left out). Images are published as rgb8 at the model's input size;
after each window the node's stage timings are read: ``convert`` (Image -> numpy, for the window's new
frames), ``preprocess`` (numpy -> model input, new frames; overlapping frames are cached), ``reconstruct``
(predictions -> strided numpy cameras/points), ``align`` (Sim(3) + voxel map), ``publish`` (PointCloud2
packing of the whole map, depth, CameraInfo, poses, path, odometry; building and publishing).

Usage: python benchmarks/node_overhead.py [--frames 10] [--stride 5] [--width 518] [--height 392]
       [--windows 12] [--out benchmarks/results/node_overhead.json]
Prints one JSON object: per-stage milliseconds of each window, wall clock and the worker thread's CPU time
(``convert`` happens in the subscription thread: wall time in both), and their median and minimum over the
windows after the first (the first has no overlap: all its frames are new, and nothing is aligned). On a
machine shared with other work, wall time grows with the load; CPU time much less.
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))   # the ground-truth double the tests use

from helpers_truth import GroundTruthModel, Rig  # noqa: E402

import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from vggt_quant_core.data import preprocess_image  # noqa: E402
from vggt_quant_ros import conversions  # noqa: E402
from vggt_quant_core.stream.estimator import Estimator  # noqa: E402
from vggt_quant_core.stream.mapping import VoxelMap, VoxelSums  # noqa: E402
from vggt_quant_ros.reconstruct_node import ReconstructNode  # noqa: E402

STAGES = ("convert", "preprocess", "reconstruct", "align", "publish", "overhead", "inference")


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)


def image_message(rgb, stamp_ns):
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=3 * rgb.shape[1])
    msg.header = conversions.header("camera_optical", stamp_ns)
    msg.data = rgb.tobytes()
    return msg


def per_frame_costs(width=640, height=480, target=518, repeats=10):
    """Milliseconds per frame for a bgr8 camera image of another size: decode and resize."""
    rgb = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8).numpy()
    msg = Image(height=height, width=width, encoding="bgr8", step=3 * width)
    msg.data = rgb.tobytes()
    start = time.perf_counter()
    for _ in range(repeats):
        decoded = conversions.image_to_rgb(msg)
    decode = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        preprocess_image(decoded, target_size=target)
    resize = (time.perf_counter() - start) / repeats
    return {"input": f"{width}x{height} bgr8", "convert_ms": round(1000 * decode, 2),
            "preprocess_ms": round(1000 * resize, 2)}


def full_map_costs(voxels=500_000, window_points=64_000, voxel_size=0.02, repeats=5):
    """Milliseconds of the parts that grow with the map, at the default cap (``max_map_points``): merging one
    window into a full map, and building the map's PointCloud2."""
    rng = np.random.default_rng(0)
    side = int(round(voxels ** (1 / 3))) + 1
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:voxels]
    xyz = ((grid + 0.5) * voxel_size).astype(np.float32)
    rgb = rng.integers(0, 256, (voxels, 3), dtype=np.uint8)
    conf = rng.uniform(1, 5, voxels).astype(np.float32)
    window = VoxelSums.of(xyz[:window_points] + voxel_size / 4, rgb[:window_points], conf[:window_points],
                          voxel_size)
    merge, pack = [], []
    for _ in range(repeats):
        voxel_map = VoxelMap(voxel_size, voxels)
        voxel_map.add(VoxelSums.of(xyz, rgb, conf, voxel_size))
        start = time.perf_counter()
        voxel_map.add(window)
        merge.append(time.perf_counter() - start)
        start = time.perf_counter()
        conversions.point_cloud(conversions.header("map", 0), *voxel_map.arrays()[:2])
        pack.append(time.perf_counter() - start)
    return {"map_voxels": voxels, "merge_window_ms": round(1000 * min(merge), 2),
            "pack_cloud_ms": round(1000 * min(pack), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10, help="window size")
    parser.add_argument("--stride", type=int, default=5, help="new frames per window")
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "node_overhead.json")
    args = parser.parse_args()

    load_start = round(os.getloadavg()[0], 2)   # other processes on the machine inflate the timings
    steps = args.frames + args.stride * (args.windows - 1)
    truth = Rig(steps, args.width, args.height)
    model = GroundTruthModel(truth, scales=(1.0, 0.8, 1.25))
    estimator = Estimator(predict=model.predict, image_size=args.width, description="ground-truth double",
                          backend="cpu fp32", bits=32)
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=random.randint(201, 230))
    overrides = [Parameter("image_topics", value=["/bench/image"]), Parameter("window_size", value=args.frames),
                 Parameter("window_stride", value=args.stride), Parameter("image_size", value=args.width)]
    node = ReconstructNode(lambda **_: estimator, context=context, parameter_overrides=overrides)
    probe = rclpy.create_node("bench_probe", context=context)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    publisher = probe.create_publisher(Image, "/bench/image", 10)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    windows = []
    node_voxel, node_stride = node.get_parameter("voxel_size").value, node.get_parameter("pixel_stride").value
    try:
        wait(lambda: publisher.get_subscription_count() > 0 and node.estimator is not None, 30, "the node")
        for step in range(steps):
            before = node.stats()
            publisher.publish(image_message(truth.images[0, step], 1_000_000_000 + step * 100_000_000))
            wait(lambda: node.stats().frames_received[0] > before.frames_received[0], 10, "a frame")
            stats = node.stats()
            if stats.windows_emitted > before.windows_emitted:
                wait(lambda: node.stats().windows_processed == stats.windows_emitted, 120, "a window")
                after = node.stats()
                windows.append({"wall_ms": {k: round(after.timings_ms[k], 2) for k in STAGES},
                                "cpu_ms": {k: round(after.cpu_ms.get(k, 0.0), 2) for k in STAGES},
                                "map_points": after.map_points, "alignment_rmse": after.alignment_rmse})
    finally:
        executor.shutdown(timeout_sec=5)
        spinner.join(timeout=5)
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
    steady = windows[1:]
    result = {
        "benchmark": "node_overhead",
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "cpus": os.cpu_count(),
                        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)}},
        "window": {"frames": args.frames, "new_frames": args.stride, "width": args.width, "height": args.height,
                   "pixel_stride": node_stride,
                   "voxel_size": node_voxel, "cloud_mode": "map"},
        "windows": windows,
        "first_window": windows[0],
        "steady": {clock: {"median": {k: round(statistics.median(w[clock][k] for w in steady), 2) for k in STAGES},
                           "min": {k: min(w[clock][k] for w in steady) for k in STAGES}}
                   for clock in ("wall_ms", "cpu_ms")},
        "per_frame_other_input": per_frame_costs(target=args.width),
        "full_map": full_map_costs(voxel_size=node_voxel),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
