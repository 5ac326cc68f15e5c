"""The reconstruct node over real rclpy pub/sub: geometry against ground truth, threading, bad input."""

import threading

import numpy as np
import pytest
import torch

from helpers_ros import DOMAIN_ID, Feeder, diagnostic_values, jpeg_image, rgb_image, start_node, wait_for
from helpers_truth import GroundTruthModel, rig
from vggt_quant_core.data.scenes import surface_distance

from diagnostic_msgs.msg import DiagnosticArray  # noqa: I100 (helpers_ros skips this module without rclpy)
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Odometry, Path
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from vggt_quant_core.geometry import quat_to_mat
from vggt_quant_core.kernels.cpu_isa import cpu_label, cpu_model
from vggt_quant_ros import conversions
from vggt_quant_core.stream.estimator import Estimator
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL

WIDTH, HEIGHT = 112, 84
T0, DT = 1_000_000_000, 100_000_000       # stamps: 1 s, then every 100 ms
FAST = dict(image_size=WIDTH, diagnostics_period_s=0.1)
assert 100 <= DOMAIN_ID <= 200


def _double(model: GroundTruthModel) -> Estimator:
    return Estimator(predict=model.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32", bits=32)


class Outputs:
    """Everything the node publishes, collected by the probe."""

    def __init__(self, graph, names=("cam0",)):
        self.points = graph.collect(PointCloud2, "/vggt/points")
        self.poses = graph.collect(PoseArray, "/vggt/poses")
        self.path = graph.collect(Path, "/vggt/path")
        self.odom = graph.collect(Odometry, "/vggt/odom")
        self.diagnostics = graph.collect(DiagnosticArray, "/diagnostics")
        self.depth = {name: graph.collect(Image, f"/vggt/depth/{name}") for name in names}
        self.info = {name: graph.collect(CameraInfo, f"/vggt/depth/{name}/camera_info") for name in names}

    def diagnostic(self):
        return diagnostic_values(self.diagnostics[-1])


def _map_transforms(truth, first_step, scale):
    """World -> map and back for a map anchored at camera 0 of ``first_step`` (FLU axes, ``scale``)."""
    first = truth.extrinsics[0, first_step]
    return (lambda x: scale * (x @ first[:, :3].T + first[:, 3]) @ FLU_FROM_OPTICAL.T,
            lambda y: ((y @ FLU_FROM_OPTICAL) / scale - first[:, 3]) @ first[:, :3])


def _positions(poses):
    return np.array([[p.position.x, p.position.y, p.position.z] for p in poses])


def _stamp(msg):
    return conversions.stamp_to_ns(msg.header.stamp)


def test_two_cameras_give_ground_truth_poses_depth_and_coloured_cloud(graph):
    truth = rig(10, WIDTH, HEIGHT, cameras=2)
    model = GroundTruthModel(truth, scales=(0.7, 1.3, 0.9, 1.1))
    node = start_node(graph, _double(model), **FAST, image_topics=["/rig/left/image", "/rig/right/image"],
                      camera_names=["left", "right"], window_size=4, window_stride=2, pixel_stride=2,
                      conf_percentile=0.0, cloud_mode="window", voxel_size=1e-4, sync_slop_s=0.01,
                      camera_timeout_s=600.0)   # the checks below outlast the feed: silence then is no stall
    out = Outputs(graph, names=("left", "right"))
    feed = Feeder(graph, node, ["/rig/left/image", "/rig/right/image"])
    for step in range(10):   # left as bgr8, right as padded rgb8 three milliseconds later
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "left_optical", encoding="bgr8"),
                       rgb_image(truth.images[1, step], T0 + step * DT + 3_000_000, "right_optical", pad=5)])
    assert node.stats().windows_processed == 4
    wait_for(lambda: len(out.path) == 4 and len(out.depth["right"]) == 4 and len(out.info["right"]) == 4, 10,
             "the outputs of four windows")
    to_map, to_world = _map_transforms(truth, 0, 0.7)
    newest = T0 + 9 * DT

    path = out.path[-1]
    assert path.header.frame_id == "map" and _stamp(path) == newest
    assert [_stamp(p) for p in path.poses] == [T0 + s * DT for s in range(10)]
    expected = to_map(np.stack([truth.centre(0, s) for s in range(10)]))
    assert np.allclose(_positions([p.pose for p in path.poses]), expected, atol=1e-4)

    poses = out.poses[-1]   # the last window: steps 6..9, left then right at each step
    assert poses.header.frame_id == "map" and _stamp(poses) == newest and len(poses.poses) == 8
    expected = to_map(np.stack([truth.centre(c, s) for s in range(6, 10) for c in (0, 1)]))
    assert np.allclose(_positions(poses.poses), expected, atol=1e-4)
    o = poses.poses[-1].orientation   # right camera, step 9: its optical axes in the map
    rotation = quat_to_mat(torch.tensor([o.x, o.y, o.z, o.w], dtype=torch.float64)).numpy()
    assert np.allclose(rotation, FLU_FROM_OPTICAL @ truth.extrinsics[0, 0, :, :3] @ truth.extrinsics[1, 9, :, :3].T,
                       atol=1e-5)

    odom = out.odom[-1]
    assert (odom.header.frame_id, odom.child_frame_id, _stamp(odom)) == ("map", "left_optical", newest)
    assert np.allclose(_positions([odom.pose.pose]), to_map(truth.centre(0, 9)[None]), atol=1e-4)

    for camera, name, frame, offset in ((0, "left", "left_optical", 0), (1, "right", "right_optical", 3_000_000)):
        depth, info = out.depth[name][-1], out.info[name][-1]
        assert (depth.encoding, depth.width, depth.height, depth.header.frame_id) == ("32FC1", WIDTH, HEIGHT, frame)
        assert _stamp(depth) == _stamp(info) == newest + offset and info.header.frame_id == frame
        # depth in map units: the true depth times the map's scale, whatever the window's own scale was
        assert np.allclose(conversions.depth_from_image(depth), 0.7 * truth.depth[camera, 9], rtol=1e-5)
        assert np.allclose(np.reshape(info.k, (3, 3)), truth.intrinsics, rtol=1e-4)
        assert (info.width, info.height) == (WIDTH, HEIGHT)

    cloud = out.points[-1]
    assert cloud.header.frame_id == "map" and _stamp(cloud) == newest
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    points = conversions.cloud_to_arrays(cloud)
    world = to_world(np.stack([points["x"], points["y"], points["z"]], 1).astype(np.float64))
    assert len(world) > 4 * 2 * (WIDTH // 2) * (HEIGHT // 2) * 0.9    # 8 images at stride 2, tiny voxels
    assert np.percentile(surface_distance(truth.scene, world), 99) < 1e-3
    # colours: points that project onto a pixel of the newest left image carry that pixel's colour
    extrinsic = truth.extrinsics[0, 9]
    camera_points = world @ extrinsic[:, :3].T + extrinsic[:, 3]
    uvw = camera_points @ truth.intrinsics.T
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    inside = (u >= 0) & (u <= WIDTH - 1) & (v >= 0) & (v <= HEIGHT - 1) & (camera_points[:, 2] > 0)
    on_pixel = inside & (np.abs(u - u.round()) < 1e-3) & (np.abs(v - v.round()) < 1e-3)
    ui, vi = u[on_pixel].round().astype(int), v[on_pixel].round().astype(int)
    visible = np.abs(truth.depth[0, 9, vi, ui] - camera_points[on_pixel, 2]) < 1e-3
    assert visible.sum() > 1000
    assert np.array_equal(points["rgb"][on_pixel][visible], truth.images[0, 9, vi[visible], ui[visible]])

    wait_for(lambda: out.diagnostics and out.diagnostic()["windows_processed"] == "4", 10, "diagnostics")
    values = out.diagnostic()
    assert values["state"] == "running" and values["model"] == "ground truth" and values["bits"] == "32"
    assert values["frames_received"] == "20" and values["keyframes"] == "10" and values["dropped_windows"] == "0"
    assert float(values["inference_ms"]) >= 0 and float(values["overhead_ms"]) > 0
    assert float(values["alignment_rmse"]) < 1e-4 and values["_level"] == 0

    late = graph.collect(Path, "/vggt/path", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    wait_for(lambda: late, 10, "a late subscriber to get the latched path")
    assert len(late) == 1 and len(late[0].poses) == 10


def test_frames_arrive_during_inference_and_windows_drop_when_it_is_slower(graph):
    truth = rig(10, WIDTH, HEIGHT)
    gate = threading.Event()
    model = GroundTruthModel(truth, scales=(0.8, 1.5), gate=gate)
    node = start_node(graph, _double(model), **FAST, image_topics=["/cam/image"], window_size=3, window_stride=1,
                      max_queue=1, conf_percentile=0.0, voxel_size=0.02)
    out = Outputs(graph)
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(3):
        feed.send(0, rgb_image(truth.images[0, step], T0 + step * DT))
    assert model.entered.wait(timeout=30)
    for step in range(3, 7):   # inference is held: every frame must still be received (Feeder waits for it)
        feed.send(0, rgb_image(truth.images[0, step], T0 + step * DT))
    assert not gate.is_set() and model.calls == 0
    stats = node.stats()
    assert (stats.windows_emitted, stats.dropped_windows, stats.windows_processed) == (5, 3, 0)
    wait_for(lambda: out.diagnostics and out.diagnostic()["dropped_windows"] == "3", 10, "diagnostics")
    assert out.diagnostic()["_level"] == 1   # WARN: windows were dropped
    gate.set()
    wait_for(lambda: node.stats().windows_processed == 2, 30, "the two windows left")
    # the second window is the newest frame chained to the map through the first window's last two
    assert [step for _, step in model.windows[1]] == [1, 2, 6]
    wait_for(lambda: len(out.path) == 2 and len(out.points) == 2, 10, "outputs")
    to_map, to_world = _map_transforms(truth, 0, 0.8)
    assert [_stamp(p) for p in out.path[-1].poses] == [T0 + s * DT for s in (0, 1, 2, 6)]
    expected = to_map(np.stack([truth.centre(0, s) for s in (0, 1, 2, 6)]))
    assert np.allclose(_positions([p.pose for p in out.path[-1].poses]), expected, atol=1e-4)
    points = conversions.cloud_to_arrays(out.points[-1])   # the accumulated map of both windows
    world = to_world(np.stack([points["x"], points["y"], points["z"]], 1).astype(np.float64))
    assert len(world) == node.stats().map_points > 1000
    assert np.percentile(surface_distance(truth.scene, world), 99) < 1e-3


def test_bad_input_is_logged_counted_and_skipped(graph):
    truth = rig(10, WIDTH, HEIGHT)
    node = start_node(graph, _double(GroundTruthModel(truth)), **FAST, image_topics=["/cam/image"], window_size=2,
                      window_stride=1)
    out = Outputs(graph)
    feed = Feeder(graph, node, ["/cam/image"])
    feed.send(0, rgb_image(truth.images[0, 0], T0))

    def bad(index, **change):
        msg = rgb_image(truth.images[0, index], T0 + index * DT)
        data = change.pop("data", None)
        for key, value in change.items():
            setattr(msg, key, value)
        if data is not None:
            msg.data = data
        return msg

    cases = [(bad(1, encoding="bayer_rggb8"), "unsupported encoding 'bayer_rggb8'"),
             (bad(2, height=0, width=0, step=0, data=b""), "empty image"),
             (bad(3, data=bytes(100)), "data has 100 bytes"),
             (bad(4, width=8, height=6, step=24, data=bytes(144)), "too small"),
             (rgb_image(truth.images[0, 5], T0 - DT), "not after the previous one")]
    for rejected, (msg, reason) in enumerate(cases, start=1):
        feed.send(0, msg)
        wait_for(lambda: node.stats().rejected_frames == rejected, 10, f"rejection: {reason}")
        assert reason in node.stats().last_problem
        assert node.stats().last_problem.startswith("cam0 (/cam/image): ")
    wait_for(lambda: out.diagnostics and out.diagnostic()["rejected_frames"] == "5", 10, "diagnostics")
    for step in (6, 7):     # the node goes on: good frames make windows
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT)])
    assert node.stats().windows_processed == 2
    assert node.stats().failed_windows == 0


