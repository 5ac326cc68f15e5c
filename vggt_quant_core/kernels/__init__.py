"""Low-level kernels (Hadamard transforms, int4 packing). Knows nothing of VGGT."""

from .hadamard import hadamard_matrix, hadamard_transform, is_hadamard_order, random_orthogonal
from .packing import pack_int4, unpack_int4

__all__ = ["hadamard_matrix", "hadamard_transform", "is_hadamard_order", "pack_int4", "random_orthogonal",
           "unpack_int4"]
