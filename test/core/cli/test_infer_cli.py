"""``vggt-quant infer`` / ``demo`` end to end, and their handling of bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import GOLDEN
from vggt_quant_core.data.files import find_images
from vggt_quant_core.cli.main import main
from vggt_quant_core.export import read_ply


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Three generated frames as PNGs in ``images/`` (written by ``vggt-quant scenes``)."""
    out = tmp_path_factory.mktemp("frames")
    assert main(["scenes", "--out", str(out), "--frames", "3", "--width", "96", "--height", "72",
                 "--format", "images"]) == 0
    (out / "scene_0000000" / "cam0").rename(out / "images")
    return out


def test_infer_writes_cloud_depth_cameras_and_summary(demo_run, tmp_path):
    recon = tmp_path / "reconstruction"
    assert main(["infer", "--images", str(demo_run / "images"), "--out", str(recon)]) == 0
    summary = json.loads((recon / "summary.json").read_text())
    xyz, rgb = read_ply(recon / "points.ply")
    assert summary["points"] == len(xyz) > 0 and np.isfinite(xyz).all()
    height, width = summary["image_size_hw"]
    assert (height, width) == (84, 112)  # the default preset's input width, 4:3 frames
    assert 0.4 < summary["points"] / summary["points_total"] < 0.55  # 50th-percentile confidence filter
    cameras = json.loads((recon / "cameras.json").read_text())
    assert len(cameras["frames"]) == 3 and "camera-from-world" in cameras["convention"]
    frame = cameras["frames"][1]
    extrinsic = np.array(frame["extrinsic"] + [[0, 0, 0, 1]])
    assert np.allclose(np.array(frame["cam_to_world"]) @ extrinsic, np.eye(4), atol=1e-5)
    assert frame["source"].endswith("frame_001.png")
    depth = np.load(recon / "depth" / "frame_001.npy")
    assert depth.shape == (height, width) and depth.dtype == np.float32
    assert np.asarray(Image.open(recon / "depth" / "frame_001.png")).shape == (height, width, 3)


def test_infer_with_checkpoint_and_options(demo_run, tmp_path):
    out = tmp_path / "recon"
    code = main(["infer", "--images", str(demo_run / "images" / "*.png"), "--checkpoint", str(GOLDEN / "tiny_a"),
                 "--out", str(out), "--size", "56", "--points", "pointmap", "--conf-percentile", "0",
                 "--device", "cpu", "--precision", "fp32"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_size_hw"] == [42, 56] and summary["point_source"] == "pointmap"
    assert summary["points"] == summary["points_total"] == 3 * 42 * 56


@pytest.mark.parametrize("args,message", [
    (["--images", "/nonexistent/dir"], "no such file, directory or pattern"),
    (["--images", "/nonexistent/*.png"], "the pattern matches no files"),
    (["--checkpoint", "/nonexistent/model.pt"], "no such file or directory"),
    (["--max-frames", "2"], "exceed --max-frames 2 (one window: memory and time grow with frames^2); stream a longer "
                            "sequence through overlapping windows with `vggt-quant reconstruct --images ...`"),
    (["--conf-percentile", "100"], "--conf-percentile must be in"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--preset", "nope"], ""),
])
def test_bad_input_gives_one_line_error_and_exit_2(demo_run, tmp_path, capsys, args, message):
    argv = ["infer", "--images", str(demo_run / "images"), "--out", str(tmp_path / "o")]
    if args[0] == "--images":
        argv[2] = args[1]
        args = []
    try:
        code = main(argv + args)
    except SystemExit as exit_:  # argparse rejects unknown choices itself
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "points.ply").exists()


def test_unreadable_image_is_named(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.png").write_bytes(b"garbage")
    assert main(["infer", "--images", str(images), "--out", str(tmp_path / "o")]) == 2
    assert "a.png: cannot read image" in capsys.readouterr().err


def test_find_images_sorts_naturally_and_deduplicates(tmp_path):
    for name in ("frame_10.png", "frame_2.png", "frame_1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_images([str(tmp_path), str(tmp_path / "frame_2.png")])
    assert [p.name for p in found] == ["frame_1.jpg", "frame_2.png", "frame_10.png"]
