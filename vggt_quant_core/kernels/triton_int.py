"""Triton integer GEMMs with the dequant epilogue fused: W8A8, and W4A8/W4A4 reading packed int4 weights.

One kernel: int8 activation codes [M, K] x weight codes -> int32 accumulator (``tl.dot``, tensor cores
on sm_80+) -> ``acc * a_scale[m] * w_scale[n] + bias[n]`` stored in the output dtype, in one launch. With
``W_PACKED`` the weight stays packed uint8 [N, K/2] in memory (two signed nibbles per byte, low = even
column) and is unpacked in registers (shift-based sign extension, then interleaved), so W4 layers keep
their 4x smaller weights at int8 compute speed. ``RAW_ACC`` stores the int32 accumulator instead, for
exactness tests.

Triton is imported only when a kernel is first needed: this module imports on machines without it.
Not supported: pre-Ampere GPUs (8-bit ``tl.dot`` needs sm_80+). On CPU the kernels run only under the
Triton interpreter (``TRITON_INTERPRET=1``), which the opt-in tests use; the backends register for CUDA.
Block sizes are fixed, not tuned on a GPU yet (see benchmarks/gpu_kernels.py).
"""

import functools
from dataclasses import dataclass
from typing import Optional

import torch

from .elementwise import quantize_rows
from .registry import Capability, LinearBackend, LinearSpec, QuantizedWeights, register_backend, symmetric_int_spec


def triton_missing() -> Optional[str]:
    """None if Triton imports, else why not."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # broken installs raise more than ImportError
        return f"triton not importable ({type(exc).__name__})"
    return None


@functools.lru_cache(maxsize=None)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def int_gemm_dequant(a_ptr, b_ptr, c_ptr, a_scale_ptr, w_scale_ptr, bias_ptr, M, N, K,
                         stride_am, stride_bn, stride_cm,
                         HAS_BIAS: tl.constexpr, W_PACKED: tl.constexpr, RAW_ACC: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :],
                        mask=(rm[:, None] < M) & (rk[None, :] < K), other=0)
            if W_PACKED:
                rb = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # byte j holds columns 2j (low) and 2j+1 (high)
                packed = tl.load(b_ptr + rn[None, :] * stride_bn + rb[:, None],
                                 mask=(rn[None, :] < N) & (rb[:, None] < K // 2), other=0)
                packed = packed.to(tl.int8, bitcast=True)
                low = (packed << 4) >> 4  # arithmetic shifts sign-extend each nibble
                high = packed >> 4
                b = tl.reshape(tl.permute(tl.join(low, high), (0, 2, 1)), (BLOCK_K, BLOCK_N))
            else:
                b = tl.load(b_ptr + rn[None, :] * stride_bn + rk[:, None],
                            mask=(rn[None, :] < N) & (rk[:, None] < K), other=0)
            acc += tl.dot(a, b, out_dtype=tl.int32)
        c_ptrs = c_ptr + rm[:, None] * stride_cm + rn[None, :]
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        if RAW_ACC:
            tl.store(c_ptrs, acc, mask=mask)
        else:
            a_scale = tl.load(a_scale_ptr + rm, mask=rm < M, other=0.0)
            w_scale = tl.load(w_scale_ptr + rn, mask=rn < N, other=0.0)
            y = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]
            if HAS_BIAS:
                y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
            tl.store(c_ptrs, y.to(c_ptr.dtype.element_ty), mask=mask)

    return triton, int_gemm_dequant


@dataclass
class TritonState:
    weight: torch.Tensor          # int8 [N, K] or packed uint8 [N, K/2], the canonical buffer (no copy)
    w_scale: torch.Tensor         # float32 [N]
    bias: Optional[torch.Tensor]  # float32 [N]
    in_features: int
    packed: bool
    a_qmax: int
    act_clip: torch.Tensor


def _launch(state: TritonState, codes: torch.Tensor, a_scale: torch.Tensor, out: torch.Tensor, raw: bool) -> None:
    triton, kernel = _kernel()
    rows, n = codes.shape[0], state.weight.shape[0]
    block_m = 32 if rows <= 32 else 64 if rows <= 64 else 128
    block_n, block_k = 128, 64
    if codes.device.type == "cpu":  # interpreter: small tiles keep it quick
        block_m, block_n, block_k = 16, 32, 32
    grid = (triton.cdiv(rows, block_m), triton.cdiv(n, block_n))
    bias = state.bias if state.bias is not None else state.w_scale  # not read without HAS_BIAS
    kernel[grid](codes, state.weight, out, a_scale, state.w_scale, bias, rows, n, state.in_features,
                 codes.stride(0), state.weight.stride(0), out.stride(0),
                 HAS_BIAS=state.bias is not None, W_PACKED=state.packed, RAW_ACC=raw,
                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)


class TritonIntBackend(LinearBackend):
    """Fused Triton integer GEMM; ``packed`` selects the variant that reads packed int4 weights."""

    def __init__(self, name: str, priority: int, packed: bool, device_type: str = "cuda") -> None:
        self.name, self.priority, self.packed, self.device_type = name, priority, packed, device_type

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        if device.type != self.device_type:
            return f"runs on {self.device_type} only"
        if device.type == "cuda" and capability is not None and capability < (8, 0):
            return "8-bit tl.dot needs sm_80 or newer"
        if spec.w_packed != self.packed:
            return "for packed int4 weights" if self.packed else "for int8 weights"
        if spec.in_features % 2:
            return "K must be even"
        return symmetric_int_spec(spec) or triton_missing()

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> TritonState:
        return TritonState(weight=weights.qweight.contiguous(), w_scale=weights.w_scale.float().reshape(-1).expand(
                               spec.out_features).contiguous(),
                           bias=None if weights.bias is None else weights.bias.float().contiguous(),
                           in_features=spec.in_features, packed=self.packed, a_qmax=(1 << (spec.a_bits - 1)) - 1,
                           act_clip=weights.act_clip.float().reshape(()))

    def int_accumulate(self, state: TritonState, codes: torch.Tensor) -> torch.Tensor:
        """int32 [M, N] accumulator of the kernel's main loop (exactness tests)."""
        out = torch.empty(codes.shape[0], state.weight.shape[0], dtype=torch.int32, device=codes.device)
        _launch(state, codes.contiguous(), state.w_scale, out, raw=True)
        return out

    def forward(self, state: TritonState, x: torch.Tensor, out_dtype: torch.dtype,
                divisor: Optional[torch.Tensor] = None) -> torch.Tensor:
        lead = x.shape[:-1]
        codes, a_scale = quantize_rows(x, state.in_features, state.a_qmax, state.act_clip, divisor)
        out = torch.empty(codes.shape[0], state.weight.shape[0], dtype=out_dtype, device=x.device)
        _launch(state, codes.contiguous(), a_scale.reshape(-1).contiguous(), out, raw=False)
        return out.reshape(*lead, state.weight.shape[0])


# Provisional priorities (no GPU measurement yet): cuBLASLt _int_mm (60) stays the W8A8 default; the
# packed-weight kernel (70) wins for W4 because it keeps the 4-bit weights in memory.
TRITON_W8A8 = register_backend(TritonIntBackend("cuda-int8-triton", priority=50, packed=False))
TRITON_W4 = register_backend(TritonIntBackend("cuda-w4-triton", priority=70, packed=True))
