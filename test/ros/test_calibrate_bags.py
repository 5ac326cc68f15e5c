"""The ``calibrate`` node: real rosbag2 (sqlite3, mcap) and ROS 1 bags in, a quantized checkpoint out,
which ``reconstruct`` loads; every kind of bad input gets a one-line error."""

import dataclasses
import json

import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import Writer as Ros2Writer
from rosbags.typesys import Stores, get_typestore

from helpers import GOLDEN
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.bags import bag_sources, split_at_gaps, write_bag
from vggt_quant_core.quant import read_header
from vggt_quant_ros.calibrate_bags import main

WIDTH, HEIGHT = 56, 42


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    stereo = generate_sequence(11, 6, WIDTH, HEIGHT, cameras=2)
    mono = generate_sequence(12, 6, WIDTH, HEIGHT)
    return {"raw_sqlite": write_bag(root / "stereo_raw", stereo, storage="sqlite3"),
            "jpeg_mcap": write_bag(root / "mono_jpeg", mono, storage="mcap", compression="jpeg"),
            "root": root}


def _calibrate(bags, out, *extra):
    return main(["--bag", str(bags["raw_sqlite"]), "--bag", str(bags["jpeg_mcap"]), "--model", str(GOLDEN / "tiny_a"),
                 "--method", "dsfq", "--bits", "w4a4", "--window", "3", "--stride", "1", "--samples", "4",
                 "--clusters", "2", "--epochs", "1", "--out", str(out), *extra])


def test_bags_to_checkpoint_with_provenance(bags, tmp_path, capsys):
    out = tmp_path / "calibrated.safetensors"
    assert _calibrate(bags, out) == 0
    captured = capsys.readouterr()
    assert "/cam0/image_raw (6 frames), /cam1/image_raw (6 frames)" in captured.err  # topics listed
    assert "/cam0/image_raw/compressed (6 frames)" in captured.err
    assert "block reconstruction loss" in captured.out
    calibration = read_header(out)["calibration"]
    assert calibration["bags"] == [str(bags["raw_sqlite"]), str(bags["jpeg_mcap"])]
    assert calibration["topics"] == ["/cam0/image_raw", "/cam0/image_raw/compressed", "/cam1/image_raw"]
    assert len(calibration["samples"]) == 4
    assert all(s.startswith(("stereo_raw/cam", "mono_jpeg/cam0")) for s in calibration["samples"])
    report = json.loads(out.with_name("calibrated.report.json").read_text())
    assert report["pool_size"] == 3 * 4  # 3 topics x (6 - 3 + 1) windows
    assert out.with_name("calibrated.summary.txt").exists()


def test_reconstruct_loads_the_calibrated_checkpoint(bags, tmp_path, graph):
    from helpers_ros import Feeder, rgb_image, start_node, wait_for
    from sensor_msgs.msg import PointCloud2

    out = tmp_path / "q.safetensors"
    assert _calibrate(bags, out, "--method", "rtn") == 0
    node = start_node(graph, None, checkpoint=str(out), image_topics=["/cam/image"], window_size=2, window_stride=1,
                      conf_percentile=0.0)
    clouds = graph.collect(PointCloud2, "/vggt/points")
    feed = Feeder(graph, node, ["/cam/image"])
    wait_for(lambda: node.estimator is not None, 60, "the quantized model to load")
    assert node.estimator.bits == 4 and "rtn-w4a4" in node.estimator.description
    frames = generate_sequence(5, 2, WIDTH, HEIGHT).cameras[0].images
    for step in range(2):
        feed.send_all([rgb_image(frames[step], 1_000_000_000 + step * 100_000_000)])
    wait_for(lambda: clouds, 30, "a point cloud")
    assert clouds[-1].width > 0