def test_non_finite_model_output_skips_the_window(graph):
    truth = rig(10, WIDTH, HEIGHT)
    model = GroundTruthModel(truth, scales=(1.0, 0.5, 2.0), corrupt=[0])
    node = start_node(graph, _double(model), **FAST, image_topics=["/cam/image"], window_size=3, window_stride=1,
                      conf_percentile=0.0)
    out = Outputs(graph)
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(5):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT)])
    assert node.stats().windows_processed == 2
    stats = node.stats()
    assert stats.failed_windows == 1 and "non-finite camera poses for 3 of 3 images" in stats.last_problem
    wait_for(lambda: len(out.path) == 2, 10, "paths")
    # the map starts with the first good window (steps 1..3), at its scale
    to_map, _ = _map_transforms(truth, 1, 0.5)
    expected = to_map(np.stack([truth.centre(0, s) for s in (1, 2, 3, 4)]))
    assert np.allclose(_positions([p.pose for p in out.path[-1].poses]), expected, atol=1e-4)


def test_a_camera_that_stops_is_reported_and_the_node_recovers(graph):
    truth = rig(10, WIDTH, HEIGHT, cameras=2)
    node = start_node(graph, _double(GroundTruthModel(truth)), **FAST, image_topics=["/a/image", "/b/image"],
                      window_size=2, window_stride=1, camera_timeout_s=1.0)
    out = Outputs(graph, names=("cam0", "cam1"))
    feed = Feeder(graph, node, ["/a/image", "/b/image"])
    for step in range(2):
        feed.send_all([rgb_image(truth.images[c, step], T0 + step * DT) for c in (0, 1)])
    assert node.stats().windows_processed == 1
    step = 2

    def only_first_camera_sends():
        nonlocal step
        feed.send(0, rgb_image(truth.images[0, step % 10], T0 + step * DT))
        step += 1
        return out.diagnostics and out.diagnostic()["stalled_cameras"] == "cam1"

    wait_for(only_first_camera_sends, 20, "cam1 to be reported")
    values = out.diagnostic()
    assert values["_level"] == 1 and values["_message"].startswith("no images from cam1 for")
    assert node.stats().windows_processed == 1            # windows wait for every camera
    reported = len(out.diagnostics)

    def both_cameras_send():   # cam0 too, or it would be reported silent instead; any report since counts
        nonlocal step
        for camera in (0, 1):
            feed.send(camera, rgb_image(truth.images[camera, step % 10], T0 + step * DT))
        step += 1
        return any(diagnostic_values(d)["stalled_cameras"] == "" for d in out.diagnostics[reported:])

    wait_for(both_cameras_send, 10, "cam1 to be back")


