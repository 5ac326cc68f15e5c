"""The element-wise passes around an integer GEMM: per-token activation quantization and the dequant
epilogue, eager or fused by ``torch.compile``.

In eager mode these passes, not the GEMM, dominate a W8A8 Linear on CPU (each is several full passes over
[M, K] or [M, N] tensors; see ``shared/docs/kernels.md`` §2.3). ``torch.compile`` fuses each into one or
two loops. Compilation is on by default and happens once per shape family on first use (not per
call: shapes are dynamic); set ``VGGTQ_COMPILE=0`` or call ``set_compile(False)`` to stay eager. If
compilation fails (e.g. no C++ compiler), a warning is logged and the eager function is used.

``quantize_per_token`` must produce exactly the codes of ``quant.quantizers.quantize_to_int`` for a
symmetric dynamic per-token spec (round half to even, clamp to [-qmax - 1, qmax]), and
``quantize_per_token_e4m3`` those of ``quant.quantizers.quantize_to_e4m3`` (clamp to +-448, then the
round-to-nearest-even cast): the tests hold them to that, eager and compiled.
"""

import logging
import os
from typing import Callable, Optional, Tuple

import torch

log = logging.getLogger(__name__)

MIN_SCALE = 1e-8  # smallest quantization scale: an all-zero row gives codes 0, never a division by 0
E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448: the largest finite FP8 E4M3 value
COMPILE_ENV = "VGGTQ_COMPILE"
_compile_override: Optional[bool] = None


def set_compile(enabled: Optional[bool]) -> None:
    """Force ``torch.compile`` of the element-wise passes on or off (None: back to ``$VGGTQ_COMPILE``)."""
    global _compile_override
    _compile_override = enabled


def compile_enabled() -> bool:
    if _compile_override is not None:
        return _compile_override
    return os.environ.get(COMPILE_ENV, "1") != "0"


class MaybeCompiled:
    """Calls ``function`` through ``torch.compile(dynamic=True)`` when compilation is enabled, else eagerly."""

    def __init__(self, function: Callable) -> None:
        self.function = function
        self._compiled: Optional[Callable] = None
        self._broken = False

    def __call__(self, *args):
        if self._broken or not compile_enabled():
            return self.function(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.function, dynamic=True)
        try:
            return self._compiled(*args)
        except Exception as exc:  # a missing compiler must cost speed, not correctness
            log.warning("torch.compile of %s failed (%s: %s); using the eager version", self.function.__name__,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self._broken = True
            return self.function(*args)


def per_token_scale(absmax: torch.Tensor, qmax: float, clip: torch.Tensor) -> torch.Tensor:
    """Quantization scales [M, 1] of rows with max |x| ``absmax`` [M, 1]: clip * absmax / qmax, at least
    ``MIN_SCALE``."""
    return (absmax * clip / qmax).clamp(min=MIN_SCALE)


def _scaled_rows(x: torch.Tensor, qmax: float, clip: torch.Tensor, divisor: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x / scale, max|x_row| [M, 1]), x divided by ``divisor`` first if given."""
    x = x.float()
    if divisor is not None:
        x = x / divisor
    absmax = x.abs().amax(dim=-1, keepdim=True)
    return x / per_token_scale(absmax, qmax, clip), absmax


def _with_scales(quantized: Tuple[torch.Tensor, torch.Tensor], qmax: float, clip: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax) -> (codes, scales). Compiled, the scales come from a graph of their own: in one graph
    with the codes, inductor computes them in a loop of their own, and no longer fuses the row maximum and
    the codes into one pass per row (measured: 1.5x slower, two full passes over x)."""
    codes, absmax = quantized
    torch._dynamo.graph_break()
    return codes, per_token_scale(absmax, qmax, clip)


def quantize_per_token(x: torch.Tensor, qmax: int, clip: torch.Tensor, divisor: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric dynamic per-token quantization of x [M, K]: int8 codes in [-qmax - 1, qmax] and float32
    scales [M, 1] = clip * max|x_row| / qmax (at least ``MIN_SCALE``). ``divisor`` [K] (float32 x only):
    quantize x / divisor, a trailing smoothing step fused into this pass."""
    scaled, absmax = _scaled_rows(x, qmax, clip, divisor)
    return _with_scales((torch.clamp(torch.round(scaled), -qmax - 1, qmax).to(torch.int8), absmax), qmax, clip)


def quantize_per_token_e4m3(x: torch.Tensor, clip: torch.Tensor, divisor: Optional[torch.Tensor] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token FP8 quantization of x [M, K]: float8_e4m3fn codes and float32 scales [M, 1] =
    clip * max|x_row| / 448; ``divisor`` as in ``quantize_per_token``. The clamp comes first because an
    out-of-range cast is not saturating on every device (clipping ratios < 1 put values beyond 448)."""
    scaled, absmax = _scaled_rows(x, E4M3_MAX, clip, divisor)
    return _with_scales((scaled.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), absmax), E4M3_MAX, clip)


def dequantize_output(acc: torch.Tensor, a_scale: Optional[torch.Tensor], w_scale: Optional[torch.Tensor],
                      bias: Optional[torch.Tensor], out_dtype: torch.dtype) -> torch.Tensor:
    """GEMM result [M, N] -> acc * a_scale [M, 1] * w_scale [1, N] + bias [N], in ``out_dtype``; a scale
    is None when the GEMM already applied it (oneDNN takes the weight scales, ``_scaled_mm`` both).

    In place on the one float32 buffer, so the eager version makes at most one allocation."""
    y = acc.to(torch.float32)
    if a_scale is not None:
        y.mul_(a_scale)
    if w_scale is not None:
        y.mul_(w_scale)
    if bias is not None:
        y.add_(bias)
    return y.to(out_dtype)


def dequantize_output_residual(acc: torch.Tensor, a_scale: Optional[torch.Tensor], w_scale: Optional[torch.Tensor],
                               bias: Optional[torch.Tensor], out_dtype: torch.dtype, scale: Optional[torch.Tensor],
                               residual: torch.Tensor) -> torch.Tensor:
    """``residual + scale [N] * dequantize_output(...)`` (scale None: ``residual + dequantize_output(...)``):
    a scaled residual add as part of the epilogue, with the separate ops' rounding to ``out_dtype`` and
    dtype promotion; compiled, one pass over the accumulator and the residual."""
    y = dequantize_output(acc, a_scale, w_scale, bias, out_dtype)
    return residual + (y if scale is None else y * scale)


def quantize_rows(x: torch.Tensor, in_features: int, qmax: int, clip: torch.Tensor,
                  divisor: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``quantize_per_token`` (fused) of x [..., K] viewed as [M, K]: what every integer backend does first."""
    return fused_quantize_per_token(x.reshape(-1, in_features), qmax, clip, divisor)


fused_quantize_per_token = MaybeCompiled(quantize_per_token)
fused_quantize_per_token_e4m3 = MaybeCompiled(quantize_per_token_e4m3)
fused_dequantize_output = MaybeCompiled(dequantize_output)
fused_dequantize_output_residual = MaybeCompiled(dequantize_output_residual)