def test_windows_never_cross_time_gaps(tmp_path):
    sequence = generate_sequence(13, 8, WIDTH, HEIGHT)
    stamps = sequence.timestamps_ns.copy()
    stamps[4:] += 5_000_000_000  # a 5 s gap after frame 3
    bag = write_bag(tmp_path / "gap", dataclasses.replace(sequence, timestamps_ns=stamps))
    sources, found = bag_sources([bag], max_gap_s=1.0)
    assert [len(s) for s in sources] == [4, 4] and found[str(bag)] == {"/cam0/image_raw": 8}
    assert split_at_gaps(np.array([0, 1, 2, 10, 11]), 3) == [(0, 2), (3, 4)]
    frames = sources[1].frames(0, 2)
    assert np.array_equal(frames[0], sequence.cameras[0].images[4])  # lazily decoded, the right frames


def test_ros1_bags_are_read(tmp_path):
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    images = generate_sequence(14, 3, WIDTH, HEIGHT).cameras[0].images
    path = tmp_path / "old.bag"
    with Ros1Writer(path) as writer:
        connection = writer.add_connection("/camera/rgb", "sensor_msgs/msg/Image", typestore=store)
        for i, image in enumerate(images):
            stamp = types["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=0)
            header = types["std_msgs/msg/Header"](seq=i, stamp=stamp, frame_id="camera")
            msg = types["sensor_msgs/msg/Image"](
                header=header, height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0, step=3 * WIDTH,
                data=image.reshape(-1))
            writer.write(connection, (100 + i) * 10**9, store.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    sources, found = bag_sources([path])
    assert found[str(path)] == {"/camera/rgb": 3}
    assert np.array_equal(sources[0].frames(2, 3)[0], images[2])


def _bayer_bag(path):
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    with Ros2Writer(path, version=9) as writer:
        connection = writer.add_connection("/cam/bayer", "sensor_msgs/msg/Image", typestore=store)
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                              frame_id="cam")
        msg = types["sensor_msgs/msg/Image"](
            header=header, height=4, width=4, encoding="bayer_rggb8", is_bigendian=0, step=4,
            data=np.zeros(16, dtype=np.uint8))
        writer.write(connection, 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def _info_only_bag(path):
    store = get_typestore(Stores.ROS2_KILTED)
    with Ros2Writer(path, version=9) as writer:
        writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        connection = writer.add_connection("/rosout_like", "std_msgs/msg/String", typestore=store)
        writer.write(connection, 1, store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"),
                                                        "std_msgs/msg/String"))
    return path


def _empty_bag(path):
    with Ros2Writer(path, version=9) as writer:
        writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=get_typestore(Stores.ROS2_KILTED))
    return path


def _junk(path):
    path.write_bytes(b"junk" * 100)
    return path


def _truncated(path, source):
    data = next(source.glob("*.mcap")).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("make,message", [
    (lambda tmp, bags: tmp / "missing", "no such bag"),
    (lambda tmp, bags: _junk(tmp / "junk.bag"), "cannot read as a bag"),
    (lambda tmp, bags: _empty_bag(tmp / "empty"), "the bag is empty"),
    (lambda tmp, bags: _truncated(tmp / "cut.mcap", bags["jpeg_mcap"]), "cannot read as a bag"),
    (lambda tmp, bags: _info_only_bag(tmp / "info_only"), "no sensor_msgs/Image or CompressedImage topics"),
    (lambda tmp, bags: _bayer_bag(tmp / "bayer"), "unsupported encoding 'bayer_rggb8'"),
])
def test_bad_bags_get_one_line_errors(bags, tmp_path, capsys, make, message):
    bag = make(tmp_path, bags)
    code = main(["--bag", str(bag), "--model", str(GOLDEN / "tiny_a"), "--out", str(tmp_path / "q.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "q.safetensors").exists()


def test_missing_topic_and_too_few_frames(bags, tmp_path, capsys):
    base = ["--bag", str(bags["raw_sqlite"]), "--model", str(GOLDEN / "tiny_a"), "--out", str(tmp_path / "q")]
    assert main(base + ["--topic", "/front/image"]) == 2
    assert "no topic /front/image in the bags; image topics found: /cam0/image_raw, /cam1/image_raw" in \
        capsys.readouterr().err
    assert main(base + ["--window", "10"]) == 2
    assert "no window of 10 frames fits: the longest sequence has 6 frames" in capsys.readouterr().err
