"""rosbag2 recordings: written with our writer, read back with rosbags' own reader and with ours."""

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.bags import image_streams, read_bag, write_bag
from vggt_quant_core.data.image_messages import image_to_rgb


@pytest.fixture(scope="module")
def stereo():
    return generate_sequence(21, 4, 40, 30, cameras=2)


@pytest.mark.parametrize("storage,suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_bag_holds_images_and_camera_info_with_stamps_and_frames(stereo, tmp_path, storage, suffix):
    bag = write_bag(tmp_path / "run", stereo, storage=storage)
    assert (bag / "metadata.yaml").exists() and (bag / f"run{suffix}").exists()
    with AnyReader([bag]) as reader:  # rosbags' own reader, independent of ours
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/cam0/image_raw": "sensor_msgs/msg/Image", "/cam0/camera_info": "sensor_msgs/msg/CameraInfo",
            "/cam1/image_raw": "sensor_msgs/msg/Image", "/cam1/camera_info": "sensor_msgs/msg/CameraInfo"}
        seen = {}
        for connection, time_ns, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            camera = int(connection.topic[4])
            frame = int(np.searchsorted(stereo.timestamps_ns, time_ns))
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == time_ns == stereo.timestamps_ns[frame]
            assert msg.header.frame_id == f"cam{camera}_optical_frame"
            if connection.msgtype.endswith("Image"):
                assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 30, 40, 120)
                pixels = np.asarray(msg.data).reshape(30, 40, 3)
                assert np.array_equal(pixels, stereo.cameras[camera].images[frame])
            else:
                np.testing.assert_allclose(np.reshape(msg.k, (3, 3)), stereo.cameras[camera].intrinsics[frame],
                                           rtol=1e-6)
                fx = stereo.cameras[camera].intrinsics[frame][0, 0]
                assert msg.p[3] == pytest.approx(-fx * stereo.baseline * camera, rel=1e-6)
            seen[connection.topic] = seen.get(connection.topic, 0) + 1
        assert seen == dict.fromkeys(seen, 4) and len(seen) == 4

    cameras = read_bag(bag / f"run{suffix}")  # the storage file alone also opens
    assert sorted(cameras) == ["/cam0/image_raw", "/cam1/image_raw"]
    for index, topic in enumerate(sorted(cameras)):
        assert np.array_equal(cameras[topic].images, stereo.cameras[index].images)
        assert np.array_equal(cameras[topic].stamps_ns, stereo.timestamps_ns)
        np.testing.assert_allclose(cameras[topic].intrinsics, stereo.cameras[index].intrinsics, rtol=1e-6)


def test_bag_without_camera_info_and_rewrite_replaces(tmp_path):
    first, second = generate_sequence(1, 2, 16, 12), generate_sequence(2, 3, 16, 12)
    write_bag(tmp_path / "run", first, camera_info=False)
    write_bag(tmp_path / "run", second, camera_info=False)
    (camera,) = read_bag(tmp_path / "run").values()
    assert camera.intrinsics is None and camera.frame_id == "cam0_optical_frame"
    assert np.array_equal(camera.images, second.cameras[0].images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no scratch directories left behind


def test_shared_decoder_handles_bgr_mono_and_row_padding_of_bag_messages():
    class Msg:
        pass

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Msg()
    msg.height, msg.width, msg.step, msg.encoding = 2, 3, 12, "bgr8"  # 3 padding bytes per row
    msg.data = np.concatenate([np.concatenate([rgb[r, :, ::-1].reshape(-1), [255] * 3])
                               for r in range(2)]).astype(np.uint8)
    assert np.array_equal(image_to_rgb(msg), rgb)
    msg.encoding, msg.step, msg.data = "mono8", 3, np.array([1, 2, 3, 4, 5, 6], dtype=np.uint8)
    assert image_to_rgb(msg)[1, 2].tolist() == [6, 6, 6]
    msg.encoding = "bayer_rggb8"
    with pytest.raises(ValueError, match="unsupported encoding 'bayer_rggb8'"):
        image_to_rgb(msg)


def test_unreadable_bags_are_named(tmp_path):
    with pytest.raises(ValueError, match="no such bag"):
        read_bag(tmp_path / "missing")
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    with pytest.raises(ValueError, match="junk.mcap: cannot read as rosbag2"):
        read_bag(tmp_path / "junk.mcap")
    with pytest.raises(ValueError, match="storage must be one of"):
        write_bag(tmp_path / "x", generate_sequence(1, 1, 4, 4), storage="bag")


def test_odometry_and_registered_depth_hold_the_true_camera_pose_and_depth_in_millimetres(tmp_path):
    # a hall: sky pixels have no surface, some floor is further than 16 bits of millimetres reach
    sequence = generate_sequence(1, 3, 40, 30, kind="hall", trajectory="forward")
    camera = sequence.cameras[0]
    assert (camera.depth == 0).any() and (camera.depth > 65.6).any()
    bag = write_bag(tmp_path / "run", sequence, odometry=True, depth=True)
    with AnyReader([bag]) as reader:  # rosbags' own reader, independent of ours
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/cam0/image_raw": "sensor_msgs/msg/Image", "/cam0/camera_info": "sensor_msgs/msg/CameraInfo",
            "/odom": "nav_msgs/msg/Odometry", "/cam0/depth/image_raw": "sensor_msgs/msg/Image"}
        odometry, depth = [], []
        for connection, time_ns, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == time_ns
            if connection.topic == "/odom":
                odometry.append((time_ns, msg))
            elif connection.topic == "/cam0/depth/image_raw":
                depth.append((time_ns, msg))
    assert [t for t, _ in odometry] == [t for t, _ in depth] == sequence.timestamps_ns.tolist()
    for frame, (_, msg) in enumerate(odometry):
        assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "cam0_optical_frame")
        pose = msg.pose.pose
        position = np.array([pose.position.x, pose.position.y, pose.position.z])
        q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
        x, y, z, w = q
        world_from_camera = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        # the pose maps the camera's origin and axes into the world: camera-from-world of the ground truth back
        extrinsic = camera.extrinsics[frame].astype(np.float64)
        np.testing.assert_allclose(extrinsic[:, :3] @ position + extrinsic[:, 3], 0, atol=1e-5)
        np.testing.assert_allclose(world_from_camera.T, extrinsic[:, :3], atol=1e-5)
        assert np.linalg.norm(q) == pytest.approx(1, abs=1e-6)
    for frame, (_, msg) in enumerate(depth):
        assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("16UC1", 30, 40, 80, 0)
        assert msg.header.frame_id == "cam0_optical_frame"
        millimetres = np.frombuffer(bytes(msg.data), "<u2").reshape(30, 40)
        true = camera.depth[frame]
        near = (true > 0) & (true < 65.0)
        assert np.abs(millimetres[near] / 1000.0 - true[near]).max() <= 0.0005
        assert (millimetres[true == 0] == 0).all() and (millimetres[true > 65.6] == 0).all()
    # the colour topic reads back as before; the depth topic is no camera to reconstruct or calibrate from
    assert list(read_bag(bag)) == ["/cam0/image_raw"] and list(image_streams(bag)) == ["/cam0/image_raw"]
    assert np.array_equal(read_bag(bag)["/cam0/image_raw"].images, camera.images)
