"""Peak memory of a VGGT forward: keeping only the aggregator layers the heads read vs all of them.

The official implementation keeps all ``depth`` layer outputs [B, S, P, 2C]; ours keeps the ones the
enabled heads consume (4 DPT levels + the last layer for the camera head). Each variant runs in a
fresh process; peak anonymous RSS during the forward is measured above the level after model
construction (random weights: memory does not depend on their values).

Usage: python benchmarks/aggregator_memory.py [--preset vggt-1b] [--frames 4] [--height 392] [--width 518]
       [--out benchmarks/results/aggregator_memory.json]
Prints one JSON object with both peaks and their ratio.
"""

import argparse
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

_CHILD = textwrap.dedent("""
    import json, sys, threading, time
    import torch
    from vggt_quant_core.model import VGGT
    from vggt_quant_core.presets import get_preset

    def rss_anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    preset, frames, height, width, keep_all = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5] == "all"
    torch.manual_seed(0)
    model = VGGT(get_preset(preset).config.without_heads("track")).eval()
    if keep_all:  # behave like the official code: keep every layer's output
        model.layers_read_by_heads = lambda with_tracks: set(range(model.aggregator.depth))
    images = torch.rand(frames, 3, height, width)
    baseline, peak, done = rss_anon(), [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.002)

    thread = threading.Thread(target=poll)
    thread.start()
    start = time.perf_counter()
    with torch.inference_mode():
        model(images)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    print(json.dumps({"peak_bytes": peak[0] - baseline, "seconds": round(seconds, 2)}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from vggt_quant_core.presets import get_preset
    config = get_preset(args.preset).config
    runs = {}
    for variant in ("all", "lean"):
        result = subprocess.run([sys.executable, "-c", _CHILD, args.preset, str(args.frames), str(args.height),
                                 str(args.width), variant], capture_output=True, text=True, check=True)
        runs[variant] = json.loads(result.stdout)
    tokens = 1 + config.aggregator.num_register_tokens + (args.height // 14) * (args.width // 14)
    layer_bytes = args.frames * tokens * 2 * config.embed_dim * 4
    depth = config.aggregator.depth
    kept = len({depth - 1} | {i % depth for i in config.depth_head.intermediate_layer_idx})
    report = {
        "benchmark": "aggregator_memory",
        "environment": {"python": platform.python_version(), "torch": __import__("torch").__version__,
                        "machine": platform.machine(), "processor": platform.processor() or "unknown",
                        "cpus": __import__("os").cpu_count()},
        "preset": args.preset, "frames": args.frames, "height": args.height, "width": args.width,
        "keep_all": runs["all"], "keep_heads_layers": runs["lean"],
        "peak_ratio_lean_over_all": round(runs["lean"]["peak_bytes"] / runs["all"]["peak_bytes"], 3),
        "saved_bytes": runs["all"]["peak_bytes"] - runs["lean"]["peak_bytes"],
        "analytic_saved_bytes": (config.aggregator.depth - kept) * layer_bytes,
        "layers_kept": kept, "layers_total": config.aggregator.depth,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
