"""Speed and memory of quantized Linears and models, every variant measured side by side in one run.

Timing: one warm-up call per variant (compilation, weight preparation), then ``repeats`` rounds in which
every variant runs once in turn (interleaved, so load from other processes spreads over all of them);
the median per variant is reported. Ratios are fp32 time / variant time (> 1: faster than fp32), and the
same against bf16 (the best float path where the CPU has AMX). After timing, each variant runs once more
with oneDNN's verbose log on: which kernel it ran (per Linear layer in the model part), as evidence of
e.g. AMX (``brg_matmul:..._amx``) against VNNI (``gemm_api``) or a non-oneDNN kernel.

Every part names the CPU it ran on (model, the integer ISA the kernels see, threads, ISA caps in force:
``kernels.cpu_isa.cpu_label``), so that figures from different machines are never mixed.

Layer part: the four aggregator Linear shapes (qkv, proj, fc1, fc2) at M = frames x tokens per frame,
random weights and inputs; the "aggregator Linears" row sums each shape's median times its count (2 x
depth). "int8 GEMM only" (``torch._int_mm`` on pre-quantized codes) is timed where it runs oneDNN (CPUs with
AVX512-VNNI), not where it is ATen's scalar loop. Model part: the whole model and the aggregator alone, on a
(small) model, with peak memory.
"""

import copy
import ctypes
import ctypes.util
import itertools
import logging
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import quantize_rows
from ..kernels.cpu_isa import cpu_description, cpu_flags, cpu_label
from ..kernels.int_mm import cpu_int_mm_on_onednn
from ..kernels.onednn_int8 import amx_int8_missing
from ..kernels.onednn_verbose import onednn_primitives, onednn_primitives_per_module
from ..model import VGGT, VGGTConfig
from ..quant import (QuantConfig, QuantLinear, fuse_residual_epilogues, quantize, quantize_linear, quantized_layers,
                     size_report)
from .time_breakdown import GEMM_OPS, SDPA_OPS, time_breakdown

log = logging.getLogger(__name__)

LINEAR_KINDS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
# Preceded by norm1/norm2: a leading smoothing is folded into the norm, and under autocast their input is the
# float32 LayerNorm output of the float32 residual stream (proj's and fc2's come from a bf16 GEMM or GELU).
_AFTER_NORM = ("attn.qkv", "mlp.fc1")


