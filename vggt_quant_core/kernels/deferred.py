"""A GEMM result whose dequant epilogue waits for its consumer, so that a following ``* scale`` and
``residual +`` run in the same pass (one read of the GEMM output, one write of the sum).

``PendingEpilogue`` holds what an integer backend's GEMM produced (accumulator [M, N], per-token and
per-channel scales, bias, output dtype and shape); a backend whose kernel runs the epilogue itself returns
its own pending object with the same ``shape``, ``finish()`` and ``finish_residual(scale, residual)`` (e.g.
``amx_int8.PendingLinear``, which runs nothing until then). ``DeferredOutput`` wraps either as the layer's
output: it
is not a tensor, and every use of it computes the output, exactly as the epilogue would have, except

- ``out * v`` with ``v`` a tensor of shape [N] (a per-channel scale such as LayerScale's gamma): recorded,
  still deferred;
- ``residual + out`` (or ``out + residual``) with a tensor of the output's shape: ``residual + v * y`` in
  one compiled pass (``fused_dequantize_output_residual``), with the rounding of y to the output dtype
  and the dtype promotion of the separate ops.

Any other use (a torch function, a tensor method or attribute, another operator) computes the output
first, so a consumer that is not a scaled residual add gets the same tensor as without deferral, one pass
later. Nothing here knows which model produces the pattern.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch.utils._pytree import tree_map

from .elementwise import fused_dequantize_output, fused_dequantize_output_residual


@dataclass
class PendingEpilogue:
    """out = acc [M, N] * a_scale [M, 1] * w_scale [1, N] (None: already applied) + bias [N], in
    ``out_dtype``, viewed as ``shape``."""

    acc: torch.Tensor
    a_scale: torch.Tensor
    w_scale: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    out_dtype: torch.dtype
    shape: Tuple[int, ...]

    def finish(self) -> torch.Tensor:
        return fused_dequantize_output(self.acc, self.a_scale, self.w_scale, self.bias,
                                       self.out_dtype).reshape(self.shape)

    def finish_residual(self, scale: Optional[torch.Tensor], residual: torch.Tensor) -> torch.Tensor:
        """residual + scale * out (scale None: residual + out), in one pass."""
        width = self.shape[-1]
        return fused_dequantize_output_residual(self.acc, self.a_scale, self.w_scale, self.bias, self.out_dtype,
                                                scale, residual.reshape(-1, width)).reshape(residual.shape)


_ADDS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}


class DeferredOutput:
    """A layer output whose epilogue runs at its first use (see the module docstring)."""

    def __init__(self, pending: PendingEpilogue, scale: Optional[torch.Tensor] = None) -> None:
        self._pending, self._scale, self._value = pending, scale, None

    def materialize(self) -> torch.Tensor:
        if self._value is None:
            y = self._pending.finish()
            self._value = y if self._scale is None else y * self._scale
        return self._value

    def _add(self, residual) -> torch.Tensor:
        if isinstance(residual, torch.Tensor) and self._value is None and \
                tuple(residual.shape) == tuple(self._pending.shape):
            return self._pending.finish_residual(self._scale, residual)
        return self.materialize() + residual

    def __mul__(self, other):
        if isinstance(other, torch.Tensor) and self._scale is None and self._value is None and \
                tuple(other.shape) == (self._pending.shape[-1],):
            return DeferredOutput(self._pending, other)
        return self.materialize() * other

    __rmul__ = __mul__

    def __add__(self, other):
        return self._add(other)

    __radd__ = __add__

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ADDS and len(args) == 2 and not kwargs:
            first, second = args
            if isinstance(second, cls) and not isinstance(first, cls):
                return second._add(first)
            if isinstance(first, cls) and not isinstance(second, cls):
                return first._add(second)

        def value(item):
            return item.materialize() if isinstance(item, cls) else item
        return func(*tree_map(value, args), **tree_map(value, kwargs))

    def __getattr__(self, name):  # tensor attributes and methods: shape, dtype, reshape, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)


def _materializing(name: str):
    def operator(self, *args):
        return getattr(self.materialize(), name)(*args)
    operator.__name__ = name
    return operator


# Operators are looked up on the class, not through __getattr__: each computes the output, then applies.
for _name in ("__sub__", "__rsub__", "__truediv__", "__rtruediv__", "__matmul__", "__rmatmul__", "__neg__",
              "__getitem__", "__pow__", "__len__", "__iter__", "__bool__", "__float__", "__array__"):
    setattr(DeferredOutput, _name, _materializing(_name))
