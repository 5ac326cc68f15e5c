"""Time per window with and without reusing the per-frame work of the frames overlapping windows share.

Consecutive windows of ``--window`` frames every ``--stride`` (the node's 8 every 4) slide over a sequence; each
window runs twice, side by side: recomputing everything (``run_vggt``) and with ``stream.FrameTokenCache``
holding the previous window's per-frame work (DINOv2 patch tokens, first frame block), so that only the new
frames' is computed. The first window (nothing to reuse yet) is a warm-up and not counted; each window also
checks that both give the same depth and poses bit for bit. Two models: the default ``vggt-tiny-synth`` at its
112x84 input on frames of a generated orbit, and VGGT-1B's architecture with random weights (the time does not
depend on the values) at 518x392 on random images.

Usage (an idle machine; VGGT-1B needs about 9 GB and minutes per window on 2 CPU cores):
    python benchmarks/frame_reuse.py [--windows 6] [--vggt1b-windows 3] [--precision fp32]
                                     [--json benchmarks/results/frame_reuse.json]
Prints one JSON object: per model, the window times of both variants, their medians and the saving.
"""

import argparse
import functools
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)
from vggt_quant_core.data import generate_sequence
from vggt_quant_core.inference import run_vggt
from vggt_quant_core.kernels.cpu_isa import cpu_description
from vggt_quant_core.model import VGGT
from vggt_quant_core.presets import get_preset, load_model
from vggt_quant_core.stream.frame_cache import FrameTokenCache


def time_windows(model: VGGT, images: torch.Tensor, window: int, stride: int, windows: int, precision: str) -> dict:
    """``windows`` + 1 windows over ``images``; seconds per counted window of both variants."""
    cache = FrameTokenCache()
    plain, reused, identical = [], [], True
    for number in range(windows + 1):
        frames = list(range(number * stride, number * stride + window))
        batch = images[frames]
        start = time.perf_counter()
        expected = run_vggt(model, batch, precision)
        middle = time.perf_counter()
        got = run_vggt(model, batch, precision, frame_tokens=functools.partial(cache.frame_tokens, keys=frames))
        end = time.perf_counter()
        identical &= all(torch.equal(expected[k], got[k]) for k in ("pose_enc", "depth", "depth_conf"))
        if number:   # the first window fills the cache: a warm-up for both
            plain.append(middle - start)
            reused.append(end - middle)
    median_plain, median_reused = statistics.median(plain), statistics.median(reused)
    return {"window": window, "stride": stride, "image_hw": list(images.shape[-2:]), "precision": precision,
            "windows_timed": windows, "recompute_s": [round(t, 4) for t in plain],
            "reuse_s": [round(t, 4) for t in reused], "recompute_median_s": round(median_plain, 4),
            "reuse_median_s": round(median_reused, 4), "saving": round(1 - median_reused / median_plain, 4),
            "patch_embeddings": cache.computed_patches, "first_blocks": cache.computed_blocks,
            "outputs_identical": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--windows", type=int, default=6, help="timed windows of the default model")
    parser.add_argument("--vggt1b-windows", type=int, default=3, help="timed windows of VGGT-1B (0: skip it)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    frames = args.window + args.stride * max(args.windows, args.vggt1b_windows)
    report = {"benchmark": "frame_reuse",
              "environment": {"python": platform.python_version(), "torch": torch.__version__,
                              "machine": platform.machine(), "cpus": os.cpu_count(),
                              "threads": torch.get_num_threads(), "cpu": cpu_description()}}

    model, size, _ = load_model(None, "vggt-tiny-synth")
    orbit = generate_sequence(1000007, frames, size, 84, trajectory="orbit").cameras[0].images
    images = torch.from_numpy(orbit).permute(0, 3, 1, 2).float() / 255
    report["vggt-tiny-synth"] = time_windows(model, images, args.window, args.stride, args.windows, args.precision)
    if args.vggt1b_windows:
        torch.manual_seed(0)
        model = VGGT(get_preset("vggt-1b").config.without_heads("track")).eval()
        images = torch.rand(frames, 3, 392, 518)
        report["vggt-1b-random"] = time_windows(model, images, args.window, args.stride, args.vggt1b_windows,
                                                args.precision)
    emit(report, args.json)


if __name__ == "__main__":
    main()
