"""What a robot integrator uses besides the topics, over real rclpy pub/sub and service calls: ~/save_map and
~/reset (also while a window is being inferred), and a fisheye camera rectified from its CameraInfo."""

import json
import re
import threading
import time
from pathlib import Path

import numpy as np

from helpers_ros import Feeder, diagnostic_values, rgb_image, start_node, wait_for
from helpers_truth import FisheyeRig, GroundTruthModel, rig
from vggt_quant_core.data.scenes import surface_distance
from vggt_quant_core.export import read_ply

from diagnostic_msgs.msg import DiagnosticArray  # noqa: I100 (helpers_ros skips this module without rclpy)
from nav_msgs.msg import Path as PathMessage
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from vggt_quant_ros import conversions
from vggt_quant_ros.reconstruct_node import ReconstructNode
from vggt_quant_core.stream.estimator import Estimator
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL

WIDTH, HEIGHT = 112, 84
T0, DT = 1_000_000_000, 100_000_000
FAST = dict(image_size=WIDTH, diagnostics_period_s=0.1, camera_timeout_s=600.0, conf_percentile=0.0,
            window_size=4, window_stride=2)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FISHEYE_LENS = (-0.02, 0.01, -0.003, 0.0005)


def _estimator(model) -> Estimator:
    return Estimator(predict=model.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32", bits=32)


def _call(graph, service: str, timeout: float = 5.0):
    """Call a Trigger service from the probe: the response and the seconds it took."""
    client = graph.probe.create_client(Trigger, service)
    assert client.wait_for_service(timeout_sec=10), f"{service} is not offered"
    started = time.monotonic()
    future = client.call_async(Trigger.Request())
    wait_for(future.done, timeout, f"{service} to answer")
    return future.result(), time.monotonic() - started


def _to_map(truth, first_step: int, scale: float):
    """World -> map for a map anchored at camera 0 of ``first_step`` (FLU axes, ``scale`` model units per metre)."""
    first = truth.extrinsics[0, first_step]
    return lambda x: scale * (x @ first[:, :3].T + first[:, 3]) @ FLU_FROM_OPTICAL.T


def _positions(path: PathMessage) -> np.ndarray:
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses])


def test_save_map_writes_a_new_folder_each_time_and_reset_starts_a_new_map(graph, tmp_path):
    truth = rig(10, WIDTH, HEIGHT)
    node = start_node(graph, _estimator(GroundTruthModel(truth, scales=(0.7, 1.3, 0.9, 1.1))), **FAST,
                      image_topics=["/cam/image"], map_save_dir=str(tmp_path / "maps"))
    feed = Feeder(graph, node, ["/cam/image"])
    reply, _ = _call(graph, "/vggt/save_map")
    assert not reply.success and reply.message == "nothing to save: no window has been reconstructed yet"
    for step in range(6):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    assert node.stats().windows_processed == 2

    first, _ = _call(graph, "/vggt/save_map")
    second, _ = _call(graph, "/vggt/save_map")
    assert first.success and second.success
    folder = Path(first.message)
    assert folder.parent == tmp_path / "maps" and re.fullmatch(r"map_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", folder.name)
    assert Path(second.message) != folder and Path(second.message).parent == folder.parent
    rows = np.loadtxt(folder / "trajectory.txt")
    assert np.allclose(rows[:, 0] * 1e9, T0 + DT * np.arange(6), atol=1e3)
    assert np.allclose(rows[:, 1:4], _to_map(truth, 0, 0.7)(np.stack([truth.centre(0, s) for s in range(6)])),
                       atol=1e-4)
    xyz, _ = read_ply(folder / "points.ply")
    summary = json.loads((folder / "summary.json").read_text())
    assert len(xyz) == node.stats().map_points == summary["map_points"] > 1000
    assert summary["saved_by"] == "~/save_map" and len(json.loads((folder / "cameras.json").read_text())["frames"]) == 6
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted([folder.name, Path(second.message).name])
    (tmp_path / "file").write_text("not a directory")   # map_save_dir changes at runtime; a bad one is named
    assert node.set_parameters([Parameter("map_save_dir", value=str(tmp_path / "file" / "maps"))])[0].successful
    reply, _ = _call(graph, "/vggt/save_map")
    assert not reply.success and reply.message.startswith(f"cannot save the map under {tmp_path}/file/maps: ")
    assert "\n" not in reply.message and sorted(p.name for p in tmp_path.iterdir()) == ["file", "maps"]

    points = graph.collect(PointCloud2, "/vggt/points", LATCHED)
    path = graph.collect(PathMessage, "/vggt/path", LATCHED)
    wait_for(lambda: points and path, 10, "the latched map")
    reply, _ = _call(graph, "/vggt/reset")
    assert reply.success and reply.message.startswith(f"map reset: {len(xyz)} points and 6 poses dropped")
    wait_for(lambda: len(points) == 2 and len(path) == 2, 10, "the empty map and path")
    assert points[-1].width == 0 and path[-1].poses == [] and path[-1].header.frame_id == "map"
    reply, _ = _call(graph, "/vggt/save_map")
    assert not reply.success and reply.message.endswith("yet since the last reset")

    for step in range(6, 10):   # the next keyframe starts the new map: its origin, the next window's scale
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    wait_for(lambda: len(path) == 3, 10, "the new map's path")
    expected = _to_map(truth, 6, 0.9)(np.stack([truth.centre(0, s) for s in range(6, 10)]))
    assert np.allclose(_positions(path[-1]), expected, atol=1e-4)
    assert node.stats().resets == 1 and node.stats().failed_windows == 0


