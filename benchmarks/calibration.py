"""Calibration benchmark on the ``vggt-outlier`` preset at W4A4 (fake quantization).

Pool: rendered training-seed sequences, plus two corrupted sequences (sensor noise, over-exposure)
standing in for the bad stretches of a robot recording. Evaluation: held-out rendered windows; SQNR (dB)
of each output against the full-precision model, and the mean relative L2 error over the outputs.

Experiments, each measured side by side in this one run:
  A. initialisation-only DSFQ (statistics from the selected samples) vs calibrated DSFQ (learned);
  B. calibrated DSFQ with the MSE loss vs the Fisher-weighted loss (dsfq-fisher), on dense outputs;
  C. NFDS vs random selection over 5 seeds (mean and spread of the output error);
  D. calibration time and peak memory at two model sizes, and a projection for VGGT-1B.

Usage: python benchmarks/calibration.py [--epochs 5] [--samples 8] [--seeds 5] [--out FILE]
"""

import argparse
import copy
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vggt_quant_core.calib import CalibrationSettings, InMemorySequence, SamplePool, calibrate
from vggt_quant_core.data import HELD_OUT_SEED_BASE, generate_sequence
from vggt_quant_core.eval.fidelity import FIDELITY_KEYS, compare_outputs
from vggt_quant_core.eval.fidelity_bench import scene_windows
from vggt_quant_core.presets import build_preset, get_preset
from vggt_quant_core.quant import QuantConfig, quantize
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

WIDTH, HEIGHT, WINDOW = 224, 168, 4


def build_pool(sequences: int, frames: int) -> SamplePool:
    sources = []
    for seed in range(sequences):
        images = generate_sequence(seed, frames, WIDTH, HEIGHT).cameras[0].images
        sources.append(InMemorySequence(f"scene{seed}", frames, lambda i, images=images: images[i]))
    rng = np.random.default_rng(0)
    clean = generate_sequence(sequences, frames, WIDTH, HEIGHT).cameras[0].images
    noisy = np.clip(clean.astype(np.float32) + rng.normal(0, 80, clean.shape), 0, 255).astype(np.uint8)
    burnt = np.clip(clean.astype(np.float32) * 4.0, 0, 255).astype(np.uint8)
    for name, images in (("noisy", noisy), ("overexposed", burnt)):
        sources.append(InMemorySequence(name, frames, lambda i, images=images: images[i]))
    return SamplePool.from_sources(sources, window=WINDOW, stride=2, image_size=WIDTH)


def evaluate(model, evaluation, references):
    with torch.no_grad():
        per_window = [compare_outputs(model(w), ref) for w, ref in zip(evaluation, references)]
    sqnr = {k: statistics.mean(w[k]["sqnr_db"] for w in per_window) for k in FIDELITY_KEYS}
    rel = statistics.mean(w[k]["rel_l2"] for w in per_window for k in FIDELITY_KEYS)
    return {"sqnr_db": {k: round(v, 2) for k, v in sqnr.items()}, "mean_rel_l2": round(rel, 5)}


def run_calibration(base, pool, settings, evaluation, references):
    model = copy.deepcopy(base)
    started = time.perf_counter()
    report = calibrate(model, pool, settings, log_fn=lambda message: None)
    result = evaluate(model, evaluation, references)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["samples"] = report["samples"]
    result["corrupted_samples"] = sum(s.startswith(("noisy", "overexposed")) for s in report["samples"])
    if "engine" in report:
        blocks = report["engine"]["blocks"]
        result["block_loss_ratio"] = round(sum(b["after"] for b in blocks) / sum(b["before"] for b in blocks), 4)
    return result


_COST = """
import json, resource, sys, time, torch
from vggt_quant_core.calib import CalibrationSettings, InMemorySequence, SamplePool, calibrate
from vggt_quant_core.calib.pool import Sample
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.presets import build_preset, get_preset
preset, samples, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = build_preset(get_preset(preset))
images = [generate_sequence(s, 4, 224, 168).cameras[0].images for s in range(samples)]
pool = SamplePool([InMemorySequence(f"s{i}", 4, lambda j, im=im: im[j]) for i, im in enumerate(images)],
                  [Sample(f"s{i}", 0, 4) for i in range(samples)], image_size=224)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
report = calibrate(model, pool, CalibrationSettings(method="dsfq", w_bits=4, a_bits=4, samples=samples,
                   epochs=epochs, strategy="random"), log_fn=lambda m: None)
tokens = 4 * (5 + 16 * 12)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_bytes": report["engine"]["peak_memory_bytes"],
                  "rss_before_bytes": base, "params": sum(p.numel() for p in model.parameters()),
                  "embed_dim": model.config.embed_dim, "blocks": 2 * model.config.aggregator.depth,
                  "tokens_per_window": tokens}))
"""


