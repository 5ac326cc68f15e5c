"""``QuantLinear``: one quantized Linear layer with an input transform and pluggable backends.

Two states:

* float (after ``from_linear``): the original weight is kept; transforms, clipping and smoothing can be
  learned; the forward fake-quantizes the transformed weight and activations on the fly (STE).
  ``quantization_enabled = False`` turns both quantizers off: the layer then computes the original
  Linear (up to float rounding of the transforms).
* frozen (after ``freeze``): the transformed weight is stored as integer codes (int8, or two 4-bit codes
  per byte for <= 4 bits), or FP8 E4M3 codes (float8_e4m3fn), with scales; the float weight is gone.
  Weights are always quantized; the flag only switches activation quantization.

Forward: ``y = Q_a(T(x)) @ Q_w(fold_T(W))^T + b``.

Backends (``layer.backend``): ``reference`` is fake quantization in float, the correctness oracle and
the only one for the float state and for autograd; a name from ``kernels.registry`` forces that real
low-bit kernel (an error if it cannot run the layer); ``auto`` (the default, or ``$VGGTQ_BACKEND``) picks
the best real backend that supports the layer's formats on the input's device, else the reference.
``defer_epilogue = True`` (off by default; not saved) makes a real backend with a separate epilogue return
a ``kernels.deferred.DeferredOutput``: its epilogue then runs at the first use of the output, fused with a
following per-channel scale and residual add (``x + gamma * layer(...)``); any other use gets the tensor.
A real backend gets the transformed input T(x), computed exactly as the reference computes it, so both
quantize the same values. Its prepared state (e.g. unpacked weights) is built on first use, rebuilt
when the backend, the device or the canonical tensors change, and never saved.
"""

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import pack_int4, unpack_int4
from ..kernels.deferred import DeferredOutput
from ..kernels.registry import (LinearBackend, LinearSpec, QuantizedWeights, device_capability, get_backend,
                                select_backend)
from .quantizers import ActQuantizer, QuantSpec, WeightQuantizer, dequantize, quantize_codes
from .transforms import ChannelScale, InputTransform, RandomHadamard

AUTO, REFERENCE = "auto", "reference"
BACKEND_ENV = "VGGTQ_BACKEND"  # default backend of new layers (tests, benchmarks)


