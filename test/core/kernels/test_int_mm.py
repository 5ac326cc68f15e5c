"""torch._int_mm backends against the fake-quant reference: same activation codes as ``quantize_to_int``,
exact integer accumulation, outputs equal within float-epilogue tolerance."""

import pytest
import torch

from vggt_quant_core.kernels import elementwise, pack_int4
from vggt_quant_core.kernels.allocator import tune_glibc_malloc
from vggt_quant_core.kernels.elementwise import (MaybeCompiled, dequantize_output, fused_dequantize_output,
                                                 fused_quantize_per_token, quantize_per_token, set_compile)
from vggt_quant_core.kernels.int_mm import CPU_INT8, IntMMBackend, cpu_int_mm_inexact
from vggt_quant_core.kernels.registry import LinearSpec, QuantizedWeights
from vggt_quant_core.quant.quantizers import QuantSpec, compute_qparams, quantize_to_int


def _activations(rows, cols, seed=0):
    """Gaussian tokens with an outlier channel, a massive token, an all-zero token and exact rounding ties."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=generator)
    x[:, 3] *= 40
    x[min(1, rows - 1)] *= 100
    x[-1] = 0
    if rows > 3:  # absmax 127 -> scale 1: entries at k + 0.5 must round half to even
        x[2] = torch.linspace(-6.5, 6.5, cols).round() + 0.5
        x[2, 0] = 127
    return x


def _reference_codes(x, bits, clip_ratio=1.0):
    spec = QuantSpec(bits, granularity="per_token", clip_ratio=clip_ratio)
    scale, _ = compute_qparams(x, spec)
    return quantize_to_int(x, spec, scale), scale


@pytest.mark.parametrize("bits,clip_ratio", [(8, 1.0), (8, 0.9), (4, 1.0), (6, 0.75)])
def test_activation_codes_equal_quantize_to_int(bits, clip_ratio):
    x = _activations(33, 96)
    codes, scale = quantize_per_token(x, (1 << (bits - 1)) - 1, torch.tensor(clip_ratio))
    expected_codes, expected_scale = _reference_codes(x, bits, clip_ratio)
    assert codes.dtype == torch.int8
    assert torch.equal(codes, expected_codes)
    assert torch.equal(scale, expected_scale)
    assert codes[-1].abs().sum() == 0  # all-zero token: no NaN, codes 0


def test_fused_divisor_equals_dividing_first():
    x = _activations(33, 96)
    divisor = torch.rand(96) + 0.3
    codes, scale = quantize_per_token(x, 127, torch.tensor(1.0), divisor)
    expected_codes, expected_scale = _reference_codes(x / divisor, 8)
    assert torch.equal(codes, expected_codes) and torch.equal(scale, expected_scale)


def test_compiled_passes_equal_the_eager_ones():
    x = _activations(40, 128, seed=1)
    acc = torch.randint(-2 ** 20, 2 ** 20, (40, 24), dtype=torch.int32)
    a_scale, w_scale, bias = torch.rand(40, 1), torch.rand(1, 24), torch.randn(24)
    set_compile(True)
    try:
        divisor = torch.rand(128) + 0.3
        codes, scale = fused_quantize_per_token(x, 127, torch.tensor(1.0), divisor)
        assert not fused_quantize_per_token._broken, "torch.compile failed on this machine"
        expected_codes, expected_scale = _reference_codes(x / divisor, 8)
        assert torch.equal(codes, expected_codes) and torch.equal(scale, expected_scale)
        y = fused_dequantize_output(acc, a_scale, w_scale, bias, torch.bfloat16)
    finally:
        set_compile(None)
    expected = dequantize_output(acc, a_scale, w_scale, bias, torch.bfloat16)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), expected.float(), rtol=1e-2)


def test_failed_compilation_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(function, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    wrapped = MaybeCompiled(quantize_per_token)
    x = _activations(5, 16)
    set_compile(True)
    try:
        codes, _ = wrapped(x, 127, torch.tensor(1.0))
    finally:
        set_compile(None)
    assert torch.equal(codes, _reference_codes(x, 8)[0])
    assert "using the eager version" in caplog.text and wrapped._broken


def _weights(out_features, in_features, w_bits, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    qmax = (1 << (w_bits - 1)) - 1
    codes = torch.randint(-qmax - 1, qmax + 1, (out_features, in_features), generator=generator, dtype=torch.int8)
    packed = w_bits <= 4
    weights = QuantizedWeights(qweight=pack_int4(codes) if packed else codes,
                               w_scale=torch.rand(out_features, 1, generator=generator) / 100, w_zero=None,
                               bias=torch.randn(out_features, generator=generator) if bias else None,
                               act_clip=torch.tensor(1.0))
    spec = LinearSpec(in_features, out_features, w_bits=w_bits, a_bits=8, w_packed=packed)
    return codes, weights, spec


# M = 1 and 16 exercise the small-M padding of the CUDA-style backend (emulated on CPU: same op, same glue).
CUDA_STYLE = IntMMBackend("cuda-style-on-cpu", "cpu", priority=0, min_rows=17, k_n_multiple=8)
# Only under an ISA cap that hides VNNI from oneDNN on a VNNI CPU (``make test-isa``): the op is wrong there
needs_exact_int_mm = pytest.mark.skipif(cpu_int_mm_inexact() is not None, reason=str(cpu_int_mm_inexact()))


@needs_exact_int_mm
@pytest.mark.parametrize("backend", [CPU_INT8, CUDA_STYLE], ids=lambda b: b.name)
@pytest.mark.parametrize("rows", [1, 16, 17, 45])
@pytest.mark.parametrize("w_bits", [8, 4])
def test_integer_accumulation_is_exact(backend, rows, w_bits):
    codes, weights, spec = _weights(24, 64, w_bits)
    state = backend.prepare(weights, spec)
    activation_codes, _ = _reference_codes(_activations(rows, 64), 8)
    acc = backend.int_accumulate(state, activation_codes)
    assert acc.dtype == torch.int32 and acc.shape == (rows, 24)
    assert torch.equal(acc.long(), activation_codes.long() @ codes.long().T)


@needs_exact_int_mm
@pytest.mark.parametrize("bias", [True, False])
def test_output_equals_dequantized_product(bias):
    codes, weights, spec = _weights(40, 96, 4, bias=bias)
    x = _activations(3 * 7, 96).reshape(3, 7, 96)
    y = CPU_INT8.forward(CPU_INT8.prepare(weights, spec), x, torch.float32)
    a_codes, a_scale = _reference_codes(x.reshape(-1, 96), 8)
    expected = (a_codes.double() * a_scale.double()) @ (codes.double() * weights.w_scale.double()).T
    if bias:
        expected += weights.bias.double()
    assert y.shape == (3, 7, 40)
    assert torch.allclose(y.double().reshape(-1, 40), expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


@needs_exact_int_mm
def test_cuda_style_backend_rejects_k_or_n_not_multiple_of_8():
    spec = LinearSpec(60, 24, w_bits=8, a_bits=8)
    assert "multiples of 8" in CUDA_STYLE.supports(spec, torch.device("cpu"), None)
    assert CPU_INT8.supports(spec, torch.device("cpu"), None) is None
    assert CPU_INT8.supports(spec, torch.device("meta"), None) == "runs on cpu only"


def test_empty_input():
    _, weights, spec = _weights(8, 16, 8)
    y = CPU_INT8.forward(CPU_INT8.prepare(weights, spec), torch.zeros(0, 16), torch.float32)
    assert y.shape == (0, 8)


def test_malloc_tuning_is_accepted_by_glibc_and_idempotent():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert tune_glibc_malloc() is True
    assert tune_glibc_malloc() is True


def test_compile_switch_follows_the_environment(monkeypatch):
    monkeypatch.setenv(elementwise.COMPILE_ENV, "0")
    assert not elementwise.compile_enabled()
    monkeypatch.setenv(elementwise.COMPILE_ENV, "1")
    assert elementwise.compile_enabled()
    set_compile(False)
    try:
        assert not elementwise.compile_enabled()
    finally:
        set_compile(None)
