"""Fidelity metrics, activation statistics, the outlier model and the fidelity benchmark command."""

import copy
import json
import math

import pytest
import torch

from vggt_quant_core.cli.main import main
from vggt_quant_core.eval.fidelity import compare_outputs, relative_l2, sqnr_db
from vggt_quant_core.presets import build_preset, get_preset
from vggt_quant_core.quant import QuantConfig, quantization_disabled, quantize, quantized_layers
from vggt_quant_core.quant.observers import ActivationStats, observe_inputs


def test_metrics_on_hand_computed_cases():
    reference = torch.tensor([3.0, 4.0])        # norm 5
    actual = torch.tensor([3.0, 4.5])           # error norm 0.5
    assert relative_l2(actual, reference) == pytest.approx(0.1)
    assert sqnr_db(actual, reference) == pytest.approx(10 * math.log10(25 / 0.25))  # 20 dB
    assert sqnr_db(reference, reference) == math.inf
    report = compare_outputs({"depth": actual, "extra": actual}, {"depth": reference}, keys=("depth", "pose_enc"))
    assert set(report) == {"depth"} and report["depth"]["sqnr_db"] == pytest.approx(20.0)


def test_activation_stats_kurtosis_and_channel_maxima():
    stats = ActivationStats()
    x = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(0))
    x[:, 3] *= 10
    stats.update(x[:100_000])
    stats.update(x[100_000:])
    assert torch.allclose(stats.channel_absmax, x.abs().amax(0))
    assert torch.equal(stats.channel_min, x.amin(0))
    flat = x.flatten().double()
    expected = ((flat - flat.mean()) ** 4).mean() / flat.var(unbiased=False) ** 2
    assert stats.kurtosis == pytest.approx(expected.item(), rel=1e-6)
    gaussian = ActivationStats()
    gaussian.update(torch.randn(100_000, 8))
    assert gaussian.kurtosis == pytest.approx(3.0, abs=0.1)


@pytest.fixture(scope="module")
def outlier_model():
    return build_preset(get_preset("vggt-outlier"))


def test_outlier_preset_is_deterministic_and_heavy_tailed(outlier_model):
    again = build_preset(get_preset("vggt-outlier"))
    assert torch.equal(again.aggregator.camera_token, outlier_model.aggregator.camera_token)
    tokens = outlier_model.aggregator.camera_token.abs()
    assert (tokens > 40).sum() == 2 * 4  # 4 massive channels in both camera-token slots
    images = torch.rand(2, 3, 168, 224, generator=torch.Generator().manual_seed(0))
    wrapped = quantize(copy.deepcopy(outlier_model), QuantConfig(method="quarot"), freeze=False)
    with torch.no_grad(), quantization_disabled(wrapped), \
            observe_inputs(quantized_layers(wrapped), {"raw": 0, "rotated": None}) as stats:
        wrapped(images)
    qkv = stats["aggregator.frame_blocks.2.attn.qkv"]
    assert qkv["raw"].kurtosis > 20 and qkv["rotated"].kurtosis < 5  # rotation removes the heavy tail
    assert qkv["raw"].summary()["top_channel_ratio"] > 10


def test_bench_fidelity_command_writes_a_report(tmp_path, capsys):
    out = tmp_path / "fidelity.json"
    code = main(["bench", "fidelity", "--model", "vggt-tiny-random", "--methods", "rtn,dsfq", "--bits", "w8a8,w4a4",
                 "--frames", "2", "--windows", "1", "--calibration-windows", "1", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert [(r["method"], r["bits"]) for r in report["results"]] == [
        ("rtn", "w8a8"), ("rtn", "w4a4"), ("dsfq", "w8a8"), ("dsfq", "w4a4")]
    by = {(r["method"], r["bits"]): r["outputs"]["pose_enc"]["sqnr_db"] for r in report["results"]}
    assert by[("rtn", "w8a8")] > by[("rtn", "w4a4")]
    assert set(report["activation_stats"]) == {"raw", "rtn", "dsfq"}
    assert "| w4a4 | dsfq |" in capsys.readouterr().out
    assert main(["bench", "fidelity", "--methods", "gptq"]) == 2
    assert main(["bench", "fidelity", "--bits", "w4"]) == 2


def test_bench_fidelity_compares_fp8_with_int8_at_w8a8(tmp_path):
    out = tmp_path / "fidelity.json"
    code = main(["bench", "fidelity", "--model", "vggt-tiny-random", "--methods", "rtn", "--bits", "w8a8,w4a4",
                 "--formats", "int,e4m3", "--frames", "2", "--windows", "1", "--calibration-windows", "1",
                 "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["bits"], r["number_format"]) for r in rows] == [("w8a8", "int"), ("w8a8-e4m3", "e4m3"),
                                                               ("w4a4", "int")]  # FP8 exists at w8a8 only
    int8, fp8 = (rows[i]["outputs"]["depth"]["sqnr_db"] for i in (0, 1))
    assert 10 < fp8 < math.inf and int8 != fp8
    assert main(["bench", "fidelity", "--formats", "e5m2"]) == 2


def test_bench_fidelity_runs_the_quantized_models_under_bf16_autocast(tmp_path):
    out = tmp_path / "fidelity.json"
    args = ["bench", "fidelity", "--model", "vggt-tiny-random", "--methods", "rtn", "--bits", "w8a8", "--frames", "2",
            "--windows", "1", "--calibration-windows", "1", "--json", str(out)]
    sqnr = {}
    for precision, fused in (("fp32", False), ("bf16", False), ("bf16", True)):
        assert main(args + ["--precision", precision] + ["--fused-residual"] * fused) == 0
        report = json.loads(out.read_text())
        assert report["quantized_autocast"] == {"fp32": "float32", "bf16": "bfloat16"}[precision]
        assert report["fused_residual"] == fused
        sqnr[precision, fused] = report["results"][0]["outputs"]["depth"]["sqnr_db"]
    assert 10 < sqnr["bf16", False] < math.inf and sqnr["bf16", False] != sqnr["fp32", False]  # bf16 rounding
    assert sqnr["bf16", True] == pytest.approx(sqnr["bf16", False], abs=0.3)


def test_bench_fidelity_can_quantize_the_dino_linears_too(tmp_path):
    out = tmp_path / "fidelity.json"
    args = ["bench", "fidelity", "--model", "vggt-tiny-random", "--methods", "rtn", "--bits", "w8a8", "--frames", "2",
            "--windows", "1", "--calibration-windows", "1", "--json", str(out)]
    sqnr = {}
    for dino in (False, True):
        assert main(args + ["--quantize-dino"] * dino) == 0
        report = json.loads(out.read_text())
        assert report["dino_linears_quantized"] == dino
        sqnr[dino] = report["results"][0]["outputs"]["depth"]["sqnr_db"]
    assert 10 < sqnr[True] < math.inf and sqnr[True] != sqnr[False]  # more layers quantized: other errors
