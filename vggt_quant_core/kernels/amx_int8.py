"""CPU W8A8 Linear on AMX with the per-token quantization and the whole dequant epilogue in the GEMM's pass
(``csrc/amx_int8_linear.cpp``): backend ``cpu-amx-int8-fused``.

Why, next to ``cpu-amx-int8`` (oneDNN): oneDNN's int8 GEMM takes one scalar activation scale, so with
per-token scales the quantization and the dequant are two more passes over the activations, which at
VGGT's shapes cost as much as the GEMM. This kernel quantizes a panel of rows into an L2-resident buffer,
multiplies it with the whole weight on AMX tiles and finishes each accumulator block in L1, so the
activations are read once and the output written once (``benchmarks/RESULTS.md`` has the timings).

Without a rotation, numerics are those of the other integer backends, exactly: the codes and scales of
``elementwise.quantize_per_token``, exact int32 sums, and ``dequantize_output``'s rounding (tested). The
epilogue can also take the consumer's LayerScale and residual add (``residual + gamma * y``, with the
rounding of the separate ops): ``gemm`` returns a ``PendingLinear`` that the layer's ``DeferredOutput``
finishes with or without them, so a residual add costs no pass of its own.

A leading random Hadamard rotation of a power-of-two size (QuaRot's and DSFQ's online one, ``fuses_rotation``)
is applied in the same pass too, as a float32 fast Walsh-Hadamard transform of each row while it is in L1
(``QuantLinear`` hands over the sign vector instead of rotating): equal to ``kernels.hadamard``'s rotation up to
float rounding, and in float32 even for bfloat16 inputs (where the separate rotation runs in bfloat16).

The C++ source is compiled on first use by ``torch.utils.cpp_extension.load`` (g++ with AMX support, and
ninja; about 30 s once, cached by torch afterwards). Where the CPU lacks AMX-INT8 or AVX512-BF16, the OS
withholds the AMX tile state, or the build fails, ``supports`` says why and ``auto`` takes the next backend.
"""

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

