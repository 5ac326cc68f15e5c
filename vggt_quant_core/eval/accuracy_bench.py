"""Accuracy benchmark in the layout of the quantization papers' Tables 1 and 2: the full-precision model and
every method x bit-width, scored against ground truth on held-out scenes (pose AUC, depth, points).

* Held-out scenes: seeds from ``data.HELD_OUT_SEED_BASE``, one sequence per seed and frame count, rendered
  once at the model's input size and scored by every row (``evaluate.evaluate_sequences``).
* Calibration-free methods (``quant.RECIPES``: rtn, smoothquant, quarot, dsfq, ...) take their activation
  statistics from a few training-seed windows, as ``bench fidelity`` does.
* Calibrated methods (``calib-<method>`` for ``calib.METHODS``: dsfq, fgq, dsfq-fisher) learn on a pool of
  windows of training-seed sequences (sample selection as the method's default: NFDS for DSFQ), one
  calibration per method and bit-width.
* Activation statistics of the quantized layers' inputs, split by token kind (camera, register, patch), to
  see whether the special tokens carry massive channels as the QuantVGGT paper reports for VGGT-1B.
"""

import copy
import logging
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..calib import METHODS as CALIBRATION_METHODS
from ..calib import CalibrationSettings, InMemorySequence, SamplePool, calibrate
from ..calib.engine import aggregator_block_sequence
from ..data import HELD_OUT_SEED_BASE, SceneSequence, generate_sequence
from ..model import VGGT
from ..quant import RECIPES, QuantConfig, quantization_disabled, quantize, quantized_layers
from ..quant.observers import observe_inputs
from .evaluate import BASELINE, HEADLINE_METRICS, evaluate_sequences
from .fidelity_bench import LAYER_KINDS, scene_windows

log = logging.getLogger(__name__)

CALIBRATED_PREFIX = "calib-"
DEFAULT_METHODS = ("rtn", "smoothquant", "quarot", "dsfq", "calib-dsfq", "calib-fgq", "calib-dsfq-fisher")
FULL_PRECISION = "full precision"
# A channel is "massive" in a token kind when its max |x| is at least this many times the median channel
# max of the patch tokens (the typical scale of that layer's input) and this many times the patch tokens'
# own max in the same channel (so it belongs to that token kind, not to the channel).
MASSIVE_FACTOR = 4.0
TOKEN_KINDS = ("camera", "register", "patch")


@dataclass(frozen=True)
class AccuracyBenchSettings:
    scenes: int = 10                       # held-out sequences per frame count
    frame_counts: Tuple[int, ...] = (10, 20)
    statistics_windows: int = 4            # training-seed windows for smoothing statistics (calibration-free)
    pool_scenes: int = 16                  # training-seed sequences in the calibration pool
    pool_frames: int = 20                  # frames per pool sequence
    window: int = 10                       # frames per calibration window
    stride: int = 5                        # frames between window starts
    samples: int = 16                      # calibration windows selected from the pool
    epochs: int = 5                        # block reconstruction epochs
    fisher_samples: int = 4                # windows for the Fisher estimate (fgq, dsfq-fisher)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "frame_counts", tuple(self.frame_counts))
        if self.scenes < 1 or min(self.frame_counts, default=0) < 2:
            raise ValueError("need at least 1 scene and frame counts >= 2")
        if self.window > self.pool_frames or self.samples < 1 or self.statistics_windows < 1:
            raise ValueError("calibration windows must fit in the pool sequences; samples and statistics "
                             "windows must be >= 1")


def check_methods(methods: Sequence[str]) -> None:
    """Raise ValueError for names that are neither a recipe nor ``calib-<calibration method>``."""
    known = set(RECIPES) | {CALIBRATED_PREFIX + m for m in CALIBRATION_METHODS}
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(known)}")


def held_out_sequences(scenes: int, frames: int, width: int, height: int) -> List[SceneSequence]:
    return [generate_sequence(seed, frames, width, height)
            for seed in range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + scenes)]


def calibration_pool(settings: AccuracyBenchSettings, width: int, height: int) -> SamplePool:
    """Windows of rendered training-seed sequences (seeds 0..pool_scenes-1)."""
    sources = []
    for seed in range(settings.pool_scenes):
        images = generate_sequence(seed, settings.pool_frames, width, height).cameras[0].images
        sources.append(InMemorySequence(f"scene{seed}", len(images), lambda i, images=images: images[i]))
    return SamplePool.from_sources(sources, settings.window, settings.stride, seed=settings.seed, image_size=width)


