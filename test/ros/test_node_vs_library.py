"""The same recording through the ROS node (rclpy pub/sub, its threads and queue) and through the streaming library
(``StreamReconstructor.push``) gives the same trajectory and map: the node is ROS I/O over the library."""

import dataclasses

import numpy as np

from helpers_ros import Feeder, rgb_image, start_node, wait_for
from helpers_truth import rig
from vggt_quant_core.presets import load_model
from vggt_quant_core.stream import Frame, StreamReconstructor, StreamSettings, estimator_from_model

from nav_msgs.msg import Path  # noqa: I100 (helpers_ros skips this module without rclpy)
from sensor_msgs.msg import PointCloud2
from vggt_quant_ros import conversions

WIDTH, HEIGHT, STEPS = 56, 42, 12
T0, DT = 1_000_000_000, 100_000_000
PARAMS = dict(image_size=WIDTH, window_size=4, window_stride=2, min_motion=0.5, voxel_size=0.01)


def test_the_node_and_the_library_reconstruct_a_recording_alike(graph):
    truth = rig(STEPS, WIDTH, HEIGHT)
    model, _, name = load_model(None, "vggt-tiny-synth")   # a real model: reuse of frames on both sides too
    node = start_node(graph, estimator_from_model(model, WIDTH, name), image_topics=["/cam/image"],
                      diagnostics_period_s=0.1, camera_timeout_s=600.0, **PARAMS)
    paths, clouds = graph.collect(Path, "/vggt/path"), graph.collect(PointCloud2, "/vggt/points")
    feed = Feeder(graph, node, ["/cam/image"])
    for step in range(STEPS):
        feed.send_all([rgb_image(truth.images[0, step], T0 + step * DT, "cam_optical")])
    windows = node.stats().windows_processed
    wait_for(lambda: len(paths) == windows and len(clouds) == windows, 10, "the node's outputs")

    settings = dataclasses.replace(StreamSettings.defaults(), **PARAMS)
    assert node.reconstruction.settings == settings
    library = StreamReconstructor(settings, estimator_from_model(model, WIDTH, name))
    results = [library.push(Frame(camera=0, stamp_ns=T0 + step * DT, rgb=truth.images[0, step], frame_id="cam_optical"))
               for step in range(STEPS)]
    assert sum(result is not None for result in results) == windows >= 4
    assert library.counts.keyframes == node.stats().keyframes

    poses = paths[-1].poses
    assert [conversions.stamp_to_ns(p.header.stamp) for p in poses] == [pose.stamp_ns for pose in library.trajectory]
    node_positions = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in poses])
    node_quaternions = np.array([[p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z,
                                  p.pose.orientation.w] for p in poses])
    assert np.allclose(node_positions, [pose.position for pose in library.trajectory], rtol=0, atol=1e-6)
    assert np.allclose(node_quaternions, [pose.quaternion for pose in library.trajectory], rtol=0, atol=1e-6)
    assert np.ptp(node_positions, axis=0).max() > 1e-3   # a trajectory, not a point

    cloud = conversions.cloud_to_arrays(clouds[-1])
    xyz, rgb, _ = library.cloud()
    assert len(xyz) == len(cloud["x"]) > 500
    assert np.allclose(np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1), xyz, rtol=0, atol=1e-6)
    assert np.array_equal(cloud["rgb"], rgb)