def test_both_services_answer_while_a_window_is_inferred_and_the_reset_drops_it(graph, tmp_path):
    truth = rig(10, WIDTH, HEIGHT)
    gate = threading.Event()
    gate.set()
    model = GroundTruthModel(truth, scales=(0.7, 1.3), gate=gate)
    node = start_node(graph, _estimator(model), **FAST, image_topics=["/cam/image"], map_save_dir=str(tmp_path))
    path = graph.collect(PathMessage, "/vggt/path", LATCHED)
    diagnostics = graph.collect(DiagnosticArray, "/diagnostics")
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(4):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    gate.clear()
    model.entered.clear()
    for step in (4, 5):   # the second window goes into the model and stays there
        feed.send(0, rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical"))
    assert model.entered.wait(10)

    saved, seconds = _call(graph, "/vggt/save_map")
    assert saved.success and seconds < 1.0 and not gate.is_set()
    assert len(np.loadtxt(Path(saved.message) / "trajectory.txt")) == 4   # the map as it is: the first window
    reset, seconds = _call(graph, "/vggt/reset")
    assert reset.success and seconds < 1.0 and not gate.is_set()
    wait_for(lambda: path and path[-1].poses == [], 10, "the empty path")
    gate.set()
    feed.drain()
    stats = node.stats()
    assert (stats.windows_processed, stats.discarded_windows, stats.failed_windows) == (1, 1, 0)
    time.sleep(0.3)   # nothing of the old map comes after the reset
    assert path[-1].poses == []
    wait_for(lambda: diagnostics and diagnostic_values(diagnostics[-1])["resets"] == "1", 10, "diagnostics")
    values = diagnostic_values(diagnostics[-1])
    assert values["discarded_windows"] == "1" and values["_level"] == 0   # a reset is no problem


def test_a_fisheye_camera_is_rectified_and_reconstructs_closer_to_the_truth(graph):
    """The same fisheye recording and CameraInfo into two nodes, rectify auto and off. The double is a perfect
    pinhole depth model (``FisheyeRig``): what remains in each map is the error of the lens alone."""
    fisheye = FisheyeRig(10, WIDTH, HEIGHT, FISHEYE_LENS)
    truth = fisheye.truth
    doubles = {"auto": fisheye.double(), "off": fisheye.double()}
    nodes = {mode: graph.add(ReconstructNode(lambda _double=doubles[mode], **_: _estimator(_double),
                                             context=graph.context, namespace=mode,
                                             parameter_overrides=_overrides(**FAST, rectify=mode, voxel_size=0.005,
                                                                            image_topics=["/fisheye/image_raw"],
                                                                            camera_info_topics=["/fisheye/info"])))
             for mode in doubles}
    clouds = {mode: graph.collect(PointCloud2, f"/{mode}/vggt/points") for mode in nodes}
    depth = {mode: graph.collect(Image, f"/{mode}/vggt/depth/cam0") for mode in nodes}
    diagnostics = graph.collect(DiagnosticArray, "/diagnostics")
    info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="equidistant", d=list(FISHEYE_LENS),
                      k=truth.intrinsics.flatten().tolist())
    images = graph.probe.create_publisher(Image, "/fisheye/image_raw", 10)
    infos = graph.probe.create_publisher(CameraInfo, "/fisheye/info", 10)
    wait_for(lambda: images.get_subscription_count() == 2 and infos.get_subscription_count() == 2, 10, "subscribers")
    infos.publish(info)
    wait_for(lambda: all(node._camera_infos[0] is not None for node in nodes.values()), 10, "the CameraInfo")

    def received_and_idle(node, count):
        s = node.stats()
        return s.frames_received[0] == count and s.windows_processed + s.failed_windows == s.windows_emitted

    for step in range(10):   # one image at a time: every window is processed, none dropped
        images.publish(rgb_image(fisheye.fisheye[step], T0 + step * DT, "fisheye_optical"))
        wait_for(lambda: all(received_and_idle(node, step + 1) for node in nodes.values()), 10, "both nodes")
    wait_for(lambda: all(len(clouds[mode]) == 4 and len(depth[mode]) == 4 for mode in nodes), 30, "four windows each")

    first = truth.extrinsics[0, 0]   # the maps' origin; their unit is the metre (the double's)
    error = {}
    for mode in nodes:
        points = conversions.cloud_to_arrays(clouds[mode][-1])
        xyz = np.stack([points["x"], points["y"], points["z"]], 1).astype(np.float64)
        error[mode] = surface_distance(truth.scene, (xyz @ FLU_FROM_OPTICAL - first[:, 3]) @ first[:, :3])
    # rectified: the model saw pinhole images (nearest to the true pinhole renders), so the map is the room
    assert {camera for window in doubles["auto"].windows for camera, _ in window} == {1}
    assert {camera for window in doubles["off"].windows for camera, _ in window} == {0}
    assert np.percentile(error["auto"], 99) < 1e-3
    assert np.allclose(conversions.depth_from_image(depth["auto"][-1]), truth.depth[0, 9], rtol=1e-4)
    # unrectified: the true distances along bent rays; centimetres off on average, decimetres at the edges
    assert np.median(error["off"]) > 0.005 and np.percentile(error["off"], 90) > 0.05
    assert np.percentile(error["off"], 90) > 50 * np.percentile(error["auto"], 90)

    wait_for(lambda: any(diagnostic_values(d)["rectified"] == "cam0 (equidistant)" for d in diagnostics), 10,
             "the rectified camera in diagnostics")
    assert "rectify is off" in nodes["off"].stats().last_problem
    assert nodes["auto"].stats().last_problem == ""


def _overrides(**params):
    return [Parameter(name, value=value) for name, value in params.items()]
