"""Uniform integer quantizers, and FP8 E4M3.

One function, ``quantize_codes``, maps floats to codes (``quantize_to_int`` for integer grids,
``quantize_to_e4m3`` for FP8); fake quantization is ``dequantize(quantize_codes(x))`` with
straight-through rounding, so fake-quant and real low-bit backends round identically (round half to even,
as ``torch.round`` and the float8 cast).

Grids: symmetric b-bit codes in [-2^(b-1), 2^(b-1) - 1] with ``scale = clip * absmax / (2^(b-1) - 1)``;
asymmetric codes in [0, 2^b - 1] with ``scale = clip * (max - min) / (2^b - 1)`` and an integer zero
point (min and max are first extended to include 0, so 0 is exact). E4M3 (``number_format="e4m3"``, 8
bits, symmetric only): ``scale = clip * absmax / 448`` and codes are float8_e4m3fn values of x / scale.
"""

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..kernels.elementwise import E4M3_MAX

GRANULARITIES = ("per_tensor", "per_channel", "per_group", "per_token")
NUMBER_FORMATS = ("int", "e4m3")
_MIN_SCALE = 1e-8


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    granularity (scale shape for a [rows, cols] tensor): ``per_tensor`` [1, 1]; ``per_channel`` (weights,
    one per output row) and ``per_token`` (activations, one per token row) [rows, 1]; ``per_group``
    [rows, cols / group_size]. ``number_format``: ``int`` (integer grid) or ``e4m3`` (FP8, 8 bits, symmetric).
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_channel"
    group_size: int = 128
    clip_ratio: float = 1.0
    number_format: str = "int"

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "per_group" and self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if not 0 < self.clip_ratio <= 1:
            raise ValueError(f"clip_ratio must be in (0, 1], got {self.clip_ratio}")
        if self.number_format not in NUMBER_FORMATS:
            raise ValueError(f"number_format must be one of {NUMBER_FORMATS}, got {self.number_format!r}")
        if self.is_e4m3 and (self.bits != 8 or not self.symmetric):
            raise ValueError("e4m3 is an 8-bit symmetric format")

    @property
    def is_e4m3(self) -> bool:
        return self.number_format == "e4m3"

    @property
    def qmin(self) -> float:
        if self.is_e4m3:
            return -E4M3_MAX
        return -(1 << (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> float:
        if self.is_e4m3:
            return E4M3_MAX
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    def to_dict(self) -> dict:
        """Field -> value; the number format only when it is not ``int``, so integer specs are written as
        before the field existed (checkpoints older readers can load)."""
        data = asdict(self)
        if not self.is_e4m3:
            del data["number_format"]
        return data


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _grouped(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View x so that the last dim is one quantization group: [..., groups, size] or as is."""
    if spec.granularity != "per_group":
        return x
    if x.shape[-1] % spec.group_size:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of group_size {spec.group_size}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // spec.group_size, spec.group_size)


def compute_qparams(x: torch.Tensor, spec: QuantSpec, clip: Optional[torch.Tensor] = None
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scale (and zero point for asymmetric specs) of x; ``clip`` (broadcastable to the scale, e.g. a
    learnable per-row ratio) multiplies the range on top of ``spec.clip_ratio``.

    Shapes keep x's dims with size 1 where reduced (groups: [..., groups, 1]), so that
    ``x / scale`` broadcasts.
    """
    x = _grouped(x.float(), spec)
    if spec.granularity == "per_tensor":
        dims = tuple(range(x.dim()))
    else:
        dims = (-1,)
    ratio = spec.clip_ratio if clip is None else spec.clip_ratio * clip
    if spec.symmetric:
        absmax = x.abs().amax(dim=dims, keepdim=True)
        return (absmax * ratio / spec.qmax).clamp(min=_MIN_SCALE), None
    high = x.amax(dim=dims, keepdim=True).clamp(min=0) * ratio
    low = x.amin(dim=dims, keepdim=True).clamp(max=0) * ratio
    scale = ((high - low) / spec.qmax).clamp(min=_MIN_SCALE)
    zero = torch.round(-low / scale).clamp(spec.qmin, spec.qmax)
    return scale, zero


def quantize_to_int(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero: Optional[torch.Tensor] = None,
                    ste: bool = False) -> torch.Tensor:
    """Integer codes of x on the spec's grid: int8 (symmetric) or uint8 (asymmetric), or, with ``ste``,
    a float tensor of integral values that lets gradients through. Per-group specs give the
    ``_grouped`` shape [..., groups, group_size]."""
    x = _grouped(x.float(), spec)
    scaled = x / scale + (zero if zero is not None else 0)
    codes = torch.clamp(round_ste(scaled) if ste else torch.round(scaled), spec.qmin, spec.qmax)
    if ste:
        return codes
    return codes.to(torch.int8 if spec.symmetric else torch.uint8)


def quantize_to_e4m3(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, ste: bool = False) -> torch.Tensor:
    """FP8 E4M3 codes of x / scale (float8_e4m3fn; with ``ste``, float32 values that let gradients through).
    Clamped to +-448 before the cast, which rounds to nearest even: the codes of the FP8 backends."""
    scaled = (_grouped(x.float(), spec) / scale).clamp(-E4M3_MAX, E4M3_MAX)
    codes = scaled.to(torch.float8_e4m3fn)
    if ste:
        return scaled + (codes.float() - scaled).detach()
    return codes


def quantize_codes(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero: Optional[torch.Tensor] = None,
                   ste: bool = False) -> torch.Tensor:
    """Codes of x in the spec's number format: ``quantize_to_int`` or ``quantize_to_e4m3``."""
    if spec.is_e4m3:
        return quantize_to_e4m3(x, spec, scale, ste)
    return quantize_to_int(x, spec, scale, zero, ste)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor] = None,
               shape: Optional[torch.Size] = None) -> torch.Tensor:
    """Float values of codes; ``shape`` undoes the per-group view."""
    values = (codes.float() - (zero if zero is not None else 0)) * scale
    return values.reshape(shape) if shape is not None else values


def fake_quantize(x: torch.Tensor, spec: QuantSpec, clip: Optional[torch.Tensor] = None,
                  scale: Optional[torch.Tensor] = None, zero: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Quantize-dequantize with straight-through rounding; dynamic qparams unless ``scale`` is given.
    Returns float32 of x's shape."""
    if scale is None:
        scale, zero = compute_qparams(x, spec, clip)
    codes = quantize_codes(x, spec, scale, zero, ste=True)
    return dequantize(codes, scale, zero, shape=x.shape)


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight [out, in] with ``spec``; optional learnable per-row clipping (LWC:
    ratio = sigmoid(logit), logit initialised to 4.0, i.e. 0.982)."""

    def __init__(self, spec: QuantSpec, out_features: int = 0, learnable_clip: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.clip_logit = nn.Parameter(torch.full((out_features, 1), 4.0)) if learnable_clip else None

    def clip(self) -> Optional[torch.Tensor]:
        if self.clip_logit is None:
            return None
        return torch.sigmoid(self.clip_logit).unsqueeze(-1) if self.spec.granularity == "per_group" \
            else torch.sigmoid(self.clip_logit)

    def qparams(self, weight: torch.Tensor):
        return compute_qparams(weight, self.spec, self.clip())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.spec, self.clip())


class ActQuantizer(nn.Module):
    """Fake-quantizes activations [..., C].

    Dynamic (default): qparams from each token (``per_token``) or the whole tensor (``per_tensor``) at
    run time. Static: ``per_tensor`` only, with a scale fixed by ``calibrate_static`` (a per-token static
    scale would depend on the number of frames and the resolution). Optional learnable clipping (LAC:
    one ratio per layer, sigmoid of a logit initialised to 4.0).
    """

    def __init__(self, spec: QuantSpec, dynamic: bool = True, learnable_clip: bool = False) -> None:
        super().__init__()
        if spec.granularity not in ("per_token", "per_tensor"):
            raise ValueError(f"activations are quantized per_token or per_tensor, not {spec.granularity}")
        if not dynamic and spec.granularity != "per_tensor":
            raise ValueError("static activation quantization is per_tensor only (a per-token static scale "
                             "would depend on the frame count and resolution)")
        self.spec = spec
        self.dynamic = dynamic
        self.clip_logit = nn.Parameter(torch.full((1,), 4.0)) if learnable_clip else None
        self.register_buffer("static_scale", None)
        self.register_buffer("static_zero", None)

    def clip(self) -> Optional[torch.Tensor]:
        return None if self.clip_logit is None else torch.sigmoid(self.clip_logit)

    def calibrate_static(self, absmax: torch.Tensor, low: Optional[torch.Tensor] = None) -> None:
        """Fix the static per-tensor qparams from a calibration range (max |x|, or [low, absmax])."""
        sample = absmax.reshape(1) if self.spec.symmetric else torch.stack([low.reshape(()), absmax.reshape(())])
        self.static_scale, self.static_zero = compute_qparams(sample, self.spec, self.clip())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            return fake_quantize(x, self.spec, self.clip())
        if self.static_scale is None:
            raise RuntimeError("static activation quantizer used before calibrate_static()")
        return fake_quantize(x, self.spec, scale=self.static_scale, zero=self.static_zero)
