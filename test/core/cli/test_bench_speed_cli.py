"""``vggt-quant bench speed``: tiny runs of every part, report structure and bad input."""

import json

import pytest

from vggt_quant_core.cli.main import main
from vggt_quant_core.kernels.amx_int8 import amx_fused_missing
from vggt_quant_core.kernels.cpu_isa import cpu_label, cpu_model
from vggt_quant_core.kernels.int_mm import cpu_int_mm_on_onednn
from vggt_quant_core.kernels.onednn_int8 import amx_int8_missing


def _run(tmp_path, *args):
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", "--repeats", "1", "--no-compile", "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def test_linear_shapes_every_config_and_backend(tmp_path, capsys, cpu_without_amx):
    report = _run(tmp_path, "--parts", "linears", "--frames", "1", "--image", "28x28", "--methods", "rtn,quarot",
                  "--bits", "w8a8,w4a4", "--backend", "auto,reference", "--float-parts", "fp32")
    linears = report["linears"]
    assert linears["tokens_per_frame"] == 1 + 4 + 2 * 2 and linears["M"] == 9
    qkv = linears["per_shape"]["attn.qkv"]
    assert (qkv["K"], qkv["N"], qkv["count"]) == (1024, 3072, 48)
    assert ("int8 GEMM only" in qkv["ms"]) == cpu_int_mm_on_onednn()  # not ATen's scalar loop
    assert qkv["backends"] == {"rtn-w8a8": "cpu-int8", "rtn-w8a8 [reference]": "reference",
                               "rtn-w4a4": "cpu-int8", "rtn-w4a4 [reference]": "reference",
                               "quarot-w8a8": "cpu-int8", "quarot-w8a8 [reference]": "reference",
                               "quarot-w4a4": "cpu-int8", "quarot-w4a4 [reference]": "reference"}
    total = linears["aggregator_linears"]
    assert total["linears"] == 192 and total["speedup_vs_fp32"]["fp32"] == 1.0
    sizes = total["weight_bytes"]
    assert sizes["rtn-w4a4"] < sizes["rtn-w8a8"] < sizes["bf16"] < sizes["fp32"]
    clips = 4 * 192  # each layer's activation clip scalar
    assert sizes["rtn-w8a8 runtime extra"] == clips
    assert sizes["rtn-w4a4 runtime extra"] == clips + 48 * 1024 * (3072 + 1024 + 2 * 4096)  # int4 unpacked to int8
    out = capsys.readouterr().out
    assert "all 192 aggregator Linears" in out
    # the CPU next to the figures: model and the integer ISA the kernels see
    assert linears["cpu"] == cpu_label() and f"ms; on {cpu_label()}" in out
    assert report["environment"]["cpu"]["model"] == cpu_model()


@pytest.mark.skipif(amx_int8_missing() is not None or amx_fused_missing() is not None,
                    reason=str(amx_int8_missing() or amx_fused_missing()))
def test_amx_cpus_run_the_amx_backend_and_report_its_kernel_and_bf16_ratios(tmp_path, capsys):
    report = _run(tmp_path, "--parts", "linears", "--frames", "1", "--image", "28x28", "--methods", "rtn",
                  "--bits", "w8a8,w4a4", "--float-parts", "fp32,bf16", "--fused-residual", "both",
                  "--backend", "auto,cpu-amx-int8")
    fc1 = report["linears"]["per_shape"]["mlp.fc1"]
    fused = ("rtn-w8a8", "rtn-w4a4", "rtn-w8a8 + bf16 autocast", "rtn-w4a4 + bf16 autocast")
    onednn = tuple(name.replace("rtn-w8a8", "rtn-w8a8 [cpu-amx-int8]").replace("rtn-w4a4", "rtn-w4a4 [cpu-amx-int8]")
                   for name in fused)
    assert fc1["backends"] == {**{name: "cpu-amx-int8-fused" for name in fused},
                               **{name: "cpu-amx-int8" for name in onednn}}
    kernels = fc1["onednn_kernels"]
    assert kernels["fp32"] == [] and kernels["int8 GEMM only"] == ["gemm_api"]  # MKL; oneDNN's VNNI gemm
    for name in ("bf16", "int8 AMX GEMM only", *onednn):
        assert len(kernels[name]) == 1 and "_amx" in kernels[name][0], name
    for name in fused:  # our own AMX kernel: no oneDNN primitive
        assert kernels[name] == [], name
    assert fc1["speedup_vs_bf16"]["bf16"] == 1.0 and "rtn-w8a8" in fc1["speedup_vs_bf16"]
    assert report["linears"]["aggregator_linears"]["speedup_vs_bf16"]["bf16"] == 1.0
    assert "x bf16" in capsys.readouterr().out