def token_selectors(tokens_per_frame: int, patch_start: int) -> Dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Functions picking camera (token 0), register (1..patch_start-1) and patch tokens from an aggregator
    block's input, laid out (B*S, P, C) in frame blocks and (B, S*P, C) in global blocks."""
    def select(start, stop):
        return lambda x: x.reshape(-1, tokens_per_frame, x.shape[-1])[:, start:stop]
    return {"camera": select(0, 1), "register": select(1, patch_start), "patch": select(patch_start, None)}


def token_activation_statistics(model: VGGT, windows: Sequence[torch.Tensor]) -> Dict:
    """Per-channel max |x| of each token kind in the inputs of the quantized layers (the aggregator blocks'
    Linears) and of the blocks themselves (the residual stream, where massive activations live; the Linears
    after a LayerNorm see them normalised), summarised per input kind and block kind (median and worst over
    blocks; see ``MASSIVE_FACTOR``)."""
    height, width = windows[0].shape[-2:]
    patch = model.config.patch_size
    patch_start = 1 + model.config.aggregator.num_register_tokens
    tokens_per_frame = patch_start + (height // patch) * (width // patch)
    wrapped = quantize(copy.deepcopy(model), QuantConfig(method="rtn"), freeze=False, log_fn=log.debug)
    observed = {**{f"{name}.residual": block for name, _, block in aggregator_block_sequence(wrapped)},
                **quantized_layers(wrapped)}
    device = next(model.parameters()).device
    with torch.no_grad(), quantization_disabled(wrapped), \
            observe_inputs(observed, {"raw": 0}, moments=False,
                           token_groups=token_selectors(tokens_per_frame, patch_start)) as stats:
        for window in windows:
            wrapped(window.to(device))
    per_layer = {}
    for name, layer_stats in stats.items():
        channel_max = {kind: layer_stats[f"raw/{kind}"].channel_absmax for kind in TOKEN_KINDS}
        typical = channel_max["patch"].median().clamp(min=1e-12)
        row = {f"{kind}_max": channel_max[kind].max().item() for kind in TOKEN_KINDS}
        row["patch_median_channel_max"] = typical.item()
        for kind in TOKEN_KINDS:
            row[f"{kind}_top_ratio"] = (channel_max[kind].max() / typical).item()
        for kind in ("camera", "register"):
            massive = (channel_max[kind] >= MASSIVE_FACTOR * typical) & \
                      (channel_max[kind] >= MASSIVE_FACTOR * channel_max["patch"])
            row[f"{kind}_massive_channels"] = int(massive.sum())
        per_layer[name] = row
    summary = {}
    for block in ("frame", "global"):
        for kind in ("residual", *LAYER_KINDS):
            rows = [r for n, r in per_layer.items() if f".{block}_blocks." in n and n.endswith(kind)]
            summary[f"{block}/{kind}"] = {
                metric: {"median": torch.tensor([r[metric] for r in rows]).median().item(),
                         "worst": max(r[metric] for r in rows)} for metric in rows[0]}
    return {"massive_factor": MASSIVE_FACTOR, "windows": len(windows), "summary": summary, "per_layer": per_layer}


def _headline(report: dict, key: str = "model") -> Dict[str, float]:
    return {name: report[key][name] for name in HEADLINE_METRICS}


def _score(model: VGGT, sequences: Dict[int, List[SceneSequence]]) -> Dict[str, Dict[str, float]]:
    return {str(frames): _headline(evaluate_sequences(model, seqs, with_baseline=False))
            for frames, seqs in sequences.items()}


def quantized_copy(model: VGGT, method: str, w_bits: int, a_bits: int, statistics: Sequence[torch.Tensor],
                   pool: SamplePool, settings: AccuracyBenchSettings) -> Tuple[VGGT, dict]:
    """``model`` quantized with a recipe or a calibrated method; returns it and what was done."""
    quantized = copy.deepcopy(model)
    if not method.startswith(CALIBRATED_PREFIX):
        quantize(quantized, QuantConfig(method=method, w_bits=w_bits, a_bits=a_bits, seed=settings.seed),
                 statistics, log_fn=log.debug)
        return quantized, {"statistics_windows": len(statistics)}
    calibration = CalibrationSettings(method=method[len(CALIBRATED_PREFIX):], w_bits=w_bits, a_bits=a_bits,
                                      samples=settings.samples, epochs=settings.epochs,
                                      fisher_samples=settings.fisher_samples, seed=settings.seed)
    report = calibrate(quantized, pool, calibration, log_fn=log.debug)
    blocks = report.get("engine", {}).get("blocks", [])
    return quantized, {"strategy": calibration.selection, "samples": report["samples"], "pool_size": len(pool),
                       "epochs": settings.epochs, "calibration_seconds": report["seconds"],
                       "block_loss_before": sum(b["before"] for b in blocks),
                       "block_loss_after": sum(b["after"] for b in blocks)}


def run_accuracy(model: VGGT, methods: Sequence[str], bit_pairs: Sequence[Tuple[int, int]],
                 settings: AccuracyBenchSettings, width: int, height: int) -> dict:
    """Score the full-precision model, the baseline and every method x bits on held-out scenes."""
    check_methods(methods)
    started = time.perf_counter()
    sequences = {frames: held_out_sequences(settings.scenes, frames, width, height)
                 for frames in settings.frame_counts}
    statistics = scene_windows(range(settings.statistics_windows), settings.window, width, model.config.patch_size)
    needs_pool = any(m.startswith(CALIBRATED_PREFIX) for m in methods)
    pool = calibration_pool(settings, width, height) if needs_pool else None
    full = {frames: evaluate_sequences(model, seqs) for frames, seqs in sequences.items()}
    rows = [{"method": FULL_PRECISION, "bits": "w32a32", "frames": {str(f): _headline(r) for f, r in full.items()},
             "seconds": round(time.perf_counter() - started, 1)}]
    baseline = {str(f): _headline(r, BASELINE) for f, r in full.items()}
    log.info("accuracy: full precision %s", rows[0]["frames"])
    for method in methods:
        for w_bits, a_bits in bit_pairs:
            row_started = time.perf_counter()
            quantized, details = quantized_copy(model, method, w_bits, a_bits, statistics, pool, settings)
            rows.append({"method": method, "bits": f"w{w_bits}a{a_bits}", "frames": _score(quantized, sequences),
                         **details, "seconds": round(time.perf_counter() - row_started, 1)})
            del quantized
            log.info("accuracy: %-18s w%da%d %s (%.0f s)", method, w_bits, a_bits,
                     {f: round(m["auc@30"], 3) for f, m in rows[-1]["frames"].items()}, rows[-1]["seconds"])
    activations = token_activation_statistics(model, statistics)
    return {
        "benchmark": "accuracy",
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "device": str(next(model.parameters()).device),
                        "threads": torch.get_num_threads()},
        "settings": asdict(settings), "image_size_wh": [width, height],
        "held_out_seeds": [HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + settings.scenes - 1],
        "metrics": list(HEADLINE_METRICS), "baseline": baseline, "rows": rows,
        "activation_stats": activations, "seconds": round(time.perf_counter() - started, 1),
    }


