"""FP8 W8A8 backends on ``torch._scaled_mm``: E4M3 weights per output channel, E4M3 activations per token.

A different number format from int8 (``QuantSpec.number_format = "e4m3"``: its own checkpoints and
fidelity), for GPUs whose FP8 tensor cores match their INT8 peak: Ada (sm_89) and Hopper (sm_90), which
have no INT4 tensor cores either. Per call: per-token E4M3 quantization (scale = clip * absmax / 448) ->
``_scaled_mm(codes [M, K], weight^T [K, N] column-major, scale_a [M, 1], scale_b [1, N])``, both scales
applied in the GEMM's epilogue -> + bias and the output dtype in one fused pass.

Constraints, owned here: CUDA ``_scaled_mm`` runs on compute capability >= 8.9 only, needs K and N
multiples of 16, and with row-wise scales writes bf16 only (cuBLASLt or CUTLASS, depending on the GPU and
CUDA version), so the bias is added after it in float32. On CPU torch 2.13 runs ``_scaled_mm`` too,
emulated (float conversion and a float GEMM: no oneDNN primitive in its verbose log), so ``cpu-fp8-emulated``
runs only when named: it tests these numerics on any machine. Neither has run on a GPU yet
(``benchmarks/gpu_kernels.py`` checks and times it there).
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .elementwise import fused_dequantize_output, fused_quantize_per_token_e4m3
from .registry import Capability, LinearBackend, LinearSpec, QuantizedWeights, register_backend, symmetric_spec_reason

FP8_MIN_CAPABILITY = (8, 9)


@dataclass
class ScaledMMState:
    """What the FP8 backends keep per layer (never saved)."""

    weight_t: torch.Tensor        # float8_e4m3fn [K, N], a column-major view of the [N, K] codes
    w_scale: torch.Tensor         # float32 [1, N]
    bias: Optional[torch.Tensor]  # float32 [N]
    act_clip: torch.Tensor        # float32 scalar


class ScaledMMBackend(LinearBackend):
    """``torch._scaled_mm`` on one device type, writing ``gemm_dtype``."""

    def __init__(self, name: str, device_type: str, priority: int, gemm_dtype: torch.dtype,
                 min_capability: Optional[Tuple[int, int]] = None, k_n_multiple: int = 1,
                 auto_selectable: bool = True) -> None:
        self.name, self.device_type, self.priority, self.gemm_dtype = name, device_type, priority, gemm_dtype
        self.min_capability, self.k_n_multiple, self.auto_selectable = min_capability, k_n_multiple, auto_selectable

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        if device.type != self.device_type:
            return f"runs on {self.device_type} only"
        if self.min_capability is not None and (capability is None or tuple(capability) < self.min_capability):
            return (f"FP8 tensor cores need compute capability >= {self.min_capability[0]}.{self.min_capability[1]}"
                    f", this device has {capability}")
        if spec.in_features % self.k_n_multiple or spec.out_features % self.k_n_multiple:
            return f"K and N must be multiples of {self.k_n_multiple}"
        if spec.w_bits != 8 or spec.a_bits != 8:
            return "FP8 GEMMs take 8-bit codes on both sides"
        return symmetric_spec_reason(spec, "e4m3")

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> ScaledMMState:
        return ScaledMMState(weight_t=weights.qweight.t(),
                             w_scale=weights.w_scale.float().reshape(1, -1).expand(1, spec.out_features).contiguous(),
                             bias=None if weights.bias is None else weights.bias.float(),
                             act_clip=weights.act_clip.float().reshape(()))

    def scaled_product(self, state: ScaledMMState, codes: torch.Tensor, a_scale: torch.Tensor) -> torch.Tensor:
        """[M, N] in ``gemm_dtype`` = (codes [M, K] @ weight codes^T) * a_scale [M, 1] * w_scale [1, N]."""
        return torch._scaled_mm(codes, state.weight_t, scale_a=a_scale, scale_b=state.w_scale,
                                out_dtype=self.gemm_dtype)

    def forward(self, state: ScaledMMState, x: torch.Tensor, out_dtype: torch.dtype,
                divisor: Optional[torch.Tensor] = None) -> torch.Tensor:
        in_features, out_features = state.weight_t.shape
        codes, a_scale = fused_quantize_per_token_e4m3(x.reshape(-1, in_features), state.act_clip, divisor)
        y = self.scaled_product(state, codes, a_scale)
        if state.bias is not None or y.dtype != out_dtype:
            y = fused_dequantize_output(y, None, None, state.bias, out_dtype)
        return y.reshape(*x.shape[:-1], out_features)


CUDA_FP8 = register_backend(ScaledMMBackend("cuda-fp8-scaled-mm", "cuda", priority=80, gemm_dtype=torch.bfloat16,
                                            min_capability=FP8_MIN_CAPABILITY, k_n_multiple=16))
CPU_FP8_EMULATED = register_backend(ScaledMMBackend("cpu-fp8-emulated", "cpu", priority=0,
                                                    gemm_dtype=torch.float32, auto_selectable=False))
