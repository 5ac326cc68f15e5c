"""``vggt-quant scenes``, ``eval`` and ``demo`` end to end, and their handling of bad input."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from vggt_quant_core.cli.main import main
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.bags import read_bag
from vggt_quant_core.export import read_ply


def test_scenes_writes_images_bag_and_ground_truth(tmp_path, capsys):
    code = main(["scenes", "--out", str(tmp_path), "--count", "2", "--first-seed", "40", "--frames", "3",
                 "--width", "32", "--height", "24", "--cameras", "2", "--storage", "sqlite3",
                 "--trajectory", "turn"])
    assert code == 0 and "wrote 2 scene(s)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene_0000040", "scene_0000041"]
    folder = tmp_path / "scene_0000041"
    expected = generate_sequence(41, 3, 32, 24, trajectory="turn", cameras=2)
    for index, camera in enumerate(("cam0", "cam1")):
        png = np.asarray(Image.open(folder / camera / "frame_002.png"))
        assert np.array_equal(png, expected.cameras[index].images[2])
        from_bag = read_bag(folder / "bag")[f"/{camera}/image_raw"]
        assert np.array_equal(from_bag.images, expected.cameras[index].images)
    assert (folder / "bag" / "bag.db3").exists()
    with np.load(folder / "ground_truth.npz") as truth:
        np.testing.assert_array_equal(truth["cam1_depth"], expected.cameras[1].depth)
        np.testing.assert_array_equal(truth["cam0_extrinsics"], expected.cameras[0].extrinsics)
        np.testing.assert_array_equal(truth["timestamps_ns"], expected.timestamps_ns)
    meta = json.loads((folder / "scene.json").read_text())
    assert meta["seed"] == 41 and meta["trajectory"] == "turn" and meta["cameras"] == ["cam0", "cam1"]


def test_eval_reports_model_and_baseline(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert main(["eval", "--scenes", "2", "--frames", "3", "--width", "56", "--height", "42",
                 "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "auc@30" in out and "baseline" in out
    report = json.loads(report_path.read_text())
    assert report["seeds"] == [1_000_000, 1_000_001] and len(report["per_scene"]) == 2
    baseline = report["baseline_identity_poses_constant_depth"]
    # identity poses have no translation: every pair's translation error is 90 degrees, so every AUC is 0
    assert baseline["auc@30"] == 0 and baseline["translation_error_deg_mean"] == 90
    for summary in (report["model"], baseline):
        assert 0 <= summary["abs_rel"] and 0 <= summary["delta<1.25"] <= 1
        assert set(summary) >= {"auc@30", "auc@15", "auc@5", "auc@3", "accuracy", "completeness_median",
                                "normal_consistency", "normal_consistency_median"}
    assert "AUC" in report["definitions"]


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", "/nonexistent.pt"], "neither a preset"),
    (["eval", "--width", "50"], "multiples of the patch size 14"),
    (["eval", "--scenes", "0"], "--scenes must be at least 1"),
    (["demo", "--width", "100"], "multiples of the patch size 14"),
    (["demo", "--frames", "4"], "--frames 4 is fewer than the node's window_size 8"),
    (["scenes", "--count", "0", "--out", "x"], "--count must be at least 1"),
])
def test_bad_input_gives_one_line_error_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_demo_records_a_bag_and_reconstructs_it_through_the_nodes_windows(tmp_path, capsys):
    """The shipped parameter file (windows of 8 keyframes every 4): 10 frames make one window, and the two frames
    after it a final one chained through its last four."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "10", "--width", "112", "--trajectory", "forward"]) == 0
    screen = capsys.readouterr().out
    assert "UNTRAINED" not in screen and str(out) in screen
    assert ("reconstructed by the streaming reconstruction (reconstruct.yaml: windows of 8 keyframes every 4): "
            "2 windows processed, 0 dropped, 0 failed") in screen and "time per window (median of 2)" in screen
    frames = read_bag(out / "recording" / "bag")["/cam0/image_raw"]
    assert frames.images.shape == (10, 84, 112, 3) and frames.intrinsics is not None
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["image_size_wh"] == [112, 84] and summary["untrained"] is False
    assert summary["frames_posed"] == list(range(10)) and summary["frames_with_depth"] == [7, 9]
    assert summary["baseline_identity_poses_constant_depth"]["auc@30"] == 0
    assert math.isfinite(summary["model"]["abs_rel"]) and summary["seconds"]["inference"] > 0
    assert [w["last_frame"] for w in summary["stream"]["windows"]] == [7, 9]
    recon = json.loads((out / "reconstruction" / "summary.json").read_text())
    assert recon["recording"].endswith("bag") and recon["processed"] == 2 and recon["frames_read"] == 10
    cameras = json.loads((out / "reconstruction" / "cameras.json").read_text())
    assert [c["stamp_ns"] for c in cameras["frames"]] == frames.stamps_ns.tolist()
    assert len(np.loadtxt(out / "reconstruction" / "trajectory.txt")) == 10
    xyz, _ = read_ply(out / "reconstruction" / "points.ply")
    assert len(xyz) == recon["map_points"] == summary["points"] > 0
    preview = np.asarray(Image.open(out / "preview.png"))
    assert preview.shape[1] == 960 and preview.std() > 10  # a picture, not a blank canvas
    assert len(list((out / "ground_truth" / "depth").glob("frame_*.png"))) == 10
    assert sorted(p.name for p in (out / "reconstruction" / "depth").glob("*.npy")) == ["frame_007.npy",
                                                                                        "frame_009.npy"]


def test_demo_says_when_its_model_is_untrained(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "8", "--width", "56", "--preset", "vggt-tiny-random"]) == 0
    assert "UNTRAINED" in capsys.readouterr().out
    assert json.loads((out / "demo_summary.json").read_text())["untrained"] is True