from .cpu_isa import amx_int8_unavailable, cpu_flags
from .int_mm import weight_codes_int8
from .registry import Capability, LinearBackend, LinearSpec, QuantizedWeights, register_backend, symmetric_int_spec

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "amx_int8_linear.cpp"
ISA_FLAGS = ["-mamx-tile", "-mamx-int8", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16"]
# -fopenmp: at::parallel_for is OpenMP inlined from the header; -ffp-contract=off: no FMA, the rounding of
# the separate float ops (the module docstring's exactness)
CFLAGS = ["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off", *ISA_FLAGS]
TILE_ROWS, TILE_BYTES, BLOCK = 16, 64, 32  # as in the C++ source
FLOAT_TYPES = (torch.float32, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def _build() -> Tuple[Optional[Callable], Optional[str]]:
    """(the compiled op ``torch.ops.vggtq.amx_int8_linear``, None) or (None, why it is not there)."""
    try:
        from torch.utils.cpp_extension import load

        log.info("loading the AMX int8 Linear kernel (compiled on the first use on a machine: about 30 s)")
        load(name="vggtq_amx_int8", sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
             is_python_module=False)
        return torch.ops.vggtq.amx_int8_linear, None
    except Exception as exc:  # no compiler, no ninja, an old g++ without AMX intrinsics: a reason, not a crash
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"the AMX kernel did not build ({type(exc).__name__}: {first_line})"
        log.warning("%s; using the next CPU backend", reason)
        return None, reason


@functools.lru_cache(maxsize=None)
def amx_fused_missing() -> Optional[str]:
    """None if the fused AMX kernel can run in this process, else why not (built here on the first call)."""
    missing = amx_int8_unavailable()
    if missing:
        return missing
    if "avx512_bf16" not in (cpu_flags() or set()):
        return "this CPU has no AVX512-BF16 (the kernel's bfloat16 conversions)"
    return _build()[1]


def amx_int8_linear() -> Callable:
    """The op: (x [M, K], rotation [K]?, divisor [K]?, packed weight, w_scale [N], bias [N]?, N, qmax, clip,
    out_dtype, layer_scale [N]?, residual [M, N]?) -> [M, N] (``csrc/amx_int8_linear.cpp``)."""
    op, reason = _build()
    if op is None:
        raise RuntimeError(reason)
    return op


def pack_weight(codes: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] -> [N'/16, K'/64, 16, 64], the AMX B-tile (VNNI) layout of ``csrc/amx_int8_linear.cpp``,
    N and K zero-padded to N' (multiple of 32) and K' (multiple of 64)."""
    n, k = codes.shape
    n_padded, k_padded = -(-n // BLOCK) * BLOCK, -(-k // TILE_BYTES) * TILE_BYTES
    padded = torch.zeros(n_padded, k_padded, dtype=torch.int8)
    padded[:n, :k] = codes
    # [n block, column c, k block, tile row r, 4 depths] -> [n block, k block, r, c, 4]
    tiles = padded.view(n_padded // TILE_ROWS, TILE_ROWS, k_padded // TILE_BYTES, TILE_ROWS, 4)
    return tiles.permute(0, 2, 3, 1, 4).reshape(n_padded // TILE_ROWS, k_padded // TILE_BYTES, TILE_ROWS,
                                                TILE_BYTES).contiguous()


@dataclass
class AmxInt8State:
    """What the fused AMX backend keeps per layer (never saved)."""

    packed_weight: torch.Tensor   # int8, see ``pack_weight``
    w_scale: torch.Tensor         # float32 [N]
    bias: Optional[torch.Tensor]  # float32 [N]
    a_qmax: int
    act_clip: float
    in_features: int
    out_features: int


@dataclass
class PendingLinear:
    """The fused layer not yet run: ``finish`` runs it, ``finish_residual`` runs it with the consumer's scaled
    residual add inside (see ``deferred.DeferredOutput``)."""

    state: AmxInt8State
    x: torch.Tensor                   # [M, K] float32 or bfloat16, contiguous
    rotation: Optional[torch.Tensor]  # float32 [K]: signs / sqrt(K) of a random Hadamard rotation to apply first
    divisor: Optional[torch.Tensor]   # float32 [K]
    out_dtype: torch.dtype
    shape: Tuple[int, ...]

    def _run(self, out_dtype: torch.dtype, scale: Optional[torch.Tensor] = None,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.state
        return amx_int8_linear()(self.x, self.rotation, self.divisor, s.packed_weight, s.w_scale, s.bias,
                                 s.out_features, float(s.a_qmax), s.act_clip, out_dtype, scale, residual)

    def finish(self) -> torch.Tensor:
        if self.out_dtype in FLOAT_TYPES:
            return self._run(self.out_dtype).reshape(self.shape)
        return self._run(torch.float32).to(self.out_dtype).reshape(self.shape)

    def finish_residual(self, scale: Optional[torch.Tensor], residual: torch.Tensor) -> torch.Tensor:
        """residual + scale * out (scale None: residual + out), in the dtype the separate ops give."""
        y_dtype = self.out_dtype if scale is None else torch.promote_types(self.out_dtype, scale.dtype)
        fused = (self.out_dtype in FLOAT_TYPES and torch.promote_types(y_dtype, residual.dtype) == residual.dtype
                 and residual.dtype in FLOAT_TYPES and residual.device.type == "cpu"
                 and (scale is None or (scale.dtype == torch.float32 and scale.device.type == "cpu")))
        if not fused:  # a combination the kernel does not round like the separate ops: run them
            y = self.finish()
            return residual + (y if scale is None else y * scale)
        width = self.shape[-1]
        scale = None if scale is None else scale.contiguous()
        return self._run(self.out_dtype, scale, residual.reshape(-1, width).contiguous()).reshape(residual.shape)


class AmxInt8FusedBackend(LinearBackend):
    name = "cpu-amx-int8-fused"
    priority = 120  # above cpu-amx-int8 (110): no separate quantization and dequant passes (module docstring)
    fuses_rotation = True

    def supports(self, spec: LinearSpec, device: torch.device, capability: Capability) -> Optional[str]:
        if device.type != "cpu":
            return "runs on cpu only"
        return symmetric_int_spec(spec) or amx_fused_missing()

    def prepare(self, weights: QuantizedWeights, spec: LinearSpec) -> AmxInt8State:
        n = spec.out_features
        return AmxInt8State(packed_weight=pack_weight(weight_codes_int8(weights, spec)),
                            w_scale=weights.w_scale.float().reshape(-1).expand(n).contiguous(),
                            bias=None if weights.bias is None else weights.bias.float().contiguous(),
                            a_qmax=(1 << (spec.a_bits - 1)) - 1, act_clip=float(weights.act_clip),
                            in_features=spec.in_features, out_features=n)

    def forward(self, state: AmxInt8State, x: torch.Tensor, out_dtype: torch.dtype,
                divisor: Optional[torch.Tensor] = None, rotation: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.gemm(state, x, out_dtype, divisor, rotation).finish()

    def gemm(self, state: AmxInt8State, x: torch.Tensor, out_dtype: torch.dtype,
             divisor: Optional[torch.Tensor] = None, rotation: Optional[torch.Tensor] = None) -> PendingLinear:
        """``rotation`` [K] (signs / sqrt(K), K a power of two >= 16): x is still to be rotated,
        (x * rotation) @ H_K, before the division by ``divisor`` and the quantization."""
        rows = x.reshape(-1, state.in_features)
        if rows.dtype not in FLOAT_TYPES:
            rows = rows.float()

        def vector(v):
            return None if v is None else v.float().contiguous()
        return PendingLinear(state, rows.contiguous(), vector(rotation), vector(divisor), out_dtype,
                             (*x.shape[:-1], state.out_features))


CPU_AMX_INT8_FUSED = register_backend(AmxInt8FusedBackend())
