"""Integer-GEMM backends on ``torch._int_mm``: oneDNN (VNNI) on CPU, cuBLASLt on CUDA.

Per call: per-token activation quantization -> int8 x int8 -> int32 GEMM -> dequant epilogue
(per-token x per-channel scales, bias, output dtype); the element-wise passes are fused by
``torch.compile`` where enabled (see ``elementwise``). Weights of up to 8 bits run as int8: packed int4
weights are unpacked once in ``prepare`` (int8 compute, so +1 byte per weight in memory next to the
packed canonical buffer; there is no int4 GEMM on CPU and on Hopper). Activations of up to 8 bits are
int8 codes on their own grid (W4A4 gives int4-valued int8 codes): the integer accumulation is exactly
that of int4 kernels.

Constraints, owned here: CUDA ``_int_mm`` needs M > 16 and K, N multiples of 8 (cuBLASLt); small M
(camera tokens, tiny inputs) is zero-padded to 17 rows, K and N are checked by ``supports``. The CPU op
has no shape constraints, but only CPUs with AVX512-VNNI get a fast one: there ATen calls oneDNN, elsewhere
it runs a scalar loop (exact, but 16x slower than the float GEMM at 256x1024x1024 on a 2-core AVX2
machine), which ``auto`` leaves to the reference. Under an ``ONEDNN_MAX_CPU_ISA`` that hides VNNI, ATen
still calls oneDNN, whose sums are then wrong (``cpu_isa``): ``supports`` refuses.
"""

from dataclasses import dataclass
from typing import Optional

import torch

from .cpu_isa import cpu_flags, hardware_flags, hidden_note, onednn_int8_inexact
from .deferred import PendingEpilogue
from .elementwise import quantize_rows
from .packing import unpack_int4
from .registry import Capability, LinearBackend, LinearSpec, QuantizedWeights, register_backend, symmetric_int_spec


@dataclass
class IntGemmState:
    """What the integer-GEMM backends keep per layer (never saved)."""

    weight_t: torch.Tensor        # int8 [K, N], a column-major view of the [N, K] codes
    w_scale: torch.Tensor         # float32 [1, N] or [1, 1]
    bias: Optional[torch.Tensor]  # float32 [N]
    a_qmax: int
    act_clip: torch.Tensor        # float32 scalar

    @property
    def in_features(self) -> int:
        return self.weight_t.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight_t.shape[1]


def weight_codes_int8(weights: QuantizedWeights, spec: LinearSpec) -> torch.Tensor:
    """[N, K] int8 codes (packed int4 is unpacked: one copy, made once)."""
    return unpack_int4(weights.qweight, signed=True) if spec.w_packed else weights.qweight


def cpu_int_mm_on_onednn() -> bool:
    """Whether CPU ``torch._int_mm`` runs oneDNN here: ATen's rule (``_int_mm_out_cpu``) is oneDNN enabled and
    a CPU with AVX512-VNNI (the hardware's flag: ATen does not see ``VGGTQ_MAX_CPU_ISA``)."""
    return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and "avx512_vnni" in (hardware_flags() or ()))


def cpu_int_mm_inexact() -> Optional[str]:
    """Why CPU ``torch._int_mm`` returns wrong sums here, or None (the scalar loop is exact)."""
    return onednn_int8_inexact() if cpu_int_mm_on_onednn() else None


def cpu_int_mm_slow() -> Optional[str]:
    """Why ``auto`` should not take CPU ``torch._int_mm`` here (None where the backend choice sees AVX512-VNNI
    and oneDNN is on)."""
    if not torch.backends.mkldnn.enabled:
        return "oneDNN is disabled (torch.backends.mkldnn.enabled): torch._int_mm runs a scalar loop"
    if "avx512_vnni" not in (cpu_flags() or ()):
        return ("no AVX512-VNNI" + hidden_note("avx512_vnni")
                + ": torch._int_mm runs a scalar loop, slower than the float reference")
    return None


def int_gemm_state(weights: QuantizedWeights, spec: LinearSpec, codes: torch.Tensor) -> IntGemmState:
    return IntGemmState(weight_t=codes.t(), w_scale=weights.w_scale.float().reshape(1, -1),
                        bias=None if weights.bias is None else weights.bias.float(),
                        a_qmax=(1 << (spec.a_bits - 1)) - 1, act_clip=weights.act_clip.float().reshape(()))


class IntMMBackend(LinearBackend):
    """``torch._int_mm`` on one device type; ``min_rows`` pads small M (cuBLASLt wants M > 16)."""

    def __init__(self, name: str, device_type: str, priority: int, min_rows: int = 0,
                 k_n_multiple: int = 1) -> None:
        self.name, self.device_type, self.priority = name, device_type, priority
        self.min_rows, self.k_n_multiple = min_rows, k_n_multiple

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        if device.type != self.device_type:
            return f"runs on {self.device_type} only"
        if spec.in_features % self.k_n_multiple or spec.out_features % self.k_n_multiple:
            return f"K and N must be multiples of {self.k_n_multiple}"
        return symmetric_int_spec(spec) or (cpu_int_mm_inexact() if self.device_type == "cpu" else None)

    def auto_skip_reason(self, device: torch.device) -> Optional[str]:
        return cpu_int_mm_slow() if device.type == "cpu" == self.device_type else None

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> IntGemmState:
        return int_gemm_state(weights, spec, weight_codes_int8(weights, spec))

    def int_accumulate(self, state: IntGemmState, codes: torch.Tensor) -> torch.Tensor:
        """int32 [M, N] = codes [M, K] @ weight codes^T, exact."""
        rows = codes.shape[0]
        if rows < self.min_rows:
            codes = torch.nn.functional.pad(codes, (0, 0, 0, self.min_rows - rows))
        return torch._int_mm(codes, state.weight_t)[:rows]

    def gemm(self, state: IntGemmState, x: torch.Tensor, out_dtype: torch.dtype,
             divisor: Optional[torch.Tensor] = None) -> PendingEpilogue:
        codes, a_scale = quantize_rows(x, state.in_features, state.a_qmax, state.act_clip, divisor)
        return PendingEpilogue(self.int_accumulate(state, codes), a_scale, state.w_scale, state.bias, out_dtype,
                               (*x.shape[:-1], state.out_features))


CPU_INT8 = register_backend(IntMMBackend("cpu-int8", "cpu", priority=100))
CUDA_INT8_INTMM = register_backend(IntMMBackend("cuda-int8-intmm", "cuda", priority=60, min_rows=17,
                                                k_n_multiple=8))
