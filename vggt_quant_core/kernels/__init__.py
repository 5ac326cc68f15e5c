"""Low-level kernels (Hadamard transforms, int4 packing, quantized-Linear backends). Knows nothing of VGGT.

Importing this package registers the backends of ``int_mm`` (CPU and CUDA ``torch._int_mm``),
``amx_int8`` (CPU with AMX: our fused quantize-GEMM-epilogue kernel, compiled on first use),
``onednn_int8`` (CPU with AMX: oneDNN's AMX int8 GEMM), ``fp8_scaled_mm`` (FP8 E4M3 ``torch._scaled_mm``:
CUDA sm_89+, and a CPU emulation run only when named), ``triton_int`` (CUDA; Triton is imported only when
one of its kernels is first needed) and ``cutlass_int`` (CUDA, opt-in; the extension is built only when
one of its kernels is first needed).
"""

# noqa: F401 below: imported to register the backends
from . import amx_int8, cutlass_int, fp8_scaled_mm, int_mm, onednn_int8, triton_int  # noqa: F401
from .elementwise import quantize_rows, set_compile
from .hadamard import hadamard_matrix, hadamard_transform, is_hadamard_order, random_orthogonal
from .packing import pack_int4, unpack_int4

__all__ = ["hadamard_matrix", "hadamard_transform", "is_hadamard_order", "pack_int4", "quantize_rows",
           "random_orthogonal", "set_compile", "unpack_int4"]
