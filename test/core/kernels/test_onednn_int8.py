"""oneDNN AMX int8 backend against exact integer sums and the fake-quant reference (where ``auto`` picks it
and why not elsewhere: test_cpu_isa.py). The numerics run wherever oneDNN's int8 GEMMs are exact (with VNNI;
without it they saturate, as test_cpu_isa.py shows); the AMX dispatch tests skip on CPUs without AMX-INT8."""

import pytest
import torch

from helpers import frozen_quant_linear
from vggt_quant_core.kernels import pack_int4, quantize_rows
from vggt_quant_core.kernels.amx_int8 import CPU_AMX_INT8_FUSED, amx_fused_missing
from vggt_quant_core.kernels.cpu_isa import onednn_int8_inexact
from vggt_quant_core.kernels.onednn_int8 import CPU_AMX_INT8, amx_int8_missing, onednn_qlinear_missing
from vggt_quant_core.kernels.onednn_verbose import onednn_primitives, parse_verbose
from vggt_quant_core.kernels.registry import LinearSpec, QuantizedWeights
from vggt_quant_core.quant import QuantSpec
from vggt_quant_core.quant.quantizers import compute_qparams, quantize_to_int

CPU = torch.device("cpu")
ONEDNN_INT8_MISSING = onednn_qlinear_missing() or onednn_int8_inexact()
needs_onednn = pytest.mark.skipif(ONEDNN_INT8_MISSING is not None, reason=str(ONEDNN_INT8_MISSING))
needs_amx = pytest.mark.skipif(amx_int8_missing() is not None, reason=str(amx_int8_missing()))


def _weights(out_features, in_features, w_bits, scale=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    qmax = (1 << (w_bits - 1)) - 1
    codes = torch.randint(-qmax - 1, qmax + 1, (out_features, in_features), generator=generator, dtype=torch.int8)
    packed = w_bits <= 4
    w_scale = torch.rand(out_features, 1, generator=generator) / 100 if scale is None else scale
    weights = QuantizedWeights(qweight=pack_int4(codes) if packed else codes, w_scale=w_scale, w_zero=None,
                               bias=torch.randn(out_features, generator=generator), act_clip=torch.tensor(1.0))
    return codes, weights, LinearSpec(in_features, out_features, w_bits=w_bits, a_bits=8, w_packed=packed)


def _activation_codes(rows, cols):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(1))
    x[:, 3] *= 40
    spec = QuantSpec(8, granularity="per_token")
    return quantize_to_int(x, spec, compute_qparams(x, spec)[0])


@needs_onednn
@pytest.mark.parametrize("rows", [1, 16, 45])
@pytest.mark.parametrize("w_bits", [8, 4])
def test_integer_sums_are_exact(rows, w_bits):
    # |acc| <= 96 * 128 * 128 < 2^24: the float32 result of unit weight scales is the int32 sum exactly.
    codes, weights, spec = _weights(48, 96, w_bits, scale=torch.ones(48, 1))
    state = CPU_AMX_INT8.prepare(weights, spec)
    a_codes = _activation_codes(rows, 96)
    acc = CPU_AMX_INT8.weight_scaled_accumulate(state, a_codes)
    assert acc.dtype == torch.float32 and acc.shape == (rows, 48)
    assert torch.equal(acc.double(), (a_codes.long() @ codes.long().T).double())


