"""How fast the procedural scene generator makes training data: scenes per minute on this machine.

A scene is one ``generate_sequence`` call: a random room and trajectory rendered to RGB + depth for
``--frames`` frames of one camera (what a training sample or a calibration sample is). Seeds are
drawn from the training range (below ``HELD_OUT_SEED_BASE``); trajectories and scene kinds vary with
the seed, so the mean covers all of them. The first scene of each size is a warm-up and not counted.

Usage: python benchmarks/scene_speed.py [--frames 10] [--scenes-small 20] [--scenes-large 5]
       [--out benchmarks/results/scene_speed.json]
Prints one JSON object: scenes/minute, seconds per scene (mean, min, max) and CPU seconds per scene
per image size, with the machine's load average before and after (other processes slow wall time).
"""

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from vggt_quant_core.data import generate_sequence
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

SIZES = {"112x112": (112, 112), "518x392": (518, 392)}


def measure(width: int, height: int, frames: int, scenes: int) -> dict:
    generate_sequence(0, frames, width, height)  # warm-up
    seconds, cpu_seconds = [], 0.0
    for seed in range(1, scenes + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        generate_sequence(seed, frames, width, height)
        seconds.append(time.perf_counter() - started)
        cpu_seconds += time.process_time() - cpu_started
    mean = sum(seconds) / len(seconds)
    return {"scenes": scenes, "frames_per_scene": frames, "scenes_per_minute": round(60 / mean, 2),
            "frames_per_second": round(frames / mean, 2), "seconds_per_scene": {
                "mean": round(mean, 3), "min": round(min(seconds), 3), "max": round(max(seconds), 3)},
            # CPU time of this process (all threads): unlike wall time, not inflated by other processes.
            "cpu_seconds_per_scene": round(cpu_seconds / scenes, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--scenes-small", type=int, default=20, help="scenes measured at 112x112")
    parser.add_argument("--scenes-large", type=int, default=5, help="scenes measured at 518x392")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    counts = {"112x112": args.scenes_small, "518x392": args.scenes_large}
    load_before = os.getloadavg()
    sizes = {name: measure(*size, args.frames, counts[name]) for name, size in SIZES.items()}
    result = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__,
                          # 1-minute load averages around the run: above the core count, others shared the CPU.
                          "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
              "sizes": sizes}
    emit(result, args.out)


if __name__ == "__main__":
    main()
