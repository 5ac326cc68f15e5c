"""CPU integer GEMM on oneDNN's AMX int8 kernel: prepacked weights, per-channel weight scales in the GEMM.

Why a second CPU backend: ``torch._int_mm`` on CPU runs oneDNN's VNNI ``gemm_api`` even where the CPU
has AMX, so there our int8 path lost to bf16 ``F.linear`` (which does use AMX). ``onednn.qlinear_pointwise``
on a weight re-laid out by ``onednn.qlinear_prepack`` dispatches to ``brg_matmul:..._amx`` (see
``ONEDNN_VERBOSE=1``, or ``onednn_verbose.onednn_primitives``) and applies the weight scales inside the
GEMM; the measurements in issue 15 found the whole W8A8 op faster than the ``_int_mm`` path at VGGT's
shapes (on a loaded machine; ``vggt-quant bench speed`` times both side by side), so ``auto`` prefers it
(higher priority than ``cpu-int8``) where the CPU has AMX-INT8; elsewhere ``supports`` says why not and
``cpu-int8`` runs.

Per call: per-token quantization (the codes of every integer backend) -> ``qlinear_pointwise`` (int8
codes, activation scale 1 and zero point 0, prepacked int8 weight, per-channel weight scales, float32
out) -> x per-token scale + bias, in one fused pass (or deferred into the output's consumer, see
``deferred``). The op's activation scale is a scalar, so the per-token scale cannot go inside; the bias is
added after it (the op would add it before).

Exactness: the op returns float32 ``acc * w_scale``; with unit scales that is the int32 sum exactly while
|acc| < 2^24 (oneDNN accumulates in int32 and converts once). Tiny layers can make oneDNN pick its slow
``ref_int8`` kernel instead of AMX (seen for N <= 36 or K <= 16): still exact. Without VNNI (never where
this backend is chosen: AMX implies it) oneDNN's int8 kernels saturate (``cpu_isa``). ``prepare`` holds the
prepacked copy (+1 byte per weight; W4 weights are unpacked to int8 once, then packed).
"""

import functools
from dataclasses import dataclass
from typing import Optional

import torch

from .cpu_isa import amx_int8_unavailable, onednn_keeps_off_amx
from .deferred import PendingEpilogue
from .elementwise import quantize_rows
from .int_mm import weight_codes_int8
from .registry import Capability, LinearBackend, LinearSpec, QuantizedWeights, register_backend, symmetric_int_spec


def onednn_qlinear_missing() -> Optional[str]:
    """None if this torch has oneDNN's quantized Linear ops, else why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch is built without oneDNN"
    try:
        torch.ops.onednn.qlinear_pointwise
        torch.ops.onednn.qlinear_prepack
    except (AttributeError, RuntimeError):
        return "this torch has no onednn.qlinear_pointwise/qlinear_prepack ops"
    return None


@functools.lru_cache(maxsize=None)
def amx_int8_missing() -> Optional[str]:
    """None if oneDNN can run AMX int8 GEMMs in this process, else why not (cached: the hardware does not
    change; ``ONEDNN_MAX_CPU_ISA`` is read by oneDNN once, at its first use, too)."""
    return onednn_qlinear_missing() or onednn_keeps_off_amx() or amx_int8_unavailable()


@dataclass
class OneDnnInt8State:
    """What the oneDNN backend keeps per layer (never saved)."""

    packed_weight: torch.Tensor   # opaque oneDNN tensor: int8 [K, N] in oneDNN's blocked layout
    w_scale: torch.Tensor         # float32 [N], applied inside the GEMM
    w_zero: torch.Tensor          # int64 [N] zeros (symmetric weights)
    bias: Optional[torch.Tensor]  # float32 [N]
    a_qmax: int
    act_clip: torch.Tensor        # float32 scalar
    in_features: int
    out_features: int


class OneDnnInt8Backend(LinearBackend):
    name = "cpu-amx-int8"
    priority = 110  # above cpu-int8 (100): faster where AMX exists (module docstring)

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        if device.type != "cpu":
            return "runs on cpu only"
        return amx_int8_missing() or symmetric_int_spec(spec)

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> OneDnnInt8State:
        n = spec.out_features
        codes = weight_codes_int8(weights, spec).contiguous()
        return OneDnnInt8State(packed_weight=torch.ops.onednn.qlinear_prepack(codes, None),
                               w_scale=weights.w_scale.float().reshape(-1).expand(n).contiguous(),
                               w_zero=torch.zeros(n, dtype=torch.int64),
                               bias=None if weights.bias is None else weights.bias.float(),
                               a_qmax=(1 << (spec.a_bits - 1)) - 1, act_clip=weights.act_clip.float().reshape(()),
                               in_features=spec.in_features, out_features=n)

    def weight_scaled_accumulate(self, state: OneDnnInt8State, codes: torch.Tensor,
                                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[M, N] = (codes [M, K] @ weight codes^T) * w_scale in ``dtype`` (float32, or bfloat16: measured by
        ``benchmarks/fused_passes_cpu.py``, not used by ``gemm``), the GEMM with its fused scales."""
        return torch.ops.onednn.qlinear_pointwise(codes, 1.0, 0, state.packed_weight, state.w_scale, state.w_zero,
                                                  None, 1.0, 0, dtype, "none", [], "")

    def gemm(self, state: OneDnnInt8State, x: torch.Tensor, out_dtype: torch.dtype,
             divisor: Optional[torch.Tensor] = None) -> PendingEpilogue:
        codes, a_scale = quantize_rows(x, state.in_features, state.a_qmax, state.act_clip, divisor)
        # float32 even for a bf16 output: a bf16 GEMM result halves the epilogue's bytes but rounds once more
        # before the token scale, which cost 0.3-0.9 dB SQNR on vggt-outlier's pose_enc (benchmarks/RESULTS.md).
        return PendingEpilogue(self.weight_scaled_accumulate(state, codes), a_scale, None, state.bias, out_dtype,
                               (*x.shape[:-1], state.out_features))


CPU_AMX_INT8 = register_backend(OneDnnInt8Backend())