def cost(preset: str, samples: int, epochs: int) -> dict:
    result = subprocess.run([sys.executable, "-c", _COST, preset, str(samples), str(epochs)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def block_flops(dim: int, frames: int, tokens_per_frame: int) -> float:
    """Forward FLOPs of one aggregator block on one window, averaged over frame and global blocks:
    Linears 24 C^2 per token, attention 4 N^2 C (N = P for frame blocks, S * P for global blocks)."""
    tokens = frames * tokens_per_frame
    linears = 24 * dim ** 2 * tokens
    frame_attention = 4 * tokens_per_frame ** 2 * dim * frames
    global_attention = 4 * tokens ** 2 * dim
    return linears + (frame_attention + global_attention) / 2


def calibration_flops(blocks: int, samples: int, epochs: int, dim: int, frames: int, tokens_per_frame: int) -> float:
    """Training FLOPs of a calibration: forward + backward (3x forward) per block, window and epoch."""
    return 3 * block_flops(dim, frames, tokens_per_frame) * samples * epochs * blocks


def vggt_1b_projection(measured: dict, measured_epochs: int, measured_samples: int) -> dict:
    """VGGT-1B calibration (40 windows of 10 frames at 518x392, 15 epochs, 48 blocks) in FLOPs, next to
    the measured run's FLOPs and throughput. Memory: block inputs and targets cached in fp32."""
    frames = measured["tokens_per_window"] // (5 + 16 * 12)
    measured_flops = calibration_flops(measured["blocks"], measured_samples, measured_epochs, measured["embed_dim"],
                                       frames, measured["tokens_per_window"] // frames)
    flops = calibration_flops(48, 40, 15, 1024, 10, 1041)
    return {"vggt_1b_calibration_pflop": round(flops / 1e15, 1),
            "measured_calibration_gflop": round(measured_flops / 1e9, 1),
            "measured_effective_gflop_per_s": round(measured_flops / measured["seconds"] / 1e9, 2),
            "cached_block_io_bytes": 2 * 40 * 10 * 1041 * 1024 * 4, "weights_fp32_bytes": 5_026_150_064}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    base = build_preset(get_preset("vggt-outlier"))
    pool = build_pool(args.sequences, 10)
    evaluation = scene_windows(range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + 3), WINDOW, WIDTH)
    with torch.no_grad():
        references = [base(w) for w in evaluation]
    settings = CalibrationSettings(method="dsfq", w_bits=4, a_bits=4, samples=args.samples, epochs=args.epochs,
                                   clusters=4, fisher_samples=4)
    report = {"benchmark": "calibration", "model": "vggt-outlier", "bits": "w4a4", "pool": len(pool),
              "window_frames": WINDOW, "image_size_hw": [HEIGHT, WIDTH], "epochs": args.epochs,
              "samples": args.samples, "evaluation_windows": len(evaluation),
              "environment": {"python": platform.python_version(), "torch": torch.__version__,
                              "machine": platform.machine(), "threads": torch.get_num_threads()}}

    # A. initialisation only vs learned (same NFDS samples)
    learned = run_calibration(base, pool, settings, evaluation, references)
    init_only = copy.deepcopy(base)
    chosen = [pool.ids.index(s) for s in learned["samples"]]
    quantize(init_only, QuantConfig(method="dsfq", w_bits=4, a_bits=4),
             calibration_images=[pool.load(i) for i in chosen], log_fn=lambda m: None)
    rtn = quantize(copy.deepcopy(base), QuantConfig(method="rtn", w_bits=4, a_bits=4), log_fn=lambda m: None)
    report["A_init_vs_learned"] = {"rtn": evaluate(rtn, evaluation, references),
                                   "dsfq_init": evaluate(init_only, evaluation, references), "dsfq_learned": learned}
    # B. MSE vs Fisher-weighted loss, and FGQ
    report["B_loss"] = {"dsfq_mse": learned,
                        "dsfq_fisher": run_calibration(base, pool, CalibrationSettings(
                            **{**settings.__dict__, "method": "dsfq-fisher"}), evaluation, references),
                        "fgq": run_calibration(base, pool, CalibrationSettings(
                            **{**settings.__dict__, "method": "fgq"}), evaluation, references)}
    # C. NFDS vs random over seeds
    selection = {}
    for strategy in ("nfds", "random"):
        runs = [run_calibration(base, pool, CalibrationSettings(**{**settings.__dict__, "strategy": strategy,
                                                                   "seed": seed}), evaluation, references)
                for seed in range(args.seeds)]
        errors = [r["mean_rel_l2"] for r in runs]
        selection[strategy] = {"mean_rel_l2": round(statistics.mean(errors), 5),
                               "stdev_rel_l2": round(statistics.stdev(errors), 5) if len(errors) > 1 else 0.0,
                               "corrupted_samples_picked": [r["corrupted_samples"] for r in runs],
                               "runs": [{"seed": i, "mean_rel_l2": r["mean_rel_l2"],
                                         "pose_enc_sqnr_db": r["sqnr_db"]["pose_enc"]} for i, r in enumerate(runs)]}
    report["C_selection"] = selection
    # D. cost at two sizes (fresh processes, same samples and epochs) and a VGGT-1B projection
    costs = {preset: cost(preset, args.samples, args.epochs) for preset in ("vggt-tiny-random", "vggt-outlier")}
    report["D_cost"] = {**costs, "vggt_1b_projection": vggt_1b_projection(costs["vggt-outlier"],
                                                                          measured_epochs=args.epochs,
                                                                          measured_samples=args.samples)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