def test_real_checkpoint_with_compressed_images_and_camera_info(graph, golden_dir):
    """The real (tiny, golden) model end to end: JPEG input, calibrated intrinsics, all outputs."""
    from vggt_quant_core.data import generate_sequence, preprocessed_intrinsics

    sequence = generate_sequence(3, 3, WIDTH, HEIGHT).cameras[0]
    node = start_node(graph, None, diagnostics_period_s=0.1, checkpoint=str(golden_dir / "tiny_a"),
                      image_topics=["/cam/image"], transport="compressed", camera_info_topics=["/cam/camera_info"],
                      intrinsics_source="camera_info", window_size=2, window_stride=1, conf_percentile=0.0)
    out = Outputs(graph)
    info_pub = graph.probe.create_publisher(CameraInfo, "/cam/camera_info", 10)
    k = np.array([[90.0, 0, 55.5], [0, 92.0, 41.0], [0, 0, 1]])
    wait_for(lambda: info_pub.get_subscription_count() > 0, 10, "the camera_info subscription")
    info_pub.publish(conversions.camera_info(conversions.header("cam", T0), k, WIDTH, HEIGHT))
    wait_for(lambda: node._camera_infos[0] is not None, 10, "CameraInfo to arrive")
    feed = Feeder(graph, node, ["/cam/image/compressed"], msg_type=CompressedImage)   # image_transport naming
    wait_for(lambda: node.estimator is not None, 30, "the model to load")
    for step in range(3):
        feed.send_all([jpeg_image(sequence.images[step], T0 + step * DT, "cam_optical")])
    assert node.stats().windows_processed + node.stats().failed_windows == 2
    assert node.stats().windows_processed >= 1, node.stats().last_problem
    wait_for(lambda: out.info["cam0"] and out.points and out.diagnostics, 10, "outputs")
    depth, info = out.depth["cam0"][-1], out.info["cam0"][-1]
    assert (depth.width, depth.height, depth.encoding) == (56, 42, "32FC1")   # tiny_a works at 56 pixels
    assert np.allclose(np.reshape(info.k, (3, 3)), preprocessed_intrinsics(k, WIDTH, HEIGHT, "crop", 56))
    assert len(out.poses[-1].poses) == 2
    cloud = conversions.cloud_to_arrays(out.points[-1])
    assert len(cloud["x"]) > 0 and np.isfinite(cloud["x"]).all()
    values = out.diagnostic()
    assert values["model"].endswith("tiny_a") and values["bits"] == "32" and values["backend"] == "cpu fp32"
    assert values["cpu"] == cpu_label() and cpu_model() in values["cpu"]  # next to the timings


