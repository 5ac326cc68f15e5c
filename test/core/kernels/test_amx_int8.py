"""Fused AMX W8A8 kernel (``cpu-amx-int8-fused``) against the element-wise reference passes and exact integer
sums, bit for bit; its residual epilogue; a failed build (where ``auto`` picks it: test_cpu_isa.py). The layout
test runs everywhere; the kernel tests skip where the CPU has no AMX-INT8 or the extension cannot be built."""

import pytest
import torch
from torch import nn

from helpers import frozen_quant_linear
from vggt_quant_core.kernels import amx_int8, hadamard_matrix
from vggt_quant_core.kernels.amx_int8 import CPU_AMX_INT8_FUSED, amx_fused_missing, amx_int8_linear, pack_weight
from vggt_quant_core.kernels.elementwise import dequantize_output, dequantize_output_residual, quantize_per_token
from vggt_quant_core.kernels.registry import LinearSpec, QuantizedWeights

CPU = torch.device("cpu")
needs_kernel = pytest.mark.skipif(amx_fused_missing() is not None, reason=str(amx_fused_missing()))


def _layer(m, k, n, in_dtype, clip=1.0, seed=0, bias=True):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=generator) * (torch.rand(m, 1, generator=generator) * 5)
    x[:, k // 3] *= 30  # an outlier channel, as after DSFQ's rotation most tokens have none
    codes = torch.randint(-128, 128, (n, k), generator=generator, dtype=torch.int8)
    weights = QuantizedWeights(qweight=codes, w_scale=torch.rand(n, 1, generator=generator) / 100, w_zero=None,
                               bias=torch.randn(n, generator=generator) if bias else None,
                               act_clip=torch.tensor(clip))
    return x.to(in_dtype), codes, weights, LinearSpec(k, n, w_bits=8, a_bits=8)


def _expected(x, codes, weights, out_dtype, divisor=None):
    """dequantize_output of the exact integer sums of quantize_per_token's codes: what every backend computes."""
    a_codes, a_scale = quantize_per_token(x, 127, weights.act_clip, divisor)
    acc = (a_codes.double() @ codes.double().T).float()  # exact: |acc| < 2^24
    # a copy: dequantize_output works in place on a float32 accumulator
    return dequantize_output(acc.clone(), a_scale, weights.w_scale.reshape(-1), weights.bias, out_dtype), acc, a_scale


def test_packed_weight_is_the_amx_b_tile_layout_zero_padded():
    codes = torch.randint(-128, 128, (40, 100), dtype=torch.int8)
    packed = pack_weight(codes)
    assert packed.shape == (64 // 16, 128 // 64, 16, 64) and packed.dtype == torch.int8
    n, k = torch.meshgrid(torch.arange(64), torch.arange(128), indexing="ij")
    picked = packed[n // 16, k // 64, (k % 64) // 4, (n % 16) * 4 + k % 4]  # VNNI: 4 depths per column per row
    assert torch.equal(picked[:40, :100], codes)
    assert not picked[40:].any() and not picked[:, 100:].any()


@needs_kernel
@pytest.mark.parametrize("m,k,n", [(1, 64, 32), (45, 100, 40), (300, 1024, 96), (33, 4096, 64)])
@pytest.mark.parametrize("in_dtype,out_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                (torch.float32, torch.bfloat16)])
def test_outputs_are_bit_identical_to_the_reference_passes(m, k, n, in_dtype, out_dtype):
    x, codes, weights, spec = _layer(m, k, n, in_dtype)
    expected, _, _ = _expected(x, codes, weights, out_dtype)
    y = CPU_AMX_INT8_FUSED.forward(CPU_AMX_INT8_FUSED.prepare(weights, spec), x, out_dtype)
    assert y.dtype == out_dtype and torch.equal(y, expected)


@needs_kernel
@pytest.mark.parametrize("clip", [0.8, 0.05])  # 0.05: codes beyond the clamp, where the kernel always divides
def test_a_smoothing_divisor_a_clip_ratio_no_bias_and_leading_dims(clip):
    x, codes, weights, spec = _layer(70, 192, 48, torch.float32, clip=clip, bias=False)
    divisor = torch.rand(192, generator=torch.Generator().manual_seed(3)) + 0.5
    expected, _, _ = _expected(x, codes, weights, torch.float32, divisor)
    y = CPU_AMX_INT8_FUSED.forward(CPU_AMX_INT8_FUSED.prepare(weights, spec), x.reshape(7, 10, 192), torch.float32,
                                   divisor)
    assert y.shape == (7, 10, 48) and torch.equal(y.reshape(70, 48), expected)


@needs_kernel
def test_codes_round_half_to_even_at_and_next_to_ties():
    """An identity weight returns each code times its row scale; scales are chosen so x / scale lands on ties
    (exactly) and one float step beside them, where a product with the reciprocal could round the other way."""
    k = 64
    ties = torch.arange(-60, 60, dtype=torch.float32)[:k] + 0.5
    base = torch.cat([ties, torch.tensor([127.0])])[-k:]  # max |x| = 127 -> scale 1 with clip 1
    rows = [base, torch.nextafter(base, torch.full_like(base, 1e9)), torch.nextafter(base, torch.full_like(base, -1e9))]
    odd_scale = torch.tensor(0.7390851)  # scale 0.73.../127 * 127: ties of a non-power-of-two scale
    rows += [r * odd_scale for r in rows]
    x = torch.stack(rows)
    weights = QuantizedWeights(qweight=torch.eye(k, dtype=torch.int8), w_scale=torch.ones(k, 1), w_zero=None,
                               bias=None, act_clip=torch.tensor(1.0))
    y = CPU_AMX_INT8_FUSED.forward(CPU_AMX_INT8_FUSED.prepare(weights, LinearSpec(k, k, 8, 8)), x, torch.float32)
    codes, scale = quantize_per_token(x, 127, torch.tensor(1.0))
    assert torch.equal(y, codes.float() * scale)


def _identity_layer(k):
    """An identity weight: the layer returns each activation code times its row scale."""
    weights = QuantizedWeights(qweight=torch.eye(k, dtype=torch.int8), w_scale=torch.ones(k, 1), w_zero=None,
                               bias=None, act_clip=torch.tensor(1.0))
    return CPU_AMX_INT8_FUSED.prepare(weights, LinearSpec(k, k, 8, 8)), weights


@needs_kernel
@pytest.mark.parametrize("k", [16, 64, 1024, 4096])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_the_fused_rotation_is_the_random_hadamard_transform_up_to_float_rounding(k, in_dtype):
    generator = torch.Generator().manual_seed(k)
    x = (torch.randn(64, k, generator=generator) * torch.rand(64, 1, generator=generator) * 4).to(in_dtype)
    x[:, 5] *= 50  # outliers, which the rotation spreads over all channels
    signs = torch.randint(0, 2, (k,), generator=generator).float() * 2 - 1
    divisor = torch.rand(k, generator=generator) + 0.5
    rotated = (x.double() * signs.double()) @ hadamard_matrix(k)  # float64 truth (the matrix is H_k / sqrt(k))
    expected_codes, expected_scale = quantize_per_token((rotated / divisor.double()).float(), 127, torch.tensor(1.0))
    state, _ = _identity_layer(k)
    y = CPU_AMX_INT8_FUSED.forward(state, x, torch.float32, divisor, rotation=signs * k ** -0.5)
    scale = y.abs().amax(dim=1, keepdim=True) / 127  # the row maximum is code +-127
    assert torch.allclose(scale, expected_scale, rtol=1e-5)
    codes = torch.round(y / scale)
    differing = codes != expected_codes.float()
    assert (codes - expected_codes.float()).abs().max() <= 1 and differing.float().mean() < 1e-3  # ties only


@needs_kernel
def test_a_rotation_needs_a_power_of_two_size():
    state, _ = _identity_layer(48)
    with pytest.raises(RuntimeError, match="power of two"):
        CPU_AMX_INT8_FUSED.forward(state, torch.randn(4, 48), torch.float32, rotation=torch.ones(48))


@needs_kernel
@pytest.mark.parametrize("out_dtype,residual_dtype,with_scale", [
    (torch.float32, torch.float32, True), (torch.bfloat16, torch.float32, True), (torch.bfloat16, torch.float32, False),
    (torch.bfloat16, torch.bfloat16, False),   # bf16 sum, in the kernel
    (torch.bfloat16, torch.bfloat16, True),    # float32 sum of a bf16 residual: the separate ops run
])
def test_the_residual_epilogue_rounds_like_the_separate_ops(out_dtype, residual_dtype, with_scale):
    x, codes, weights, spec = _layer(45, 128, 96, torch.bfloat16)
    generator = torch.Generator().manual_seed(5)
    residual = torch.randn(45, 96, generator=generator).to(residual_dtype)
    gamma = torch.rand(96, generator=generator) if with_scale else None
    _, acc, a_scale = _expected(x, codes, weights, out_dtype)
    expected = dequantize_output_residual(acc, a_scale, weights.w_scale.reshape(-1), weights.bias, out_dtype, gamma,
                                          residual)
    pending = CPU_AMX_INT8_FUSED.gemm(CPU_AMX_INT8_FUSED.prepare(weights, spec), x, out_dtype)
    y = pending.finish_residual(gamma, residual)
    assert y.dtype == expected.dtype and torch.equal(y, expected)


@needs_kernel
def test_bad_kernel_arguments_are_named():
    x, codes, weights, spec = _layer(8, 128, 64, torch.float32)
    state = CPU_AMX_INT8_FUSED.prepare(weights, spec)
    linear = amx_int8_linear()
    with pytest.raises(RuntimeError, match="does not match"):
        linear(x[:, :64].contiguous(), None, None, state.packed_weight, state.w_scale, None, 64, 127.0, 1.0,
               torch.float32, None, None)
    with pytest.raises(RuntimeError, match="residual must be"):
        linear(x, None, None, state.packed_weight, state.w_scale, None, 64, 127.0, 1.0, torch.float32, None,
               torch.zeros(8, 32))
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        linear(x.half(), None, None, state.packed_weight, state.w_scale, None, 64, 127.0, 1.0, torch.float32, None,
               None)


@needs_kernel
def test_a_deferred_residual_block_equals_the_undeferred_one():
    layer = frozen_quant_linear(8, 8, "dsfq", 128, 128)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.gamma = layer, nn.Parameter(torch.rand(128))

        def forward(self, x):
            return x + self.proj(x) * self.gamma

    block, x = Block(), torch.randn(2, 50, 128)
    with torch.no_grad():
        unfused = block(x)
        assert layer.active_backend == "cpu-amx-int8-fused"
        layer.defer_epilogue = True  # what quant.fuse_residual_epilogues sets on attn.proj and mlp.fc2
        fused = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused_bf16 = block(x)
            layer.defer_epilogue = False
            unfused_bf16 = block(x)
    assert torch.equal(fused, unfused)
    assert fused_bf16.dtype == torch.float32 and torch.equal(fused_bf16, unfused_bf16)


def test_a_failed_build_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setattr(amx_int8, "amx_int8_unavailable", lambda: None)
    monkeypatch.setattr(amx_int8, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(amx_int8, "_build", lambda: (None, "the AMX kernel did not build (OSError: no g++)"))
    amx_fused_missing.cache_clear()
    try:
        reason = CPU_AMX_INT8_FUSED.supports(LinearSpec(64, 48, 8, 8), CPU, None)
        assert reason == "the AMX kernel did not build (OSError: no g++)"
        with pytest.raises(RuntimeError, match="did not build"):
            amx_int8_linear()
    finally:
        amx_fused_missing.cache_clear()


def test_other_devices_and_formats_are_rejected():
    assert CPU_AMX_INT8_FUSED.supports(LinearSpec(64, 48, 8, 8), torch.device("cuda"), (9, 0)) == "runs on cpu only"
    assert "weight-only" in CPU_AMX_INT8_FUSED.supports(LinearSpec(64, 48, 4, None), CPU, None)
    assert "per_group" in CPU_AMX_INT8_FUSED.supports(LinearSpec(64, 48, 4, 8, w_granularity="per_group"), CPU, None)
