"""``QuantLinear``: one quantized Linear layer with an input transform and pluggable backends.

Two states:

* float (after ``from_linear``): the original weight is kept; transforms, clipping and smoothing can be
  learned; the forward fake-quantizes the transformed weight and activations on the fly (STE).
  ``quantization_enabled = False`` turns both quantizers off: the layer then computes the original
  Linear (up to float rounding of the transforms).
* frozen (after ``freeze``): the transformed weight is stored as integer codes (int8, or two 4-bit codes
  per byte for <= 4 bits) with scales; the float weight is gone. Weights are always quantized; the flag
  only switches activation quantization.

Forward: ``y = Q_a(T(x)) @ Q_w(fold_T(W))^T + b``.
"""

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import pack_int4, unpack_int4
from .quantizers import ActQuantizer, QuantSpec, WeightQuantizer, dequantize, quantize_to_int
from .transforms import InputTransform


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, transform: InputTransform,
                 w_spec: Optional[QuantSpec], a_spec: Optional[QuantSpec], a_dynamic: bool = True,
                 learnable_clip: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.transform = transform
        self.w_spec, self.a_spec = w_spec, a_spec
        self.weight_quantizer = WeightQuantizer(w_spec, out_features, learnable_clip) if w_spec else None
        self.act_quantizer = ActQuantizer(a_spec, a_dynamic, learnable_clip) if a_spec else None
        self.quantization_enabled = True
        self.backend = "reference"
        self.fused_norm: Optional[str] = None  # LayerNorm that absorbed a leading smoothing scale
        for name in ("qweight", "w_scale", "w_zero"):
            self.register_buffer(name, None)
        self.register_buffer("_weight_cache", None, persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, transform: InputTransform, w_spec: Optional[QuantSpec],
                    a_spec: Optional[QuantSpec], a_dynamic: bool = True, learnable_clip: bool = False
                    ) -> "QuantLinear":
        """Wrap ``linear`` (float state); its weight and bias are copied in float32."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, transform, w_spec, a_spec,
                    a_dynamic, learnable_clip).to(linear.weight.device)
        with torch.no_grad():
            layer.weight = nn.Parameter(linear.weight.detach().float().clone())
            if linear.bias is not None:
                layer.bias = nn.Parameter(linear.bias.detach().float().clone())
        return layer

    @property
    def frozen(self) -> bool:
        return self.qweight is not None

    @property
    def packed(self) -> bool:
        return self.w_spec is not None and self.w_spec.bits <= 4

    # ---- weights -------------------------------------------------------------------------------------
    def transformed_weight(self) -> torch.Tensor:
        """fold_T(W) in float32 (float state only)."""
        return self.transform.fold_weight(self.weight.float())

    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes [out, in] (frozen state), unpacked."""
        if not self.packed:
            return self.qweight
        return unpack_int4(self.qweight, signed=self.w_spec.symmetric)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight the layer multiplies with, float32 [out, in]."""
        if not self.frozen:
            weight = self.transformed_weight()
            if self.weight_quantizer is not None and self.quantization_enabled:
                weight = self.weight_quantizer(weight)
            return weight
        if self.w_spec is None:
            return self.qweight.float()
        if self._weight_cache is None:
            codes = self.weight_codes()
            if self.w_spec.granularity == "per_group":
                codes = codes.reshape(self.out_features, -1, self.w_spec.group_size)
            self._weight_cache = dequantize(codes, self.w_scale, self.w_zero,
                                            shape=(self.out_features, self.in_features))
        return self._weight_cache

    @torch.no_grad()
    def freeze(self) -> None:
        """Quantize the transformed weight once and drop the float weight (float -> frozen state).

        Without a weight quantizer (activation-only configs) the transformed weight is kept in float32.
        """
        if self.frozen:
            return
        weight = self.transformed_weight()
        if self.w_spec is None:
            self.qweight = weight.contiguous()
        else:
            scale, zero = self.weight_quantizer.qparams(weight)
            codes = quantize_to_int(weight, self.w_spec, scale, zero).reshape(self.out_features, self.in_features)
            self.qweight = pack_int4(codes) if self.packed else codes
            self.w_scale, self.w_zero = scale, zero
        self.weight = None
        self.weight_quantizer = None  # clipping is baked into the scales
        self._weight_cache = None

    def allocate_frozen(self) -> None:
        """Empty frozen-state buffers of the right shapes, to load a saved state into."""
        spec = self.w_spec
        self.weight = None
        self.weight_quantizer = None
        if spec is None:
            self.qweight = torch.empty(self.out_features, self.in_features)
            return
        columns = self.in_features // 2 if self.packed else self.in_features
        self.qweight = torch.empty(self.out_features, columns,
                                   dtype=torch.uint8 if self.packed or not spec.symmetric else torch.int8)
        scale_shape = {"per_tensor": (1, 1), "per_channel": (self.out_features, 1),
                       "per_group": (self.out_features, self.in_features // spec.group_size, 1)}[spec.granularity]
        self.w_scale = torch.empty(scale_shape)
        self.w_zero = None if spec.symmetric else torch.empty(scale_shape)

    # ---- forward -------------------------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """T(x), fake-quantized when activation quantization is on."""
        x = self.transform(x)
        if self.act_quantizer is not None and self.quantization_enabled:
            x = self.act_quantizer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return BACKENDS[self.backend](self, x)

    def extra_repr(self) -> str:
        def bits(spec):
            return "16" if spec is None else str(spec.bits)
        steps = "+".join(step.kind for step in self.transform.steps) or "none"
        state = "frozen" if self.frozen else "float"
        return (f"in={self.in_features}, out={self.out_features}, w{bits(self.w_spec)}a{bits(self.a_spec)}, "
                f"transform={steps}, {state}, backend={self.backend}")


def _reference_forward(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """Fake quantization in float: the correctness oracle for every real backend."""
    x_q = layer.quantize_input(x)
    weight = layer.dequantized_weight()
    bias = layer.bias
    if torch.is_autocast_enabled(x.device.type):
        return F.linear(x_q, weight, bias)
    return F.linear(x_q.to(x.dtype), weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


# Backend name -> forward(layer, x). Real low-bit kernels register here; "reference" is the fallback.
BACKENDS: Dict[str, Callable[[QuantLinear, torch.Tensor], torch.Tensor]] = {"reference": _reference_forward}