def test_cameras_of_different_sizes_are_padded_and_reported(graph, golden_dir):
    from vggt_quant_core.data import generate_sequence

    wide, narrow = (generate_sequence(4, 2, WIDTH, height).cameras[0] for height in (HEIGHT, 70))
    node = start_node(graph, None, diagnostics_period_s=0.1, checkpoint=str(golden_dir / "tiny_a"),
                      image_topics=["/a/image", "/b/image"], window_size=2, window_stride=1, conf_percentile=0.0)
    out = Outputs(graph, names=("cam0", "cam1"))
    feed = Feeder(graph, node, ["/a/image", "/b/image"])
    wait_for(lambda: node.estimator is not None, 30, "the model to load")
    for step in range(2):
        feed.send_all([rgb_image(wide.images[step], T0 + step * DT), rgb_image(narrow.images[step], T0 + step * DT)])
    assert node.stats().windows_processed == 1, node.stats().last_problem
    assert "images of different sizes in one window (model inputs 56x28, 56x42)" in node.stats().last_problem
    wait_for(lambda: out.depth["cam1"], 10, "depth of the smaller camera")
    assert (out.depth["cam1"][-1].width, out.depth["cam1"][-1].height) == (56, 42)   # the padded model input


def test_runtime_parameters_apply_and_read_only_ones_refuse(graph):
    from rclpy.parameter import Parameter

    truth = rig(10, WIDTH, HEIGHT)
    node = start_node(graph, _double(GroundTruthModel(truth)), **FAST, image_topics=["/cam/image"], window_size=4,
                      window_stride=2)
    feed = Feeder(graph, node, ["/cam/image"])
    results = node.set_parameters([Parameter("frame_stride", value=3), Parameter("window_size", value=3)])
    assert results[0].successful and not results[1].successful
    assert node.get_parameter("window_size").value == 4
    for step in range(7):
        feed.send(0, rgb_image(truth.images[0, step], T0 + step * DT))
    assert node.stats().keyframes == 3    # steps 0, 3 and 6


