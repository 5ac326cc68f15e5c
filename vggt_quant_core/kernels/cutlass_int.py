"""CUTLASS integer GEMMs with the dequant epilogue fused (``csrc/cutlass_int_gemm.cu``), for CUDA.

``cuda-int4-cutlass``: W4A4 on native INT4 tensor cores (sm_80/86/87/89; Hopper and newer have none and
run W4A4 through the int8 backends, with identical integer results). Activations are quantized to int4
codes and packed like the weights (two per byte, low nibble = even k); the packed weights are used as
stored. ``cuda-int8-cutlass``: int8 x int8 on sm_80+, for W8A8 and for W4 weights unpacked once.

The extension is compiled on first use by ``torch.utils.cpp_extension.load`` (nvcc, a few minutes,
cached by torch afterwards) against the CUTLASS headers of the ``nvidia-cutlass`` package or of
``$CUTLASS_PATH``. Because of that build, the backends are opt-in: they support nothing unless
``VGGTQ_CUTLASS=1``. The CUDA source compiles with nvcc 13.0 for sm_80, sm_89 and sm_90, and the sm_89
cubin holds IMMA.16864.S4.S4 (native int4) and IMMA.16832.S8.S8 instructions (nvdisasm); the binding
passes a syntax check against torch's headers. Nothing here has run on a GPU yet.
"""

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .elementwise import quantize_rows
from .int_mm import weight_codes_int8
from .packing import pack_int4
from .registry import Capability, LinearBackend, LinearSpec, QuantizedWeights, register_backend, symmetric_int_spec

CUTLASS_ENV = "VGGTQ_CUTLASS"
SOURCES = Path(__file__).parent / "csrc"
NATIVE_INT4 = {(8, 0), (8, 6), (8, 7), (8, 9)}  # IMMA.16864.S4.S4 in SASS (shared/docs/kernels.md §1.1)


def cutlass_include() -> Optional[Path]:
    """CUTLASS's include directory: ``$CUTLASS_PATH/include`` or the one bundled by ``nvidia-cutlass``."""
    if os.environ.get("CUTLASS_PATH"):
        return Path(os.environ["CUTLASS_PATH"]) / "include"
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        return None
    include = Path(spec.origin).parent / "source" / "include"
    return include if include.is_dir() else None


def cutlass_missing() -> Optional[str]:
    """None when the extension can be built, else why not."""
    if os.environ.get(CUTLASS_ENV) != "1":
        return f"opt-in: set {CUTLASS_ENV}=1 (builds a CUDA extension with nvcc on first use)"
    if torch.version.cuda is None:
        return "this torch has no CUDA"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) found"
    if cutlass_include() is None:
        return "CUTLASS headers not found: pip install nvidia-cutlass, or set CUTLASS_PATH"
    return None


@functools.lru_cache(maxsize=None)
def extension(capability: tuple):
    from torch.utils.cpp_extension import load

    arch = f"{capability[0]}{capability[1]}"
    return load(name=f"vggtq_cutlass_sm{arch}", sources=[str(SOURCES / "cutlass_binding.cpp"),
                                                         str(SOURCES / "cutlass_int_gemm.cu")],
                extra_include_paths=[str(cutlass_include()), str(SOURCES)], extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr",
                                   f"-gencode=arch=compute_{arch},code=sm_{arch}"])


@dataclass
class CutlassState:
    weight: torch.Tensor          # int8 [N, K], or packed uint8 [N, K/2] for the int4 kernel
    w_scale: torch.Tensor         # float32 [N]
    bias: Optional[torch.Tensor]  # float32 [N]
    in_features: int
    a_qmax: int
    act_clip: torch.Tensor


class CutlassBackend(LinearBackend):
    def __init__(self, name: str, priority: int, int4: bool) -> None:
        self.name, self.priority, self.int4 = name, priority, int4

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        if device.type != "cuda":
            return "runs on cuda only"
        if self.int4:
            if capability not in NATIVE_INT4:
                return "native INT4 tensor cores exist on sm_80/86/87/89 only"
            if not spec.w_packed or (spec.a_bits or 16) > 4:
                return "for int4 weights and activations (W4A4)"
        elif capability is not None and capability < (8, 0):
            return "needs sm_80 or newer"
        alignment = 32 if self.int4 else 16
        if spec.in_features % alignment or spec.out_features % 8:
            return f"K must be a multiple of {alignment} and N of 8"
        return symmetric_int_spec(spec) or cutlass_missing()

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> CutlassState:
        weight = weights.qweight if self.int4 else weight_codes_int8(weights, spec)
        return CutlassState(weight=weight.contiguous(),
                            w_scale=weights.w_scale.float().reshape(-1).expand(spec.out_features).contiguous(),
                            bias=None if weights.bias is None else weights.bias.float().contiguous(),
                            in_features=spec.in_features, a_qmax=(1 << (spec.a_bits - 1)) - 1,
                            act_clip=weights.act_clip.float().reshape(()))

    def forward(self, state: CutlassState, x: torch.Tensor, out_dtype: torch.dtype,
                divisor: Optional[torch.Tensor] = None) -> torch.Tensor:
        lead = x.shape[:-1]
        codes, a_scale = quantize_rows(x, state.in_features, state.a_qmax, state.act_clip, divisor)
        if self.int4:
            codes = pack_int4(codes, validate=False)  # the quantizer's grid is [-8, 7] already
        y = extension(torch.cuda.get_device_capability(x.device)).int_gemm_dequant(
            codes.contiguous(), state.weight, a_scale.reshape(-1).contiguous(), state.w_scale, state.bias,
            self.int4, out_dtype)
        return y.reshape(*lead, state.weight.shape[0])


# Priorities (no GPU measurement yet): native INT4 beats every int8 path where it exists; the fused int8
# epilogue is expected to beat _int_mm plus a separate epilogue (60). Both only when opted in.
CUTLASS_INT4 = register_backend(CutlassBackend("cuda-int4-cutlass", priority=90, int4=True))
CUTLASS_INT8 = register_backend(CutlassBackend("cuda-int8-cutlass", priority=65, int4=False))
