"""The element-wise passes around W8A8 GEMMs of a VGGT block on CPU: separate (as the model runs them today)
against fused into one ``torch.compile`` pass, each fusion timed side by side in one run.

Usage: python benchmarks/fused_passes_cpu.py [--tokens 13740] [--repeats 5] [--threads N] [--out FILE]
(13740 tokens = 10 frames of 518x518, the M of the aggregator's Linears.) Shapes and dtypes as under bf16
autocast: the residual stream and the LayerNorm outputs are float32, GEMM outputs and GELU bfloat16.

Fusions (each against its separate passes; the GEMMs themselves are not timed, except in the first):
- ``gemm_bf16_output``: the whole ``cpu-amx-int8`` op of each Linear with a bf16 result, its GEMM writing
  float32 (then the epilogue reads it; what the backend does) against writing bf16 (half the bytes, one more
  rounding: not used, it lost fidelity, see benchmarks/RESULTS.md);
- ``layernorm_quantize`` (qkv, fc1 inputs): ATen LayerNorm then the compiled per-token quantization, against
  both in one compiled function;
- ``dequant_gelu_quantize`` (fc1 -> fc2): fc1's epilogue (token scale, bias, to bf16), ATen GELU, fc2's
  quantization, against one compiled function from fc1's GEMM output to fc2's codes and scales;
- ``dequant_layerscale_residual`` (proj, fc2 outputs): the epilogue to bf16, then ``x + gamma * y`` (ATen,
  float32 as under autocast), against one compiled function (``fused_dequantize_output_residual``, what
  ``quant.fuse_residual_epilogues`` makes attn.proj and mlp.fc2 do).
Each fused result is compared with the separate one (codes: fraction that differ, by one step at most;
floats: max error over max |value|). Prints one JSON object.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vggt_quant_core.eval.speed_bench import environment, tokens_per_frame
from vggt_quant_core.kernels.allocator import tune_glibc_malloc
from vggt_quant_core.kernels.elementwise import (MaybeCompiled, dequantize_output, fused_dequantize_output,
                                                 fused_dequantize_output_residual, fused_quantize_per_token,
                                                 quantize_per_token)
from vggt_quant_core.kernels.onednn_int8 import CPU_AMX_INT8, amx_int8_missing
from vggt_quant_core.kernels.registry import LinearSpec, QuantizedWeights
from vggt_quant_core.model import VGGTConfig
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

QMAX = 127
EPS = 1e-5  # the aggregator's LayerNorm eps


def _layernorm_quantize(x, weight, bias, clip):
    return quantize_per_token(F.layer_norm(x, x.shape[-1:], weight, bias, EPS), QMAX, clip)


def _dequant_gelu_quantize(acc, a_scale, bias, clip):
    return quantize_per_token(F.gelu(dequantize_output(acc, a_scale, None, bias, torch.bfloat16)), QMAX, clip)


fused_layernorm_quantize = MaybeCompiled(_layernorm_quantize)
fused_dequant_gelu_quantize = MaybeCompiled(_dequant_gelu_quantize)


def interleaved_ms(variants: dict, repeats: int) -> dict:
    for run in variants.values():
        run()
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def _difference(separate, fused) -> dict:
    if separate.dtype == torch.int8:
        steps = (separate.int() - fused.int()).abs()
        return {"codes_differing": round(float((steps > 0).float().mean()), 6), "max_step": int(steps.max())}
    error = (separate.float() - fused.float()).abs().max() / separate.float().abs().max()
    return {"max_error_over_max": float(f"{float(error):.3g}")}


def _row(name: str, variants: dict, repeats: int, separate, fused) -> dict:
    ms = interleaved_ms(variants, repeats)
    first, second = ms.values()
    return {"ms": ms, "speedup_fused_vs_separate": round(first / second, 2), "fused_vs_separate": _difference(
        separate, fused)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10 * tokens_per_frame(VGGTConfig(), 518, 518))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if amx_int8_missing():
        raise SystemExit(f"needs oneDNN's AMX int8 path: {amx_int8_missing()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_glibc_malloc()
    torch.manual_seed(0)
    m, dim, hidden = args.tokens, VGGTConfig().embed_dim, 4 * VGGTConfig().embed_dim
    clip = torch.tensor(1.0)
    report = {"benchmark": "fused_passes_cpu", "environment": environment(), "tokens": m, "fusions": {}}
    fusions = report["fusions"]
    with torch.inference_mode():
        rows = {}
        for kind, (k, n) in {"attn.qkv": (dim, 3 * dim), "attn.proj": (dim, dim), "mlp.fc1": (dim, hidden),
                             "mlp.fc2": (hidden, dim)}.items():
            codes = torch.randint(-QMAX, QMAX + 1, (n, k), dtype=torch.int8)
            weights = QuantizedWeights(codes, torch.rand(n, 1) / 500, None, torch.randn(n) / 10, clip)
            state = CPU_AMX_INT8.prepare(weights, LinearSpec(k, n, w_bits=8, a_bits=8))
            x = torch.randn(m, k) if kind in ("attn.qkv", "mlp.fc1") else torch.randn(m, k).bfloat16()

            def whole_op(gemm_dtype, state=state, x=x):
                a_codes, a_scale = fused_quantize_per_token(x, QMAX, clip)
                acc = CPU_AMX_INT8.weight_scaled_accumulate(state, a_codes, gemm_dtype)
                return fused_dequantize_output(acc, a_scale, None, state.bias, torch.bfloat16)
            rows[kind] = _row(kind, {"float32 GEMM output": lambda: whole_op(torch.float32),
                                     "bf16 GEMM output": lambda: whole_op(torch.bfloat16)}, args.repeats,
                              whole_op(torch.float32), whole_op(torch.bfloat16))
        fusions["gemm_bf16_output"] = rows

        residual = torch.randn(m, dim) * 3
        norm_weight, norm_bias = torch.rand(dim) + 0.5, torch.randn(dim) / 10

        def separate_ln():
            return fused_quantize_per_token(F.layer_norm(residual, (dim,), norm_weight, norm_bias, EPS), QMAX, clip)
        fused_ln = (lambda: fused_layernorm_quantize(residual, norm_weight, norm_bias, clip))
        fusions["layernorm_quantize"] = _row("ln", {"separate": separate_ln, "fused": fused_ln}, args.repeats,
                                             separate_ln()[0], fused_ln()[0])

        acc1 = (torch.randn(m, hidden) * 30).bfloat16()
        scale1, bias1 = torch.rand(m, 1) / 20, torch.randn(hidden) / 10

        def separate_gelu():
            return fused_quantize_per_token(F.gelu(fused_dequantize_output(acc1, scale1, None, bias1, torch.bfloat16)),
                                            QMAX, clip)
        fused_gelu = (lambda: fused_dequant_gelu_quantize(acc1, scale1, bias1, clip))
        fusions["dequant_gelu_quantize"] = _row("gelu", {"separate": separate_gelu, "fused": fused_gelu},
                                                args.repeats, separate_gelu()[0], fused_gelu()[0])

        acc2 = (torch.randn(m, dim) * 30).bfloat16()
        scale2, bias2, gamma = torch.rand(m, 1) / 20, torch.randn(dim) / 10, torch.full((dim,), 0.01)

        def separate_residual():
            return residual + gamma * fused_dequantize_output(acc2, scale2, None, bias2, torch.bfloat16)
        fused_residual = (lambda: fused_dequantize_output_residual(acc2, scale2, None, bias2, torch.bfloat16, gamma,
                                                                   residual))
        fusions["dequant_layerscale_residual"] = _row(
            "residual", {"separate": separate_residual, "fused": fused_residual}, args.repeats, separate_residual(),
            fused_residual())
    emit(report, args.out)


if __name__ == "__main__":
    main()