@dataclass
class _PreparedKernel:
    backend: Optional[LinearBackend]  # None: the reference
    state: Any
    key: tuple                        # device and versions of the tensors it was prepared from


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
        self._kernel: Optional[_PreparedKernel] = None
        self._active_backend: Optional[str] = None
        self.backend = os.environ.get(BACKEND_ENV, AUTO)
        self.fused_norm: Optional[str] = None  # LayerNorm that absorbed a leading smoothing scale
        self.defer_epilogue = False  # return a DeferredOutput where the backend has a separate epilogue
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
            codes = quantize_codes(weight, self.w_spec, scale, zero).reshape(self.out_features, self.in_features)
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
        dtype = torch.float8_e4m3fn if spec.is_e4m3 else torch.uint8 if self.packed or not spec.symmetric \
            else torch.int8
        self.qweight = torch.empty(self.out_features, columns, dtype=dtype)
        scale_shape = {"per_tensor": (1, 1), "per_channel": (self.out_features, 1),
                       "per_group": (self.out_features, self.in_features // spec.group_size, 1)}[spec.granularity]
        self.w_scale = torch.empty(scale_shape)
        self.w_zero = None if spec.symmetric else torch.empty(scale_shape)

    # ---- backends ------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in (AUTO, REFERENCE):
            get_backend(name)  # unknown names fail here, with the list of known ones
        self._backend = name
        self._kernel = None

    @property
    def active_backend(self) -> Optional[str]:
        """The backend the last forward ran (None before the first one)."""
        return self._active_backend

    def kernel_spec(self) -> LinearSpec:
        """This layer's formats as the backends see them (activations in float when quantization is off)."""
        w, a = self.w_spec, self.a_spec if self.quantization_enabled else None
        return LinearSpec(self.in_features, self.out_features, w_bits=w.bits if w else None,
                          a_bits=a.bits if a else None, w_symmetric=w.symmetric if w else True,
                          w_granularity=w.granularity if w else "per_channel", w_packed=self.packed,
                          a_symmetric=a.symmetric if a else True, a_granularity=a.granularity if a else "per_token",
                          a_dynamic=self.act_quantizer.dynamic if a else True,
                          w_format=w.number_format if w else "int", a_format=a.number_format if a else "int")

    @torch.no_grad()
    def quantized_weights(self) -> QuantizedWeights:
        """The canonical frozen tensors, plus the activation clip ratio (spec ratio x learned clip)."""
        clip = self.act_quantizer.clip() if self.act_quantizer is not None else None
        ratio = self.a_spec.clip_ratio if self.a_spec is not None else 1.0
        ratio = torch.as_tensor(ratio if clip is None else ratio * clip, dtype=torch.float32,
                                device=self.qweight.device)
        return QuantizedWeights(self.qweight, self.w_scale, self.w_zero, self.bias, ratio)

    def backend_extra_bytes(self) -> int:
        """Bytes the prepared backend state holds beyond the canonical buffers (e.g. int4 weights that a
        backend unpacked to int8); 0 before the first forward and for the reference."""
        if self._kernel is None or self._kernel.state is None:
            return 0
        own = {t.untyped_storage().data_ptr() for t in self.buffers()} | {
            p.untyped_storage().data_ptr() for p in self.parameters()}
        extra = [t for t in vars(self._kernel.state).values() if isinstance(t, torch.Tensor)]
        # Opaque oneDNN tensors (prepacked weights) have no storage to compare: always a copy of their own.
        opaque = sum(t.numel() * t.element_size() for t in extra if t.is_mkldnn)
        return opaque + sum(t.untyped_storage().nbytes() for t in extra
                            if not t.is_mkldnn and t.untyped_storage().data_ptr() not in own)

    def _needs_autograd(self, x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _prepared(self, x: torch.Tensor) -> _PreparedKernel:
        clip = self.act_quantizer.clip_logit if self.act_quantizer is not None else None
        tensors = [t for t in (self.qweight, self.w_scale, self.w_zero, self.bias, clip) if t is not None]
        key = (x.device, self.quantization_enabled, *((t.data_ptr(), t._version) for t in tensors))
        if self._kernel is not None and self._kernel.key == key:
            return self._kernel
        spec = self.kernel_spec()
        if self._backend == AUTO:
            backend = select_backend(spec, x.device)
        else:
            backend = get_backend(self._backend)
            reason = backend.supports(spec, x.device, device_capability(x.device))
            if reason is not None:
                raise ValueError(f"backend {backend.name} cannot run this layer ({spec.label()} on {x.device}): "
                                 f"{reason}")
        state = None if backend is None else backend.prepare(self.quantized_weights(), spec)
        self._kernel = _PreparedKernel(backend, state, key)
        return self._kernel

    # ---- forward -------------------------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """T(x), fake-quantized when activation quantization is on."""
        x = self.transform(x)
        if self.act_quantizer is not None and self.quantization_enabled:
            x = self.act_quantizer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = None
        if self._backend != REFERENCE and self.frozen and not self._needs_autograd(x):
            kernel = self._prepared(x)
        if kernel is None or kernel.backend is None:
            self._active_backend = REFERENCE
            return self._reference_forward(x)
        self._active_backend = kernel.backend.name
        out_dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        x, divisor, extra = self._transform_for_backend(x, kernel.backend.fuses_rotation)
        if self.defer_epilogue and kernel.backend.separate_epilogue:
            return DeferredOutput(kernel.backend.gemm(kernel.state, x, out_dtype, divisor, **extra))
        return kernel.backend.forward(kernel.state, x, out_dtype, divisor, **extra)

    def _fusable_rotation(self) -> Optional[torch.Tensor]:
        """signs / sqrt(n) [n] float32 when the transform is a random Hadamard rotation of a power-of-two size
        (optionally followed by a smoothing step), which a ``fuses_rotation`` backend applies itself."""
        steps = self.transform.steps
        if not len(steps) or steps[0].kind != RandomHadamard.kind or not steps[0].fast:
            return None
        n = steps[0].n
        if n < 16 or n & (n - 1) or len(steps) > 2 or (len(steps) == 2 and steps[1].kind != ChannelScale.kind):
            return None
        return steps[0].signs.float() * n ** -0.5

    def _transform_for_backend(self, x: torch.Tensor, fuses_rotation: bool):
        """(input, divisor, extra backend arguments). The input is T(x), or T(x) before a trailing smoothing
        step whose divisor c the backend then fuses into its quantization pass (only in float32, where that
        division is the reference's exactly). With ``fuses_rotation`` and a fusable random Hadamard rotation,
        the input is x itself and the rotation goes to the backend as ``rotation``, c in float32."""
        steps = self.transform.steps
        smoothed = bool(len(steps)) and steps[-1].kind == ChannelScale.kind
        rotation = self._fusable_rotation() if fuses_rotation else None
        if rotation is not None:
            return x, steps[-1].scale.float() if smoothed else None, {"rotation": rotation}
        if not smoothed:
            return self.transform(x), None, {}
        x = self.transform(x, upto=len(steps) - 1)
        divisor = steps[-1].scale.to(x.dtype)
        if x.dtype != torch.float32:
            return x / divisor, None, {}
        return x, divisor, {}

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake quantization in float: the correctness oracle for every real backend."""
        x_q = self.quantize_input(x)
        weight = self.dequantized_weight()
        bias = self.bias
        if torch.is_autocast_enabled(x.device.type):
            return F.linear(x_q, weight, bias)
        return F.linear(x_q.to(x.dtype), weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    def extra_repr(self) -> str:
        def bits(spec):
            return "16" if spec is None else str(spec.bits) + ("-e4m3" if spec.is_e4m3 else "")
        steps = "+".join(step.kind for step in self.transform.steps) or "none"
        state = "frozen" if self.frozen else "float"
        backend = self.backend if self.active_backend in (None, self.backend) else \
            f"{self.backend} ({self.active_backend})"
        return (f"in={self.in_features}, out={self.out_features}, w{bits(self.w_spec)}a{bits(self.a_spec)}, "
                f"transform={steps}, {state}, backend={backend}")
