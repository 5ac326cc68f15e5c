"""``reconstruct-demo`` end to end: a recorded bag played into the reconstruct node over rclpy, and the node's
outputs scored. A ground-truth model double checks the conversion of the node's map-frame outputs back to
extrinsics, depth and points; a real (tiny) model runs the rest; bad input ends in one line."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from helpers_ros import rclpy  # noqa: F401 (skips this module without rclpy)
from helpers_truth import GroundTruthModel, Rig
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.bags import read_bag
from vggt_quant_core.data.scenes import surface_distance
from vggt_quant_core.export import read_ply
from vggt_quant_ros.demo import main
from vggt_quant_core.stream.estimator import Estimator
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL

WIDTH, HEIGHT, SEED = 56, 42, 3       # seed 3: a closed room (no sky), so every pixel has a surface
FAST = ["--preset", "vggt-tiny-random", "--width", str(WIDTH), "-q"]


def _params_file(tmp_path, **changes):
    """config/reconstruct.yaml with ``changes`` (written as YAML scalars)."""
    from vggt_quant_core.stream import default_parameter_file as default_params_file

    lines = default_params_file().read_text().splitlines()
    for name, value in changes.items():
        lines = [f"    {name}: {value}" if line.strip().startswith(f"{name}:") else line for line in lines]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_truthful_model_through_the_node_scores_perfectly(tmp_path, capsys):
    """Shipped parameters (windows of 8 keyframes every 4): 12 frames make two chained windows."""
    frames = 12
    truth = Rig.of(generate_sequence(SEED, frames, WIDTH, HEIGHT, trajectory="orbit"))
    model = GroundTruthModel(truth, scales=(0.7, 1.3))
    double = Estimator(predict=model.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32",
                       bits=32)
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--frames", str(frames), "--seed", str(SEED), *FAST], estimator=double) == 0
    screen = capsys.readouterr().out
    assert "reconstructed by the ROS reconstruct node" in screen and "2 windows processed, 0 dropped" in screen

    summary = json.loads((out / "demo_summary.json").read_text())
    node = summary["node"]
    assert (node["windows_processed"], node["dropped_windows"], node["failed_windows"]) == (2, 0, 0)
    assert [w["last_frame"] for w in node["windows"]] == [7, 11] and node["model"] == "ground truth"
    assert node["parameters"]["image_topics"] == ["/cam0/image_raw"] and node["parameters"]["window_size"] == 8
    assert [step for _, step in model.windows[1]] == list(range(4, 12))   # the second window chains to the first
    assert summary["frames_posed"] == list(range(frames)) and summary["frames_with_depth"] == [7, 11]
    scores = summary["model"]
    assert scores["auc@3"] > 0.99 and scores["rotation_error_deg_mean"] < 0.01
    assert scores["abs_rel"] < 1e-4 and scores["delta<1.25"] == 1.0
    assert scores["accuracy"] < 1e-3 and scores["completeness"] < 1e-3 and scores["normal_consistency"] > 0.99
    assert summary["baseline_identity_poses_constant_depth"]["auc@30"] == 0
    # no scale source: the map stays up to scale and nothing metric is claimed or scored
    assert "map: up-to-scale (model units of the first window)\n" in screen and "scale error" not in screen
    assert "metric_scale" not in summary and node["scale"]["scale_source"] == "none"
    assert summary["recording_topics"] == ["/cam0/image_raw", "/cam0/camera_info"]
    assert node["parameters"]["camera_info_topics"] == [] and node["parameters"]["scale_source"] == "none"

    # the files, against the ground truth directly: depth in map units (the first window's scale 0.7) ...
    cameras = json.loads((out / "reconstruction" / "cameras.json").read_text())["frames"]
    assert [c["index"] for c in cameras] == list(range(frames))
    depth = np.load(out / "reconstruction" / "depth" / "frame_011.npy")
    assert np.allclose(depth, 0.7 * truth.depth[0, 11], rtol=1e-5)
    # ... and the cloud: map (FLU axes at the first camera, scale 0.7) back to world points on the room's surfaces
    xyz, rgb = read_ply(out / "reconstruction" / "points.ply")
    first = truth.extrinsics[0, 0]
    world = ((xyz.astype(np.float64) @ FLU_FROM_OPTICAL) / 0.7 - first[:, 3]) @ first[:, :3]
    assert len(xyz) == summary["points"] > 500
    assert np.percentile(surface_distance(truth.scene, world), 99) < 1e-3


@pytest.mark.parametrize("source, cameras, topics", [
    ("stereo", 2, ["/cam1/image_raw", "/cam1/camera_info"]), ("odometry", 1, ["/odom"]),
    ("depth", 1, ["/cam0/depth/image_raw"])])
def test_each_scale_source_puts_the_map_in_metres_with_a_truthful_model(tmp_path, capsys, source, cameras, topics):
    """The double answers in a scale of its own per window (0.7, then 1.3 model units per metre): the recorded
    stereo baseline, odometry or depth must bring both windows back to metres."""
    frames = 12
    truth = Rig.of(generate_sequence(SEED, frames, WIDTH, HEIGHT, trajectory="orbit", cameras=cameras))
    double = Estimator(predict=GroundTruthModel(truth, scales=(0.7, 1.3)).predict, image_size=WIDTH,
                       description="ground truth", backend="cpu fp32", bits=32)
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--frames", str(frames), "--seed", str(SEED), "--scale-source", source, *FAST]
    assert main(argv, estimator=double) == 0
    screen = capsys.readouterr().out
    assert f"map: metric (metres, from {source})\nscale error vs ground truth" in screen
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["recording_topics"] == ["/cam0/image_raw", "/cam0/camera_info", *topics]
    node = summary["node"]
    assert (node["windows_processed"], node["dropped_windows"]) == (2, 0)
    assert node["scale"]["scale_mode"] == f"metric (metres, from {source})"
    assert (node["scale"]["scale_windows_used"], node["scale"]["scale_windows_rejected"]) == ("2", "0")
    scale = summary["metric_scale"]
    assert scale["source"] == source and scale["map_scale_error"] <= 0.02 and scale["trajectory_scale_error"] <= 0.02
    assert scale["ate_se3_m"] < 0.01
    # independently of the scoring: the node's cameras travel the true distances, in metres
    cameras_json = json.loads((out / "reconstruction" / "cameras.json").read_text())["frames"]
    centres = np.array([-np.array(c["extrinsic"])[:, :3].T @ np.array(c["extrinsic"])[:, 3] for c in cameras_json])
    true_centres = np.stack([truth.centre(0, step) for step in range(frames)])
    travelled, true_travel = (np.linalg.norm(c[1:] - c[0], axis=1) for c in (centres, true_centres))
    assert true_travel.max() > 0.1 and np.abs(travelled - true_travel).max() <= 0.02 * true_travel.max()


def test_a_real_model_through_the_node_writes_everything(tmp_path, capsys):
    """A tiny untrained model, windows of 4 every 2 (a parameter file of the user's): finite scores, all files."""
    out = tmp_path / "demo"
    params = _params_file(tmp_path, window_size=4, window_stride=2)
    assert main(["--out", str(out), "--frames", "9", "--params-file", str(params), *FAST]) == 0
    screen = capsys.readouterr().out
    assert "3 windows processed, 0 dropped" in screen and str(out) in screen and "UNTRAINED" in screen
    recorded = read_bag(out / "recording" / "bag")["/cam0/image_raw"]
    assert recorded.images.shape == (9, HEIGHT, WIDTH, 3)
    summary = json.loads((out / "demo_summary.json").read_text())
    node = summary["node"]
    assert (node["windows_processed"], node["dropped_windows"]) == (3, 0)
    assert node["params_file"] == str(params) and len(node["windows"]) == 3
    assert all(w["inference_ms"] > 0 and w["overhead_ms"] > 0 for w in node["windows"])
    assert summary["frames_posed"] == list(range(8)) and summary["frames_with_depth"] == [3, 5, 7]
    for name in ("auc@30", "abs_rel", "delta<1.25", "accuracy", "completeness", "normal_consistency"):
        assert math.isfinite(summary["model"][name]), name
    assert summary["seconds"]["inference"] > 0
    xyz, _ = read_ply(out / "reconstruction" / "points.ply")
    assert len(xyz) == summary["points"] > 0
    assert sorted(p.name for p in (out / "reconstruction" / "depth").glob("*.npy")) == [
        "frame_003.npy", "frame_005.npy", "frame_007.npy"]
    assert len(list((out / "ground_truth" / "depth").glob("frame_*.png"))) == 9
    preview = np.asarray(Image.open(out / "preview.png"))
    assert preview.shape[1] == 960 and preview.std() > 10


@pytest.mark.parametrize("argv, params, message", [
    (["--width", "100"], {}, "multiples of the patch size 14"),
    (["--frames", "4"], {}, "--frames 4 is fewer than the node's window_size 8"),
    ([], {"preset": "no-such-model"}, "unknown preset 'no-such-model'"),
    ([], {"window_stride": 8}, "window_stride (8) must be smaller than window_size (8)"),
    ([], {"scale_source": "sonar"}, "scale_source is 'sonar'; expected one of none, stereo, odometry, depth"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, argv, params, message):
    fast = FAST[2:] if "preset" in params else FAST   # the parameter file's model when no --preset is given
    argv = ["--out", str(tmp_path / "demo"), "--frames", "8", *fast, *argv]
    if params:
        argv += ["--params-file", str(_params_file(tmp_path, **params))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]   # (the untrained preset warns first)
    assert len(errors) == 1 and errors[0].startswith("reconstruct-demo: error: ") and message in errors[0], err
    assert "Traceback" not in err


def test_a_missing_parameter_file_is_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--params-file", str(tmp_path / "none.yaml"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reconstruct-demo: error: cannot read the parameter file") and "\n" not in err, err
