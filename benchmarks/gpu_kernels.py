"""Check and time every CUDA quantized-Linear variant against the fake-quant reference, in one run.

For each VGGT-1B aggregator Linear shape (qkv, proj, fc1, fc2) at M = frames x 1374 tokens, and a small
M (camera-token path), it builds one frozen QuantLinear per config (W8A8, W4A8, W4A4 and FP8 E4M3
W8A8; symmetric per-channel weights, dynamic per-token activations, QuaRot Hadamard), then for every
registered CUDA backend that supports it:

1. checks the output against the reference backend (max error relative to the reference's max, and the
   integer accumulator exactly, where the backend exposes ``int_accumulate``);
2. times it (CUDA events, warm-up first, median of repeated calls) next to bf16 ``F.linear``, the
   int8 GEMM alone and (sm_89+) the FP8 ``_scaled_mm`` alone; and times the Hadamard transform with
   every CUDA implementation available (``fast_hadamard_transform`` when importable, and the Kronecker
   GEMMs).

The CUTLASS backends are opted in here (``VGGTQ_CUTLASS=1``, unless ``--no-cutlass``): their extension is
compiled on first use (nvcc, minutes; needs ``pip install nvidia-cutlass`` or ``CUTLASS_PATH``).

It prints one JSON object (device, driver, torch/triton versions, per shape and backend: error, ms and
speed-up over bf16, and which backend ``auto`` picks). Without CUDA it exits with status 2 and a message.

Usage: python benchmarks/gpu_kernels.py [--frames 10] [--repeats 20] [--no-cutlass] [--out benchmarks/results/gpu.json]
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vggt_quant_core.eval.speed_bench import linear_shapes
from vggt_quant_core.kernels import hadamard_transform
from vggt_quant_core.kernels.cutlass_int import CUTLASS_ENV
from vggt_quant_core.kernels.hadamard import BACKENDS as HADAMARD_BACKENDS
from vggt_quant_core.kernels.elementwise import quantize_per_token
from vggt_quant_core.kernels.fp8_scaled_mm import FP8_MIN_CAPABILITY
from vggt_quant_core.kernels.registry import backends, device_capability
from vggt_quant_core.model import VGGTConfig
from vggt_quant_core.quant import QuantConfig, QuantLinear
from vggt_quant_core.quant.api import build_transform
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

TOKENS_PER_FRAME = 1374  # VGGT-1B at 518x518
CONFIGS = {"w8a8": {"w_bits": 8, "a_bits": 8}, "w4a8": {"w_bits": 4, "a_bits": 8}, "w4a4": {"w_bits": 4, "a_bits": 4},
           "w8a8-e4m3": {"w_bits": 8, "a_bits": 8, "number_format": "e4m3"}}


def cuda_ms(run, repeats):
    """Median milliseconds of ``run`` by CUDA events (after 3 warm-up calls)."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def frozen_layer(k, n, formats, device):
    config = QuantConfig(method="quarot", **formats)
    layer = QuantLinear.from_linear(nn.Linear(k, n), build_transform(config, k, 0), config.w_spec(),
                                    config.a_spec())
    layer.freeze()
    return layer.to(device)


def check_and_time(layer, x, repeats):
    device = x.device
    results = {}
    with torch.inference_mode():
        layer.backend = "reference"
        reference = layer(x)
        scale = reference.abs().max().item()
        layer.backend = "auto"
        layer(x)
        results["auto_picks"] = layer.active_backend
        for backend in backends():
            reason = backend.supports(layer.kernel_spec(), device, device_capability(device))
            if reason is not None:
                results[backend.name] = {"skipped": reason}
                continue
            layer.backend = backend.name
            try:
                y = layer(x)
                entry = {"max_err_rel": (y.float() - reference.float()).abs().max().item() / scale,
                         "ms": cuda_ms(lambda: layer(x), repeats)}
                if hasattr(backend, "int_accumulate"):
                    state = layer._kernel.state
                    codes, _ = quantize_per_token(layer.transform(x).reshape(-1, layer.in_features), state.a_qmax,
                                                  state.act_clip)
                    expected = codes.double() @ layer.weight_codes().double().T  # exact below 2^53
                    entry["int_acc_exact"] = bool(torch.equal(backend.int_accumulate(state, codes).double(),
                                                              expected))
            except Exception as exc:  # report, then go on with the other variants
                entry = {"error": f"{type(exc).__name__}: {exc}"}
            results[backend.name] = entry
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-cutlass", action="store_true", help="skip the CUTLASS backends (no nvcc build)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.no_cutlass:
        os.environ.setdefault(CUTLASS_ENV, "1")
    if not torch.cuda.is_available():
        print("gpu_kernels.py: no CUDA device (torch.cuda.is_available() is False); nothing was run. "
              "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    try:
        import triton
        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"not importable ({type(exc).__name__})"
    report = {"benchmark": "gpu_kernels", "device": torch.cuda.get_device_name(device),
              "capability": list(torch.cuda.get_device_capability(device)), "torch": torch.__version__,
              "cuda": torch.version.cuda, "triton": triton_version, "shapes": {}, "hadamard_ms": {}}
    torch.manual_seed(0)
    for rows in (args.frames * TOKENS_PER_FRAME, 10):
        for kind, (k, n, _) in linear_shapes(VGGTConfig()).items():
            x = torch.randn(rows, k, device=device)
            x_bf16 = x.bfloat16()
            w_bf16 = torch.randn(n, k, device=device, dtype=torch.bfloat16)
            codes = torch.randint(-128, 128, (max(rows, 17), k), device=device, dtype=torch.int8)
            weight_codes = torch.randint(-128, 128, (n, k), device=device, dtype=torch.int8)
            entry = {"bf16_ms": cuda_ms(lambda: F.linear(x_bf16, w_bf16), args.repeats),
                     "int_mm_gemm_only_ms": cuda_ms(lambda: torch._int_mm(codes, weight_codes.t()), args.repeats)}
            if torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY:
                x_fp8, w_fp8 = x.to(torch.float8_e4m3fn), w_bf16.to(torch.float8_e4m3fn)
                row_scale, column_scale = torch.ones(rows, 1, device=device), torch.ones(1, n, device=device)
                entry["fp8_scaled_mm_gemm_only_ms"] = cuda_ms(lambda: torch._scaled_mm(
                    x_fp8, w_fp8.t(), scale_a=row_scale, scale_b=column_scale, out_dtype=torch.bfloat16),
                    args.repeats)
            for name, formats in CONFIGS.items():
                entry[name] = check_and_time(frozen_layer(k, n, formats, device), x, args.repeats)
                for result in entry[name].values():
                    if isinstance(result, dict) and "ms" in result:
                        result["speedup_vs_bf16"] = round(entry["bf16_ms"] / result["ms"], 2)
            report["shapes"][f"{kind} M={rows}"] = entry
            print(f"done {kind} M={rows}", file=sys.stderr)
    for n in (1024, 4096):
        x = torch.randn(args.frames * TOKENS_PER_FRAME, n, device=device)
        report["hadamard_ms"][str(n)] = {name: cuda_ms(lambda: hadamard_transform(x, name), args.repeats)
                                         for name in ("cuda-fht", "kronecker") if HADAMARD_BACKENDS[name][0](x)}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
