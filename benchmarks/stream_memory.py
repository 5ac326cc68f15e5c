"""Peak memory of ``vggt-quant reconstruct`` against the length of the sequence: does it stay flat?

A generated orbit (one seed, 112x84: the default model's input size) of the longest length is written once as
PNG files. Each length (default 50, 200 and 1000 frames: the first N files) is reconstructed by ``vggt-quant
reconstruct --images`` in a fresh process with ``config/reconstruct.yaml`` (windows of 8 keyframes every 4,
the default model ``vggt-tiny-synth``, frame reuse on, every keyframe pose kept for trajectory.txt); that
process reports its peak RSS (``VmHWM`` of /proc/self/status: model, runtime and everything the stream holds;
not ``getrusage``, whose high-water mark survives the exec and would show the parent's) and what it made.
Memory does not depend on the machine's load, so this may run beside other jobs.

It also states VGGT-1B's peak per window: the model (1,256,537,516 float32 parameters) plus one window's
forward, extrapolated linearly in frames from the forward peak ``benchmarks/aggregator_memory.py`` measured
(``results/aggregator_memory.json``; activations, kept layer outputs and head maps all grow with S x tokens),
plus the kept per-frame tokens of reuse (patch tokens and first frame block, float32). An estimate, not a
measurement: ``python benchmarks/aggregator_memory.py --frames 8`` measures it.

Usage: python benchmarks/stream_memory.py [--lengths 50,200,1000] [--threads 1]
       [--json benchmarks/results/stream_memory.json]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
VGGT_1B_PARAMETERS = 1_256_537_516
VGGT_1B_DIM, VGGT_1B_PATCH, VGGT_1B_SPECIAL = 1024, 14, 5


def child(images: Path, out: Path) -> None:
    """In a fresh process: the CLI on ``images``; print what it made and this process's peak RSS."""
    from vggt_quant_core.cli.main import main

    code = main(["-q", "reconstruct", "--images", str(images), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text()) if code == 0 else {}
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"exit_code": code, "peak_rss_bytes": peak,
                      **{key: summary.get(key) for key in ("frames_read", "keyframes", "processed", "failed",
                                                           "map_points", "keyframes_in_trajectory", "seconds")}}))


def write_frames(folder: Path, frames: int, seed: int) -> None:
    from PIL import Image

    from vggt_quant_core.data import generate_sequence

    sequence = generate_sequence(seed, frames, 112, 84, trajectory="orbit")
    for index, rgb in enumerate(sequence.cameras[0].images):
        Image.fromarray(rgb).save(folder / f"frame_{index:05d}.png")


def vggt_1b_per_window(window: int, height: int, width: int) -> dict:
    measured = json.loads((REPO / "benchmarks" / "results" / "aggregator_memory.json").read_text())
    per_frame = measured["keep_heads_layers"]["peak_bytes"] / measured["frames"]
    patches = (height // VGGT_1B_PATCH) * (width // VGGT_1B_PATCH)
    reuse = window * (2 * patches + VGGT_1B_SPECIAL) * VGGT_1B_DIM * 4
    weights = VGGT_1B_PARAMETERS * 4
    return {"frames": window, "image_hw": [height, width], "weights_bytes": weights,
            "forward_bytes_estimate": round(per_frame * window), "reuse_cache_bytes": reuse,
            "peak_bytes_estimate": round(weights + per_frame * window + reuse),
            "basis": f"forward peak {measured['keep_heads_layers']['peak_bytes']} B measured at "
                     f"{measured['frames']} frames {measured['height']}x{measured['width']} "
                     "(results/aggregator_memory.json), scaled linearly in frames"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="50,200,1000", help="frames per run, comma-separated")
    parser.add_argument("--seed", type=int, default=1000007)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (memory does not depend "
                        "on them; 1 leaves the other core to other jobs)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch

    lengths = sorted(int(n) for n in args.lengths.split(","))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "VGGTQ_COMPILE": "0"}
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        frames = Path(scratch) / "frames"
        frames.mkdir()
        write_frames(frames, lengths[-1], args.seed)
        names = sorted(p.name for p in frames.iterdir())
        for length in lengths:
            subset = Path(scratch) / f"first_{length}"
            subset.mkdir()
            for name in names[:length]:
                (subset / name).symlink_to(frames / name)
            command = [sys.executable, __file__, "--child", str(subset), str(Path(scratch) / f"out_{length}")]
            result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=True)
            runs.append({"frames": length, **json.loads(result.stdout.strip().splitlines()[-1])})
    peaks = [run["peak_rss_bytes"] for run in runs]
    emit({"benchmark": "stream_memory",
          "environment": {"python": platform.python_version(), "torch": torch.__version__,
                          "machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads},
          "model": "vggt-tiny-synth", "image_wh": [112, 84], "seed": args.seed,
          "parameters": "config/reconstruct.yaml (windows of 8 keyframes every 4)", "runs": runs,
          "peak_growth_bytes": peaks[-1] - peaks[0], "peak_ratio_longest_over_shortest": round(peaks[-1] / peaks[0], 4),
          "vggt_1b_per_window": vggt_1b_per_window(8, 392, 518)}, args.json)


if __name__ == "__main__":
    main()