def tokens_per_frame(config: VGGTConfig, height: int, width: int) -> int:
    """Aggregator tokens per frame: camera + register tokens + patches (VGGT-1B 518x518: 1374)."""
    return 1 + config.aggregator.num_register_tokens + (height // config.patch_size) * (width // config.patch_size)


def linear_shapes(config: VGGTConfig) -> Dict[str, Tuple[int, int, int]]:
    """kind -> (in_features, out_features, count in the aggregator)."""
    dim, hidden = config.embed_dim, int(config.embed_dim * config.aggregator.mlp_ratio)
    count = 2 * config.aggregator.depth
    return {"attn.qkv": (dim, 3 * dim, count), "attn.proj": (dim, dim, count), "mlp.fc1": (dim, hidden, count),
            "mlp.fc2": (hidden, dim, count)}


def interleaved_times(variants: Dict[str, Callable[[], object]], repeats: int
                      ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Median and minimum seconds per variant over ``repeats`` interleaved rounds (after one warm-up call
    each). On a machine shared with other processes the minimum is the least disturbed figure."""
    for name, run in variants.items():
        log.info("  warm-up %s", name)
        run()
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return ({name: statistics.median(values) for name, values in times.items()},
            {name: min(values) for name, values in times.items()})


def quant_label(method: str, bits: Tuple[int, int], backend: str) -> str:
    return f"{method}-w{bits[0]}a{bits[1]}" + ("" if backend == "auto" else f" [{backend}]")


def _quantized_linear(linear: nn.Linear, kind: str, method: str, bits: Tuple[int, int], index: int) -> QuantLinear:
    """A frozen QuantLinear as ``quantize`` would build it for ``kind`` (smoothing scales random: speed
    does not depend on their values; folded into the LayerNorm where ``quantize`` folds them)."""
    config = QuantConfig(method=method, w_bits=bits[0], a_bits=bits[1])
    return quantize_linear(linear, config, index, smoothing=torch.rand(linear.in_features) + 0.5,
                           smoothing_in_norm=kind in _AFTER_NORM)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def bench_linears(config: VGGTConfig, frames: int, height: int, width: int, quant_configs, backends: Sequence[str],
                  repeats: int, float_dtypes: Sequence[torch.dtype] = (torch.float32,)) -> dict:
    """Each shape in fp32, bf16 and every quantized config x backend; a quantized layer under bf16 autocast
    (``float_dtypes``) gets the input dtype it gets in the model (``_AFTER_NORM``) and returns bf16."""
    tokens = tokens_per_frame(config, height, width)
    rows = frames * tokens
    shapes = linear_shapes(config)
    per_shape, totals, weight_bytes = {}, {}, {}
    for index, (kind, (k, n, count)) in enumerate(shapes.items()):
        log.info("linear %s: M=%d K=%d N=%d", kind, rows, k, n)
        torch.manual_seed(index)
        linear = nn.Linear(k, n)
        x = torch.randn(rows, k)
        x_bf16, linear_bf16 = x.bfloat16(), copy.deepcopy(linear).bfloat16()
        variants: Dict[str, Callable[[], object]] = {
            "fp32": lambda: F.linear(x, linear.weight, linear.bias),
            "bf16": lambda: F.linear(x_bf16, linear_bf16.weight, linear_bf16.bias),
        }
        codes, _ = quantize_rows(x, k, 127, torch.tensor(1.0), None)
        weight_codes = torch.randint(-128, 128, (n, k), dtype=torch.int8)
        if cpu_int_mm_on_onednn():  # elsewhere ATen's scalar loop: minutes per shape, and never auto's choice
            variants["int8 GEMM only"] = lambda: torch._int_mm(codes, weight_codes.t())
        if amx_int8_missing() is None:
            packed, ones, zeros = torch.ops.onednn.qlinear_prepack(weight_codes, None), torch.ones(n), \
                torch.zeros(n, dtype=torch.int64)
            variants["int8 AMX GEMM only"] = lambda: torch.ops.onednn.qlinear_pointwise(
                codes, 1.0, 0, packed, ones, zeros, None, 1.0, 0, torch.float32, "none", [], "")
        sizes = {"fp32": 4 * (k * n + n), "bf16": 2 * (k * n + n)}
        layers = {}
        for method, bits in quant_configs:
            for backend in backends:
                layer = _quantized_linear(linear, kind, method, bits, index)
                layer.backend = backend
                for dtype in float_dtypes:
                    label = quantized_variant_label(quant_label(method, bits, backend), dtype)
                    layers[label] = layer
                    x_in = x if dtype == torch.float32 or kind in _AFTER_NORM else x.to(dtype)
                    variants[label] = _under_autocast(lambda layer=layer, x_in=x_in: layer(x_in), dtype)
        with torch.inference_mode():
            medians, minima = interleaved_times(variants, repeats)
            kernels = {name: onednn_primitives(run) for name, run in variants.items()}
        for label, layer in layers.items():
            sizes[label] = _tensor_bytes(layer.state_dict().values())
            sizes[label + " runtime extra"] = layer.backend_extra_bytes()
        per_shape[kind] = {"M": rows, "K": k, "N": n, "count": count,
                           "ms": {name: round(t * 1e3, 2) for name, t in medians.items()},
                           "min_ms": {name: round(t * 1e3, 2) for name, t in minima.items()},
                           "speedup_vs_fp32": {name: round(medians["fp32"] / t, 2) for name, t in medians.items()},
                           "speedup_vs_bf16": {name: round(medians["bf16"] / t, 2) for name, t in medians.items()},
                           "backends": {label: layer.active_backend for label, layer in layers.items()},
                           "onednn_kernels": kernels}
        for name, t in medians.items():
            totals[name] = totals.get(name, 0.0) + t * count
        for name, size in sizes.items():
            weight_bytes[name] = weight_bytes.get(name, 0) + size * count
    aggregator = {"linears": sum(c for _, _, c in shapes.values()),
                  "seconds": {name: round(t, 3) for name, t in totals.items()},
                  "speedup_vs_fp32": {name: round(totals["fp32"] / t, 2) for name, t in totals.items()},
                  "speedup_vs_bf16": {name: round(totals["bf16"] / t, 2) for name, t in totals.items()},
                  "weight_bytes": weight_bytes}
    return {"cpu": cpu_label(), "frames": frames, "image": [height, width], "tokens_per_frame": tokens, "M": rows,
            "per_shape": per_shape, "aggregator_linears": aggregator}


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _status_bytes(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_delta(run: Callable[[], object]) -> Optional[int]:
    """Peak resident memory during ``run`` above the level before it (Linux: VmHWM reset through
    /proc/self/clear_refs; freed heap is first returned with malloc_trim so it does not hide new use)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_bytes("VmRSS")
    run()
    peak = _status_bytes("VmHWM")
    return None if before is None or peak is None else peak - before


def layer_kernels(net: nn.Module, run: Callable[[], object]) -> Dict[str, int]:
    """How many Linear layers of ``net`` ran each backend + oneDNN kernels in one ``run()``, e.g.
    ``{"cpu-amx-int8: matmul brg_matmul:avx10_1_512_amx": 192}`` (``F.linear`` for float layers)."""
    layers = {name: m for name, m in net.named_modules() if isinstance(m, (nn.Linear, QuantLinear))}
    primitives = onednn_primitives_per_module(layers, run)
    counts = Counter()
    for name, found in primitives.items():
        layer = layers[name]
        backend = layer.active_backend if isinstance(layer, QuantLinear) else "F.linear"
        counts[f"{backend}: {' + '.join(found) or 'no oneDNN primitive'}"] += 1
    return dict(counts)


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def float_part_dtypes(names: str) -> List[torch.dtype]:
    """Autocast dtypes from comma-separated names (fp32, bf16); ``auto``: bf16 where the CPU has AMX-BF16
    (there bf16 matmuls are ~5x fp32), else fp32 (without AMX bf16 is slower than fp32 on CPU)."""
    dtypes = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name == "auto":
            name = "bf16" if "amx_bf16" in (cpu_flags() or ()) else "fp32"
        if name not in ("fp32", "bf16"):
            raise ValueError(f"float parts run in fp32, bf16 or auto, not {name!r}")
        dtypes.append(torch.float32 if name == "fp32" else torch.bfloat16)
    if not dtypes:
        raise ValueError("no float-part precision given")
    return dtypes


def quantized_variant_label(label: str, float_dtype: torch.dtype) -> str:
    """A quantized config's label, naming the autocast its float parts (DINO, attention, norms) run under."""
    return label if float_dtype == torch.float32 else f"{label} + {_DTYPE_NAMES[float_dtype]} autocast"


def _breakdown_regions(net: VGGT, part: str) -> Dict[str, List[nn.Module]]:
    """Module regions of one forward of ``part``: DINO, the aggregator blocks' Linears and (model) the heads."""
    aggregator = net.aggregator
    linears = [m for blocks in (aggregator.frame_blocks, aggregator.global_blocks) for m in blocks.modules()
               if isinstance(m, (nn.Linear, QuantLinear))]
    regions = {"dino": [aggregator.patch_embed], "linears": linears}
    if part == "model":
        regions["heads"] = [head for head in (net.camera_head, net.depth_head, net.point_head, net.track_head)
                            if head is not None]
    return regions


def part_breakdown(net: VGGT, part: str, run: Callable[[], object]) -> dict:
    """Seconds of one profiled ``run()`` by part: the DINO patch embedding (all of it), attention cores
    (SDPA) outside DINO, the aggregator's Linears split into GEMM and overhead (the quantize/dequantize
    passes and transforms of quantized layers, autocast weight casts of float ones), the heads, and the
    rest (norms, RoPE, LayerScale, residuals, token layout, and the epilogues of proj/fc2 where they are fused
    with LayerScale + residual: those run at the residual add, outside the Linears); plus which kernel the
    SDPA calls ran."""
    found = time_breakdown(run, _breakdown_regions(net, part), {"sdpa": SDPA_OPS, "gemm": GEMM_OPS})
    regions, ops = found["regions"], found["ops"]
    sdpa = sum(s for where, s in ops["sdpa"].items() if where != "dino")
    gemm = ops["gemm"].get("linears", 0.0)
    parts = {"dino_patch_embed": regions["dino"], "attention_core_sdpa": sdpa, "linears": regions["linears"],
             "linears_gemm": gemm, "linears_overhead": regions["linears"] - gemm, "heads": regions.get("heads", 0.0)}
    parts["other"] = found["total_s"] - parts["dino_patch_embed"] - sdpa - parts["linears"] - parts["heads"]
    return {"profiled_total_s": round(found["total_s"], 4), "seconds": {k: round(v, 4) for k, v in parts.items()},
            "sdpa_kernels": found["op_children"]["sdpa"]}


def bench_model(model: VGGT, description: str, frames: int, image: Tuple[int, int], quant_configs,
                backends: Sequence[str], repeats: int, parts: Sequence[str] = ("aggregator", "model"),
                float_dtypes: Sequence[torch.dtype] = (torch.float32,), fused_residual: Sequence[bool] = (True,),
                dino_linears: Sequence[bool] = (False,)) -> dict:
    """Whole-model and/or aggregator-only forwards (``parts``) of ``model`` in fp32 and bf16 autocast and of
    its quantized copies, each of those with its float parts under every autocast of ``float_dtypes``, and
    with the epilogues of attn.proj/mlp.fc2 fused with LayerScale + residual or not (``fused_residual``:
    ``quant.fuse_residual_epilogues``; labelled "+ fused residual"), and with DINOv2's block Linears
    quantized too or not (``dino_linears``: ``QuantConfig.include_patch_embed``; labelled "(+ DINO Linears)").

    After the timed rounds each variant runs once more, instrumented: its peak memory, which kernel each
    Linear ran (oneDNN verbose) and where the time went (``part_breakdown``, torch.profiler)."""
    height, width = image
    torch.manual_seed(0)
    images = torch.rand(frames, 3, height, width)
    calibration = [torch.rand(frames, 3, height, width)]
    models = {"fp32": (model, torch.float32, False), "bf16 autocast": (model, torch.bfloat16, False)}
    for (method, bits), dino in itertools.product(quant_configs, dino_linears):
        config = QuantConfig(method=method, w_bits=bits[0], a_bits=bits[1], include_patch_embed=dino)
        quantized = quantize(copy.deepcopy(model), config, calibration_images=calibration,
                             log_fn=lambda message: None)
        for backend in backends:
            net = quantized if len(backends) == 1 else copy.deepcopy(quantized)
            for layer in quantized_layers(net).values():
                layer.backend = backend
            name = quant_label(method, bits, backend) + (" (+ DINO Linears)" if dino else "")
            for dtype in float_dtypes:
                for fused in fused_residual:
                    label = quantized_variant_label(name, dtype)
                    models[label + (" + fused residual" if fused else "")] = (net, dtype, fused)

    results = {}
    entries = {"aggregator": lambda net: lambda: net.aggregator(images[None]), "model": lambda net: lambda: net(images)}
    for part in parts:
        variants = {name: _with_residual_fusion(net, fused, _under_autocast(entries[part](net), dtype))
                    for name, (net, dtype, fused) in models.items()}
        log.info("model part: %s", part)
        with torch.inference_mode():
            medians, minima = interleaved_times(variants, repeats)
            instrumented = {name: _instrumented(models[name][0], part, run) for name, run in variants.items()}
        results[part] = {"seconds": {n: round(t, 4) for n, t in medians.items()},
                         "min_seconds": {n: round(t, 4) for n, t in minima.items()},
                         "speedup_vs_fp32": {n: round(medians["fp32"] / t, 2) for n, t in medians.items()},
                         "speedup_vs_bf16": {n: round(medians["bf16 autocast"] / t, 2) for n, t in medians.items()},
                         **{key: {n: found[key] for n, found in instrumented.items()}
                            for key in ("peak_rss_bytes_above_start", "linear_kernels", "breakdown")}}
    weights = {"fp32": _tensor_bytes(model.state_dict().values())}
    for name, (net, *_) in models.items():
        if net is not model:
            report = size_report(net)
            weights[name] = {k: report[k] for k in ("quantized_layers_bytes", "quantized_layers_fp16_bytes",
                                                    "quantized_layers_fp32_bytes")}
    return {"description": description, "cpu": cpu_label(), "frames": frames, "image": [height, width], **results,
            "weight_bytes": weights}


def _instrumented(net: VGGT, part: str, run: Callable[[], object]) -> dict:
    """One more ``run()`` with peak memory, oneDNN's verbose log and the profiler all on."""
    found = {}

    def traced():
        found["linear_kernels"] = layer_kernels(net, lambda: found.setdefault("breakdown",
                                                                              part_breakdown(net, part, run)))
    found["peak_rss_bytes_above_start"] = peak_rss_delta(traced)
    return found


def _with_residual_fusion(net: nn.Module, fused: bool, call: Callable[[], object]) -> Callable[[], object]:
    def run():
        fuse_residual_epilogues(net, fused)  # variants may share a quantized model
        return call()
    return run


def _under_autocast(call: Callable[[], object], dtype: torch.dtype) -> Callable[[], object]:
    def run():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return call()
    return run


def vggt_1b_checkpoint_sizes() -> dict:
    """Quantized VGGT-1B checkpoint sizes for W8 and W4 (192 aggregator Linears), from the meta device."""
    sizes = {}
    for w_bits in (8, 4):
        with torch.device("meta"):
            model = quantize(VGGT(), QuantConfig(method="quarot", w_bits=w_bits, a_bits=8), log_fn=lambda m: None)
        report = size_report(model)
        report["self_contained_file_bytes"] = report["quantized_layers_bytes"] + report["unquantized_fp32_bytes"]
        sizes[f"w{w_bits}"] = report
    return sizes


def environment() -> dict:
    load = None
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpu": cpu_description(), "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "amx_int8": amx_int8_missing() or "available", "loadavg_at_start": load}


def format_speed_table(report: dict) -> str:
    """Plain-text summary: per part, each variant's time and speed-ups over fp32 and bf16, and the kernels
    the Linears ran."""
    def cells(times: dict, row: dict, unit: str = "") -> str:
        return ", ".join(f"{n} {t}{unit} ({row['speedup_vs_fp32'][n]}x fp32, {row['speedup_vs_bf16'][n]}x bf16)"
                         for n, t in times.items())

    lines = []
    if "linears" in report:
        linears = report["linears"]
        lines.append(f"Linear shapes of {linears.get('shapes_of', 'the model')}, M = {linears['M']} "
                     f"({linears['frames']} frames x {linears['tokens_per_frame']} tokens); ms; on {linears['cpu']}")
        for kind, row in linears["per_shape"].items():
            lines.append(f"  {kind} {row['K']}->{row['N']}: {cells(row['ms'], row)}")
        first = next(iter(linears["per_shape"].values()))
        kernels = "; ".join(f"{n}: {' + '.join(k) or 'none'}" for n, k in first["onednn_kernels"].items())
        lines.append(f"  oneDNN kernels ({next(iter(linears['per_shape']))}): {kernels}")
        total = linears["aggregator_linears"]
        lines.append(f"  all {total['linears']} aggregator Linears: {cells(total['seconds'], total, ' s')}")
    if "model" in report:
        model = report["model"]
        for part in ("aggregator", "model"):
            if part not in model:
                continue
            row = model[part]
            lines.append(f"{model['description']}, {model['frames']} frames of {model['image'][0]}x"
                         f"{model['image'][1]}, {part} on {model['cpu']}: {cells(row['seconds'], row, ' s')}")
            for name, found in row["breakdown"].items():
                parts = ", ".join(f"{k} {v}" for k, v in found["seconds"].items())
                lines.append(f"  {name} (profiled run {found['profiled_total_s']} s): {parts}")
            for name, kernels in row["linear_kernels"].items():
                lines.append(f"  {name} Linears: " + "; ".join(f"{k} (x{c})" for k, c in kernels.items()))
    return "\n".join(lines)
