"""``vggt-quant calibrate`` end to end on folders of rendered frames."""

import json

import pytest
import torch
from PIL import Image

from helpers import GOLDEN
from vggt_quant_core.cli.main import main
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.quant import load_quantized, read_header


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    for seed in range(2):
        folder = root / f"run{seed}"
        folder.mkdir()
        for i, image in enumerate(generate_sequence(seed, 6, 56, 42).cameras[0].images):
            Image.fromarray(image).save(folder / f"frame_{i}.png")
    return root


def test_calibrate_writes_checkpoint_report_and_reusable_fisher(pool_dir, tmp_path, capsys):
    out = tmp_path / "q.safetensors"
    args = ["calibrate", "--pool", str(pool_dir), "--model", str(GOLDEN / "tiny_a"), "--method", "dsfq-fisher",
            "--bits", "w4a4", "--window", "3", "--stride", "1", "--samples", "3", "--clusters", "2",
            "--epochs", "1", "--fisher-samples", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "block reconstruction loss" in printed and "blocks improved" in printed
    assert out.with_name("q.summary.txt").read_text().strip() == printed.strip()
    report = json.loads(out.with_name("q.report.json").read_text())
    assert len(report["samples"]) == 3 and report["selection"]["strategy"] == "nfds"
    assert len(report["engine"]["blocks"]) == 12 and report["engine"]["peak_memory_bytes"] > 0
    header = read_header(out)
    assert header["calibration"]["samples"] == report["samples"] and header["calibration"]["method"] == "dsfq-fisher"
    model = load_quantized(out)
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(2, 3, 42, 56))["depth"]).all()
    fisher = out.with_name("q.fisher.safetensors")
    assert fisher.exists()

    # a second run with the same settings resumes everything from the work directory
    assert main(args) == 0
    again = json.loads(out.with_name("q.report.json").read_text())
    assert all(b["resumed"] for b in again["engine"]["blocks"]) and again["samples"] == report["samples"]

    # the Fisher file is reusable by another run
    other = tmp_path / "fgq.safetensors"
    assert main(args[:-1] + [str(other), "--method", "fgq", "--fisher", str(fisher)]) == 0
    assert json.loads(other.with_name("fgq.report.json").read_text())["fisher"]["source"] == str(fisher)


def test_bad_pools_are_reported(pool_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["calibrate", "--model", str(GOLDEN / "tiny_a"), "--out", str(tmp_path / "q.safetensors")]
    assert main(base + ["--pool", str(empty)]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(base + ["--pool", str(pool_dir), "--window", "20"]) == 2
    assert "no window of 20 frames fits" in capsys.readouterr().err
    assert main(base + ["--pool", str(pool_dir), "--bits", "w4"]) == 2
