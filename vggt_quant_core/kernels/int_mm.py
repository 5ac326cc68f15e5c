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
has no shape constraints.
"""

from dataclasses import dataclass
from typing import Optional

import torch

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
        return symmetric_int_spec(spec)

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
