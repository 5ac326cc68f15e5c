"""``vggt-quant quantize`` writes a checkpoint that ``infer`` loads by path."""

import json

import numpy as np
from PIL import Image

from helpers import GOLDEN
from vggt_quant_core.cli.main import main
from vggt_quant_core.quant import read_header


def test_quantize_then_infer(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (42, 56, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "q.safetensors"
    assert main(["quantize", "--model", str(GOLDEN / "tiny_a"), "--method", "smoothquant", "--bits", "w4a8",
                 "--calibration", str(images), "--frames", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "quantized layers:" in printed and "whole model fp16" in printed
    header = read_header(out)
    assert header["quant_config"]["method"] == "smoothquant" and header["calibration"]["windows"] == 2
    assert main(["infer", "--images", str(images), "--checkpoint", str(out), "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "smoothquant-w4a8" in summary["model"] and summary["image_size_hw"] == [42, 56]


def test_quantize_reports_missing_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VGGT_QUANT_VGGT1B", str(tmp_path / "absent.pt"))
    assert main(["quantize", "--out", str(tmp_path / "q.safetensors")]) == 2
    assert "VGGT-1B weights not found" in capsys.readouterr().err
    assert main(["quantize", "--model", "vggt-tiny-random", "--bits", "w3", "--out", str(tmp_path / "q")]) == 2