@needs_onednn
def test_output_equals_dequantized_product_with_bias_after_the_token_scale():
    codes, weights, spec = _weights(40, 64, 8)
    x = torch.randn(3, 7, 64)
    y = CPU_AMX_INT8.forward(CPU_AMX_INT8.prepare(weights, spec), x, torch.float32)
    a_spec = QuantSpec(8, granularity="per_token")
    scale, _ = compute_qparams(x.reshape(-1, 64), a_spec)
    a_codes = quantize_to_int(x.reshape(-1, 64), a_spec, scale)
    expected = (a_codes.double() * scale.double()) @ (codes.double() * weights.w_scale.double()).T
    expected += weights.bias.double()
    assert y.shape == (3, 7, 40)
    assert torch.allclose(y.double().reshape(-1, 40), expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


@needs_onednn
def test_a_bf16_gemm_result_is_the_exact_sum_rounded_and_bf16_outputs_keep_a_float32_intermediate():
    codes, weights, spec = _weights(40, 64, 8)
    state = CPU_AMX_INT8.prepare(weights, spec)
    x = torch.randn(45, 64)
    a_codes, a_scale = quantize_rows(x, 64, 127, torch.tensor(1.0), None)
    acc = CPU_AMX_INT8.weight_scaled_accumulate(state, a_codes, torch.bfloat16)
    exact = a_codes.double() @ (codes.double() * weights.w_scale.double()).T
    assert acc.dtype == torch.bfloat16 and torch.equal(acc, exact.float().bfloat16())  # exact sum, rounded
    y = CPU_AMX_INT8.forward(state, x, torch.bfloat16)
    expected = exact * a_scale.double() + weights.bias.double()
    assert y.dtype == torch.bfloat16
    assert ((y.double() - expected).abs() <= 1.01 * 2 ** -8 * expected.abs()).all()  # one bf16 rounding


@needs_amx
@pytest.mark.parametrize("backend", ["auto", CPU_AMX_INT8.name])  # auto: the fused kernel where it builds
@pytest.mark.parametrize("transform", ["none", "dsfq"])
@pytest.mark.parametrize("bits", [(8, 8), (4, 8), (4, 4)])  # W4: unpacked to int8 once; A4: qmax 7
def test_the_amx_backends_equal_the_reference(bits, transform, backend):
    layer = frozen_quant_linear(*bits, transform)
    layer.backend = backend
    x = torch.randn(2, 37, 64) * torch.linspace(0.1, 5, 64)
    with torch.no_grad():
        y = layer(x)
        expected = CPU_AMX_INT8.name if backend != "auto" or amx_fused_missing() else CPU_AMX_INT8_FUSED.name
        assert layer.active_backend == expected
        layer.backend = "reference"
        reference = layer(x)
    # Same codes (up to ties after the fused kernel's own rotation), exact integer sums: only the float
    # epilogue (and the reference's float GEMM) differ.
    assert torch.allclose(y, reference, rtol=1e-5, atol=2e-6 * reference.abs().max())


@needs_amx
def test_the_gemm_runs_on_amx_and_bf16_outputs_match():
    layer = frozen_quant_linear(8, 8, "none")
    layer.backend = CPU_AMX_INT8.name
    x = torch.randn(50, 64)
    with torch.no_grad():
        layer(x)  # prepare (the weight reorder) outside the traced call
        primitives = onednn_primitives(lambda: layer(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        layer.backend = "reference"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference = layer(x)
    assert len(primitives) == 1 and primitives[0].startswith("matmul brg_matmul:") and "amx" in primitives[0]
    assert y.dtype == reference.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference.float(), rtol=2e-2, atol=2e-2 * reference.float().abs().max())


@needs_amx
def test_prepacked_weight_is_counted_and_never_saved():
    layer = frozen_quant_linear(4, 8, "none")
    layer.backend = CPU_AMX_INT8.name
    keys = set(layer.state_dict())
    with torch.no_grad():
        layer(torch.randn(5, 64))
    assert set(layer.state_dict()) == keys
    assert layer.backend_extra_bytes() >= 64 * 48  # the int8 prepacked copy of the int4 weights


def test_other_devices_and_formats_are_rejected():
    assert CPU_AMX_INT8.supports(LinearSpec(64, 48, 8, 8), torch.device("cuda"), (9, 0)) == "runs on cpu only"
    if amx_int8_missing() is None:
        assert "weight-only" in CPU_AMX_INT8.supports(LinearSpec(64, 48, 4, None), CPU, None)
        assert "per_group" in CPU_AMX_INT8.supports(LinearSpec(64, 48, 4, 8, w_granularity="per_group"), CPU, None)


def test_verbose_lines_are_parsed():
    log = ("onednn_verbose,v1,info,cpu,isa:Intel AMX\n"
           "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:s8,,7x64:64x48,0.02\n"
           "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_s8::blocked:ab:f0,,,300x1024:1024x512,15.6\n"
           "printed by something else\n")
    assert parse_verbose(log) == ["matmul brg_matmul:avx10_1_512_amx", "gemm_api"]