def _cells(values: Dict[str, float], names: Sequence[str]) -> str:
    return " | ".join(f"{values[n]:.3f}" for n in names)


def format_tables(report: dict) -> str:
    """Markdown: pose AUC per frame count (Table 1 layout), depth and points (Table 2 layout), token stats."""
    frame_counts = list(report["baseline"])
    pose, dense = HEADLINE_METRICS[:4], HEADLINE_METRICS[4:]
    rows = [{"method": "baseline (identity poses, constant depth)", "bits": "-", "frames": report["baseline"]},
            *report["rows"]]
    lines = ["Pose AUC@30 / @15 / @5 / @3 on " + " and ".join(f"{f} frames" for f in frame_counts) + ":", "",
             "| bits | method | " + " | ".join(f"{f}f {m.upper()}" for f in frame_counts for m in pose) + " |",
             "|---|---|" + "---|" * len(pose) * len(frame_counts)]
    lines += [f"| {r['bits']} | {r['method']} | " + " | ".join(_cells(r["frames"][f], pose) for f in frame_counts)
              + " |" for r in rows]
    lines += ["", "Depth AbsRel, delta<1.25 and points Accuracy, Completeness (m, mean), Normal Consistency:", "",
              "| bits | method | " + " | ".join(f"{f}f {m}" for f in frame_counts for m in dense) + " |",
              "|---|---|" + "---|" * len(dense) * len(frame_counts)]
    lines += [f"| {r['bits']} | {r['method']} | " + " | ".join(_cells(r["frames"][f], dense) for f in frame_counts)
              + " |" for r in rows]
    summary = report["activation_stats"]["summary"]
    lines += ["", "Residual stream (block inputs) and quantized layers' inputs by token kind (median over blocks; "
              "max |x| per kind, top channel / median patch channel, massive channels of camera and register "
              "tokens):", "",
              "| input | camera max | register max | patch max | camera top ratio | register top ratio | "
              "patch top ratio | massive channels camera / register |", "|---|---|---|---|---|---|---|---|"]
    for name, stats in summary.items():
        values = {k: v["median"] for k, v in stats.items()}
        lines.append(f"| {name} | {values['camera_max']:.2f} | {values['register_max']:.2f} | "
                     f"{values['patch_max']:.2f} | {values['camera_top_ratio']:.1f} | "
                     f"{values['register_top_ratio']:.1f} | {values['patch_top_ratio']:.1f} | "
                     f"{values['camera_massive_channels']:.0f} / {values['register_massive_channels']:.0f} |")
    return "\n".join(lines)
