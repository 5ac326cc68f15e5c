"""Fidelity benchmark: every method x bit-width (x number format) against the same model in full precision.

Inputs are rendered scenes (``data.generate_sequence``): calibration windows use training seeds 0..K-1,
evaluation windows held-out seeds (from ``data.HELD_OUT_SEED_BASE``), so statistics never see them.
"""

import copy
import logging
import platform
import time
from typing import Dict, List, Sequence

import torch

from ..data import HELD_OUT_SEED_BASE, generate_sequence
from ..quant import QuantConfig, fuse_residual_epilogues, quantization_disabled, quantize, quantized_layers
from ..quant.observers import observe_inputs
from .fidelity import FIDELITY_KEYS, compare_outputs

log = logging.getLogger(__name__)
LAYER_KINDS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def scene_windows(seeds: Sequence[int], frames: int, width: int, patch_size: int = 14) -> List[torch.Tensor]:
    """Rendered windows [S, 3, H, W] in [0, 1] at the model's width (4:3, height a multiple of the patch)."""
    height = max(patch_size, round(width * 0.75 / patch_size) * patch_size)
    windows = []
    for seed in seeds:
        images = generate_sequence(seed, frames, width, height).cameras[0].images
        windows.append(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    return windows


def _mean_over_windows(per_window: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    return {key: {metric: sum(w[key][metric] for w in per_window) / len(per_window)
                  for metric in per_window[0][key]} for key in per_window[0]}


def activation_summary(stats: Dict[str, Dict[str, object]], point: str) -> Dict[str, Dict[str, float]]:
    """Per layer kind: median and worst (over layers) of max |x|, kurtosis and top-channel ratio."""
    summary = {}
    for kind in LAYER_KINDS:
        rows = [s[point].summary() for name, s in stats.items() if name.endswith(kind)]
        if not rows:
            continue
        summary[kind] = {}
        for metric in rows[0]:
            values = torch.tensor([r[metric] for r in rows], dtype=torch.float64)
            summary[kind][f"{metric}_median"] = values.median().item()
            summary[kind][f"{metric}_worst"] = values.max().item()
    return summary


def run_fidelity(model: torch.nn.Module, methods: Sequence[str], bit_pairs: Sequence[tuple], frames: int,
                 windows: int, calibration_windows: int, width: int, number_formats: Sequence[str] = ("int",),
                 autocast_dtype: torch.dtype = torch.float32, fused_residual: bool = False,
                 include_patch_embed: bool = False) -> dict:
    """Quantize copies of ``model`` with every method x bits x number format and compare outputs with the FP
    model. ``e4m3`` (FP8) exists at w8a8 only: other bit-widths run in the integer formats alone. Rows are
    labelled by bits, with the format appended when it is not ``int`` (``w8a8-e4m3``). The quantized models
    run under ``autocast_dtype`` autocast (their float parts, and the Linears' outputs, in that dtype); the
    FP model they are compared with always runs in float32. ``fused_residual``: with
    ``fuse_residual_epilogues`` (proj/fc2 epilogues fused with LayerScale + residual). ``include_patch_embed``:
    DINOv2's block Linears are quantized too."""
    evaluation = scene_windows(range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + windows), frames, width)
    calibration = scene_windows(range(calibration_windows), frames, width)
    device = next(model.parameters()).device
    with torch.no_grad():
        references = [model(w.to(device)) for w in evaluation]
    results, activation_stats = [], {}
    for method in methods:
        # Activation statistics before/after this method's transforms (float state, quantization off).
        wrapped = quantize(copy.deepcopy(model), QuantConfig(method=method), calibration, freeze=False,
                           log_fn=log.debug)
        layers = quantized_layers(wrapped)
        with torch.no_grad(), quantization_disabled(wrapped), \
                observe_inputs(layers, {"raw": 0, "transformed": None}) as stats:
            wrapped(evaluation[0].to(device))
        activation_stats.setdefault("raw", activation_summary(stats, "raw"))
        activation_stats[method] = activation_summary(stats, "transformed")
        del wrapped
        for w_bits, a_bits in bit_pairs:
            for number_format in number_formats:
                if number_format == "e4m3" and (w_bits, a_bits) != (8, 8):
                    continue
                config = QuantConfig(method=method, w_bits=w_bits, a_bits=a_bits, number_format=number_format,
                                     include_patch_embed=include_patch_embed)
                bits = config.label[len(method) + 1:]  # w8a8, or w8a8-e4m3
                start = time.perf_counter()
                quantized = quantize(copy.deepcopy(model), config, calibration, log_fn=log.debug)
                fuse_residual_epilogues(quantized, fused_residual)
                with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype,
                                                     enabled=autocast_dtype != torch.float32):
                    per_window = [compare_outputs(quantized(w.to(device)), ref)
                                  for w, ref in zip(evaluation, references)]
                results.append({"method": method, "bits": bits, "number_format": number_format,
                                "outputs": _mean_over_windows(per_window),
                                "seconds": round(time.perf_counter() - start, 2)})
                log.info("%-12s %-10s %s", method, bits,
                         "  ".join(f"{k} {v['sqnr_db']:.1f} dB" for k, v in results[-1]["outputs"].items()))
    return {
        "benchmark": "fidelity",
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "device": str(device), "threads": torch.get_num_threads()},
        "frames": frames, "windows": windows, "calibration_windows": calibration_windows,
        "quantized_autocast": str(autocast_dtype).replace("torch.", ""), "fused_residual": fused_residual,
        "dino_linears_quantized": include_patch_embed,
        "image_size_hw": list(evaluation[0].shape[-2:]), "outputs": list(FIDELITY_KEYS),
        "results": results, "activation_stats": activation_stats,
    }


def format_table(report: dict) -> str:
    """Markdown table: SQNR (dB) per output, one row per method x bits."""
    keys = report["outputs"]
    lines = ["| bits | method | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for row in sorted(report["results"], key=lambda r: (r["bits"], r["method"])):
        cells = " | ".join(f"{row['outputs'][k]['sqnr_db']:.1f}" for k in keys)
        lines.append(f"| {row['bits']} | {row['method']} | {cells} |")
    return "\n".join(lines)