def test_aggregator_and_model_parts(tmp_path, int_mm_as_with_vnni):
    report = _run(tmp_path, "--parts", "aggregator,model", "--model", "vggt-tiny-random", "--model-frames", "2",
                  "--model-image", "28x42", "--methods", "rtn", "--bits", "w8a8", "--float-parts", "fp32,bf16",
                  "--fused-residual", "both")
    for part in ("aggregator", "model"):
        row = report["model"][part]
        quantized = {"rtn-w8a8", "rtn-w8a8 + bf16 autocast"}
        quantized |= {name + " + fused residual" for name in quantized}
        variants = {"fp32", "bf16 autocast", *quantized}
        assert set(row["seconds"]) == set(row["peak_rss_bytes_above_start"]) == set(row["breakdown"]) == variants
        assert row["speedup_vs_bf16"]["bf16 autocast"] == 1.0
        for name in quantized:
            kernels = row["linear_kernels"][name]  # every quantized Linear ran a real backend
            assert sum(c for k, c in kernels.items() if k.startswith(("cpu-int8", "cpu-amx-int8"))) == 2 * 4 * 4
        for name, found in row["breakdown"].items():
            seconds = found["seconds"]
            assert all(v > 0 for k, v in seconds.items() if k != "heads" and k != "other"), (name, seconds)
            assert seconds["linears_gemm"] + seconds["linears_overhead"] == pytest.approx(seconds["linears"], abs=2e-4)
            assert sum(seconds[k] for k in ("dino_patch_embed", "attention_core_sdpa", "linears", "heads",
                                            "other")) == pytest.approx(found["profiled_total_s"], abs=5e-4)
            assert (seconds["heads"] > 0) == (part == "model"), (name, part)
            assert set(found["sdpa_kernels"]) == {"aten::_scaled_dot_product_flash_attention_for_cpu"}
    kernels = report["model"]["aggregator"]["linear_kernels"]
    assert set(kernels["fp32"]) == {"F.linear: no oneDNN primitive"}
    assert report["model"]["cpu"] == cpu_label()
    assert report["model"]["weight_bytes"]["rtn-w8a8"]["quantized_layers_bytes"] < report["model"]["weight_bytes"][
        "rtn-w8a8"]["quantized_layers_fp16_bytes"]


def test_dino_linears_quantized_too(tmp_path, int_mm_as_with_vnni):
    report = _run(tmp_path, "--parts", "aggregator", "--model", "vggt-tiny-random", "--model-frames", "1",
                  "--model-image", "28x42", "--methods", "rtn", "--bits", "w8a8", "--float-parts", "fp32",
                  "--quantize-dino", "both")
    kernels = report["model"]["aggregator"]["linear_kernels"]
    assert set(kernels) == {"fp32", "bf16 autocast", "rtn-w8a8 + fused residual",
                            "rtn-w8a8 (+ DINO Linears) + fused residual"}

    def quantized(name):
        return sum(c for k, c in kernels[name].items() if not k.startswith("F.linear"))
    dino_blocks = 2  # vggt-tiny-random's DINO depth
    with_dino = quantized("rtn-w8a8 (+ DINO Linears) + fused residual")
    assert with_dino == quantized("rtn-w8a8 + fused residual") + 4 * dino_blocks


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["bench", "speed", "--parts", "linears,gpu"]) == 2
    assert "--parts takes" in capsys.readouterr().err
    assert main(["bench", "speed", "--image", "518"]) == 2
    assert "--image must look like" in capsys.readouterr().err
    assert main(["bench", "speed", "--parts", "aggregator", "--float-parts", "fp16"]) == 2
    assert "float parts run in" in capsys.readouterr().err
