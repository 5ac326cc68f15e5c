"""Low-level kernels (Hadamard transforms, int4 packing, quantized-Linear backends). Knows nothing of VGGT.

Importing this package registers the backends of ``int_mm`` (CPU and CUDA ``torch._int_mm``); optional
ones (Triton, CUTLASS) register too but import their heavy dependencies only when asked to run.
"""

from . import int_mm  # noqa: F401  (registers the torch._int_mm backends)
from .hadamard import hadamard_matrix, hadamard_transform, is_hadamard_order, random_orthogonal
from .packing import pack_int4, unpack_int4

__all__ = ["hadamard_matrix", "hadamard_transform", "is_hadamard_order", "pack_int4", "random_orthogonal",
           "unpack_int4"]
