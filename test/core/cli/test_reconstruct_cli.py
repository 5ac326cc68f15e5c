"""``vggt-quant reconstruct`` end to end: image files, a video and a rosbag2 recording through the streaming
reconstruction with a parameter file; bad input gives one line, exit 2 and no output folder."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from helpers_truth import GroundTruthModel, Rig
from vggt_quant_core.cli import reconstruct as command
from vggt_quant_core.cli.main import main
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.bags import write_bag
from vggt_quant_core.export import read_ply
from vggt_quant_core.stream import Estimator, default_parameter_file
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL

WIDTH, HEIGHT, SEED, FRAMES = 56, 42, 3, 11   # seed 3: a closed room


@pytest.fixture(scope="module")
def sequence():
    return generate_sequence(SEED, FRAMES, WIDTH, HEIGHT, trajectory="orbit")


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    """The shipped parameter file with windows of 4 every 2 at the recording's width."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    changes = {"window_size": 4, "window_stride": 2, "image_size": WIDTH, "conf_percentile": 0.0}
    lines = default_parameter_file().read_text().splitlines()
    for name, value in changes.items():
        lines = [f"    {name}: {value}" if line.strip().startswith(f"{name}:") else line for line in lines]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def images(sequence, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for index, rgb in enumerate(sequence.cameras[0].images):
        Image.fromarray(rgb).save(folder / f"frame_{index}.png")
    return folder


def _truth_double(monkeypatch, sequence):
    """The model double that answers with the true geometry (0.7 model units per metre in the first window)."""
    double = GroundTruthModel(Rig.of(sequence), scales=(0.7, 1.3, 0.9, 1.1))
    estimator = Estimator(predict=double.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32",
                          bits=32)
    monkeypatch.setattr(command, "load_estimator", lambda *args: estimator)
    return double


def _map_positions(sequence, scale):
    first = sequence.cameras[0].extrinsics[0].astype(np.float64)
    centres = np.stack([-e[:, :3].T @ e[:, 3] for e in sequence.cameras[0].extrinsics.astype(np.float64)])
    return scale * (centres @ first[:, :3].T + first[:, 3]) @ FLU_FROM_OPTICAL.T


def test_images_stream_into_the_true_map_trajectory_and_depth(images, params, sequence, tmp_path, capsys,
                                                              monkeypatch):
    _truth_double(monkeypatch, sequence)
    out = tmp_path / "run"
    assert main(["reconstruct", "--images", str(images), "--out", str(out), "--params-file", str(params)]) == 0
    screen = capsys.readouterr().out
    assert "reconstructed 11 frames (0 rejected)" in screen and "5 windows of 4 every 2 (0 failed)" in screen
    rows = np.loadtxt(out / "trajectory.txt")
    assert np.allclose(rows[:, 0], np.arange(FRAMES) / 10)   # --fps 10
    assert np.allclose(rows[:, 1:4], _map_positions(sequence, 0.7), atol=1e-4)
    # windows end at frames 3, 5, 7, 9; the final one at 10 (the tail)
    assert sorted(p.name for p in (out / "depth").glob("*.npy")) == [f"frame_{i:03d}.npy" for i in (3, 5, 7, 9, 10)]
    assert np.allclose(np.load(out / "depth" / "frame_010.npy"), 0.7 * sequence.cameras[0].depth[10], rtol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == FRAMES and summary["processed"] == 5 and summary["settings"]["window_size"] == 4
    xyz, _ = read_ply(out / "points.ply")
    assert len(xyz) == summary["map_points"] > 500


def test_a_video_streams_frame_by_frame(sequence, params, tmp_path, capsys):
    av = pytest.importorskip("av")
    video = tmp_path / "orbit.mkv"
    with av.open(str(video), "w") as container:   # lossless, so the frames read back are the frames written
        stream = container.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "bgr0"
        for rgb in sequence.cameras[0].images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    out = tmp_path / "run"
    assert main(["reconstruct", "--video", str(video), "--out", str(out), "--params-file", str(params),
                 "--preset", "vggt-tiny-random"]) == 0
    assert "reconstructed 11 frames" in capsys.readouterr().out
    rows = np.loadtxt(out / "trajectory.txt")
    assert np.allclose(rows[:, 0], np.arange(FRAMES) / 5) and np.isfinite(rows).all()   # presentation times


def test_a_bag_with_odometry_gives_a_metric_map(sequence, tmp_path, capsys, monkeypatch, params):
    _truth_double(monkeypatch, sequence)
    bag = write_bag(tmp_path / "bag", sequence, odometry=True)
    metric = tmp_path / "metric.yaml"
    metric.write_text(params.read_text().replace("scale_source: none", "scale_source: odometry")
                      .replace("odometry_topic: odom", "odometry_topic: /odom"))
    out = tmp_path / "run"
    assert main(["reconstruct", "--bag", str(bag), "--out", str(out), "--params-file", str(metric)]) == 0
    assert "metric (metres, from odometry)" in capsys.readouterr().out
    rows = np.loadtxt(out / "trajectory.txt")
    assert np.allclose(rows[:, 0] * 1e9, sequence.timestamps_ns, atol=1e3)
    expected = _map_positions(sequence, 1.0)
    assert np.abs(rows[:, 1:4] - expected).max() < 1e-3 * np.abs(expected).max()


def _empty_bag(path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(connection, 1, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"),
                                                        "std_msgs/msg/String"))
    return path


@pytest.mark.parametrize("case, message", [
    ("empty folder", "no images"),
    ("unreadable video", "cannot read as video"),
    ("no PyAV", "reading video needs PyAV, which is not installed: pip install av"),
    ("bag without images", "no sensor_msgs/Image or CompressedImage topics"),
    ("one image", "nothing was reconstructed from 1 images"),
    ("not an output folder", "exists and is not an earlier reconstruct output"),
    ("missing topic", "no image topic /nope"),
])
def test_bad_input_gives_one_line_exit_2_and_no_output(case, message, images, params, tmp_path, capsys,
                                                       monkeypatch):
    out = tmp_path / "run"
    source = {"empty folder": ["--images", str(tmp_path)],
              "unreadable video": ["--video", str(tmp_path / "clip.mp4")],
              "no PyAV": ["--video", str(tmp_path / "clip.mp4")],
              "bag without images": ["--bag", str(tmp_path / "bag")],
              "one image": ["--images", str(images / "frame_0.png")],
              "not an output folder": ["--images", str(images)],
              "missing topic": ["--bag", str(tmp_path / "bag"), "--topic", "/nope"]}[case]
    (tmp_path / "clip.mp4").write_text("not a video")
    if case == "no PyAV":
        monkeypatch.setitem(sys.modules, "av", None)
    if case == "bag without images":
        _empty_bag(tmp_path / "bag")
    if case == "missing topic":
        write_bag(tmp_path / "bag", generate_sequence(SEED, 2, WIDTH, HEIGHT))
    if case == "not an output folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    if case == "unreadable video":
        pytest.importorskip("av")
    argv = ["reconstruct", *source, "--out", str(out), "--params-file", str(params), "--preset", "vggt-tiny-random"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("vggt-quant reconstruct: error: ") and message in errors[0], err
    assert "Traceback" not in err
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run") or p.name == "run")
    assert left == (["run"] if case == "not an output folder" else []), left   # nothing presented as complete


def test_a_bag_of_a_fisheye_camera_is_rectified_from_its_camera_info(sequence, params, tmp_path, capsys,
                                                                     monkeypatch):
    _truth_double(monkeypatch, sequence)
    bag = write_bag(tmp_path / "bag", sequence, lens=("equidistant", (-0.02, 0.01, -0.003, 0.0005)))
    out = tmp_path / "run"
    assert main(["reconstruct", "--bag", str(bag), "--out", str(out), "--params-file", str(params)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rectified"] == {"camera 0": "equidistant"} and summary["settings"]["rectify"] == "auto"
    plain = tmp_path / "plain"
    assert main(["reconstruct", "--bag", str(write_bag(tmp_path / "pinhole", sequence)), "--out", str(plain),
                 "--params-file", str(params)]) == 0
    assert json.loads((plain / "summary.json").read_text())["rectified"] == {}
