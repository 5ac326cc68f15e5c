"""Registry of quantized-Linear backends, chosen by what they support and their priority.

A backend computes ``y = dequant(Q_a(x) @ W_q^T) + b`` for one Linear from the canonical quantized
weights (int8 codes or packed int4, scales, bias): the same tensors whatever the backend, so checkpoints
stay backend-independent. It declares ``supports(spec, device, capability)`` (``None`` when it can run,
else the reason it cannot), ``prepare`` (one-time re-layout for its kernel; the result is never saved)
and ``forward``. Backends own their per-call constraints (e.g. CUDA ``_int_mm`` needs M > 16, so small
M is padded there).

``select_backend`` returns the highest-priority backend that supports a layer, or ``None``: the caller
then runs its fake-quant reference, the last fallback and the correctness oracle. The choice is logged
once per (backend, spec, device) at INFO, the rejected backends and why at DEBUG.
"""

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from .deferred import PendingEpilogue

log = logging.getLogger(__name__)

Capability = Optional[Tuple[int, int]]  # CUDA compute capability, None elsewhere


@dataclass(frozen=True)
class LinearSpec:
    """What a backend needs to know of one quantized Linear: shape and number formats.

    ``w_bits``/``a_bits`` None means that side stays in float. Granularities as in the quantizers:
    weights ``per_channel``/``per_group``/``per_tensor``, activations ``per_token``/``per_tensor``.
    ``w_packed``: two 4-bit weight codes per byte (low nibble = even column). ``w_format``/``a_format``:
    the number format of the codes, ``int`` (integer grid) or ``e4m3`` (FP8 E4M3).
    """

    in_features: int
    out_features: int
    w_bits: Optional[int]
    a_bits: Optional[int]
    w_symmetric: bool = True
    w_granularity: str = "per_channel"
    w_packed: bool = False
    a_symmetric: bool = True
    a_granularity: str = "per_token"
    a_dynamic: bool = True
    w_format: str = "int"
    a_format: str = "int"

    def label(self) -> str:
        bits = f"w{self.w_bits or 16}a{self.a_bits or 16}"
        formats = {self.w_format, self.a_format} - {"int"}
        return f"{bits}{''.join(f' {f}' for f in sorted(formats))} {self.in_features}->{self.out_features}"


def symmetric_spec_reason(spec: LinearSpec, number_format: str) -> Optional[str]:
    """Why a GEMM on ``number_format`` codes (both sides) cannot run ``spec`` (None if it can): symmetric
    per-channel (or per-tensor) weights and dynamic symmetric per-token activations."""
    if spec.w_bits is None or spec.a_bits is None:
        return "weight-only or activation-only quantization has no low-precision GEMM"
    if spec.w_format != number_format or spec.a_format != number_format:
        return f"needs {number_format} codes on both sides, not {spec.w_format} weights x {spec.a_format} activations"
    if not (spec.w_symmetric and spec.a_symmetric):
        return "asymmetric grids (zero points) are not supported"
    if spec.w_granularity not in ("per_channel", "per_tensor"):
        return f"{spec.w_granularity} weights are not supported"
    if spec.a_granularity != "per_token" or not spec.a_dynamic:
        return "only dynamic per-token activations are supported"
    return None


@dataclass
class QuantizedWeights:
    """The canonical tensors of a frozen layer (as stored in checkpoints), plus the activation clip.

    qweight: int8 [N, K], or uint8 [N, K/2] packed int4. w_scale: [N, 1] (per channel) or [1, 1].
    act_clip: float32 scalar tensor, the ratio applied to each token's absmax before it becomes a scale.
    """

    qweight: torch.Tensor
    w_scale: torch.Tensor
    w_zero: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    act_clip: torch.Tensor


def symmetric_int_spec(spec: LinearSpec) -> Optional[str]:
    """Why an integer-GEMM backend cannot run ``spec`` (None if it can): integer codes of at most 8 bits
    in the formats of ``symmetric_spec_reason``."""
    return symmetric_spec_reason(spec, "int")


class LinearBackend:
    """Base class: subclasses set ``name`` and ``priority`` (higher wins) and implement ``supports``,
    ``prepare`` and either ``forward`` or ``gemm`` (a GEMM with a separate element-wise epilogue: then
    ``forward`` is ``gemm(...).finish()`` and the layer can defer the epilogue, see ``deferred``).

    ``auto_selectable = False`` marks an emulation that runs only when named (tests, numerics): ``auto``
    never picks it, because it is no faster than the reference; ``auto_skip_reason`` says the same of a
    backend that is correct but slow on this machine only."""

    name = ""
    priority = 0
    auto_selectable = True
    fuses_rotation = False  # forward/gemm take rotation= (a leading random Hadamard, applied in the kernel)

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        raise NotImplementedError

    def auto_skip_reason(self, device: torch.device) -> Optional[str]:
        """Why ``auto`` must not pick this backend on ``device`` even where it ``supports`` a layer, or None."""
        return None if self.auto_selectable else "an emulation, run only when named"

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> Any:
        raise NotImplementedError

    def forward(self, state: Any, x: torch.Tensor, out_dtype: torch.dtype,
                divisor: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: the transformed activations [..., K], still to be divided by ``divisor`` [K] if given (a
        trailing smoothing step, fused into the quantization pass); returns [..., N] in ``out_dtype``."""
        return self.gemm(state, x, out_dtype, divisor).finish()

    def gemm(self, state: Any, x: torch.Tensor, out_dtype: torch.dtype,
             divisor: Optional[torch.Tensor] = None) -> PendingEpilogue:
        """``forward`` up to its epilogue: a ``PendingEpilogue`` (backends that run the epilogue as a separate
        pass), or an object with its ``shape``, ``finish()`` and ``finish_residual(scale, residual)`` (backends
        whose kernel takes the consumer's residual add, see ``deferred``)."""
        raise NotImplementedError(f"{self.name} fuses its epilogue into its kernel")

    @property
    def separate_epilogue(self) -> bool:
        """Whether ``gemm`` exists (the epilogue can be deferred to fuse it with the output's consumer)."""
        return type(self).gemm is not LinearBackend.gemm


_BACKENDS: Dict[str, LinearBackend] = {}
_LOGGED = set()


def register_backend(backend: LinearBackend) -> LinearBackend:
    if not backend.name or backend.name in ("auto", "reference"):
        raise ValueError(f"invalid backend name {backend.name!r}")
    if backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> List[LinearBackend]:
    """Registered backends, best first."""
    return sorted(_BACKENDS.values(), key=lambda b: -b.priority)


def get_backend(name: str) -> LinearBackend:
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from auto, reference, {', '.join(_BACKENDS)}")
    return _BACKENDS[name]


def device_capability(device: torch.device) -> Capability:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def select_backend(spec: LinearSpec, device: torch.device, capability: Capability = None) -> Optional[LinearBackend]:
    """The best backend that supports ``spec`` on ``device`` (of ``capability``, by default the device's),
    or None (use the fake-quant reference)."""
    capability = capability or device_capability(device)
    rejected = []
    chosen = None
    for backend in backends():
        reason = backend.supports(spec, device, capability) or backend.auto_skip_reason(device)
        if reason is None:
            chosen = backend
            break
        rejected.append(f"{backend.name}: {reason}")
    key = (chosen.name if chosen else "reference", spec, str(device))
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("quantized Linear %s on %s: backend %s", spec.label(), device, key[0])
        for line in rejected:
            log.debug("  skipped %s", line)
    return chosen