def test_configuration_errors_are_one_line_and_fatal(graph, tmp_path):
    from vggt_quant_ros.reconstruct_node import ConfigurationError

    for params, reason in [
        (dict(window_size=4, window_stride=4), "window_stride (4) must be smaller than window_size (4)"),
        (dict(checkpoint=str(tmp_path / "missing.pt")), "missing.pt not found"),
        (dict(transport="theora"), "parameter transport is 'theora'; expected one of raw, compressed"),
        (dict(window_size=1000), "window_size"),
        (dict(image_topics=["/a", "/b"], camera_names=["only_one"]), "camera_names has 1 entries for 2"),
        (dict(intrinsics_source="camera_info"), "camera_info_topics is empty"),
    ]:
        with pytest.raises(ConfigurationError, match=reason.replace("(", r"\(").replace(")", r"\)")) as info:
            start_node(graph, None, **params)
        assert "\n" not in str(info.value)


def test_a_model_that_cannot_be_loaded_is_fatal(graph):
    from vggt_quant_core.model import CheckpointError
    from vggt_quant_ros.reconstruct_node import ReconstructNode

    def broken(**_):
        raise CheckpointError("model.pt: truncated file")

    node = graph.add(ReconstructNode(broken, context=graph.context))
    wait_for(node.fatal.done, 10, "the fatal future")
    assert node.fatal.result() == "cannot load the model: model.pt: truncated file"


def test_tf_is_published_when_tf2_is_importable(graph, monkeypatch):
    import sys
    import types

    sent = []
    fake = types.ModuleType("tf2_ros")
    fake.TransformBroadcaster = lambda node: types.SimpleNamespace(sendTransform=sent.extend)
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)
    truth = rig(10, WIDTH, HEIGHT)
    node = start_node(graph, _double(GroundTruthModel(truth, scales=(1.0,))), **FAST, image_topics=["/cam/image"],
                      window_size=2, window_stride=1)
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(2):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    assert sent
    transform = sent[-1]
    assert (transform.header.frame_id, transform.child_frame_id) == ("map", "cam_optical")
    assert conversions.stamp_to_ns(transform.header.stamp) == T0 + DT
    to_map, _ = _map_transforms(truth, 0, 1.0)
    t = transform.transform.translation
    assert np.allclose([t.x, t.y, t.z], to_map(truth.centre(0, 1)[None])[0], atol=1e-4)
