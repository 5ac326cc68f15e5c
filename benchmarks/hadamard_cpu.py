"""CPU Hadamard transform of VGGT-1B-sized activations: dense matmul vs Kronecker factors (ours, default)
vs a radix-2 butterfly vs the optional ``fht-cpu`` package, measured side by side in one run.

Usage: python benchmarks/hadamard_cpu.py [--tokens 13740] [--sizes 1024,4096] [--repeats 5] [--out FILE]
(13740 tokens = one global-attention sequence of 10 frames at 518x518.) Prints one JSON object: median
milliseconds, speed-up over dense, and max relative error against the dense product.
"""

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from vggt_quant_core.kernels import hadamard_matrix
from vggt_quant_core.kernels.hadamard import BACKENDS
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)


def butterfly(x: torch.Tensor) -> torch.Tensor:
    """Textbook radix-2 fast Walsh-Hadamard transform in eager torch (log2(n) full passes)."""
    n = x.shape[-1]
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)
        y = torch.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], dim=2)
        h *= 2
    return y.reshape(x.shape) * n ** -0.5


def median_ms(function, x, repeats):
    function(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=13740)
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = {"benchmark": "hadamard_cpu", "tokens": args.tokens,
              "environment": {"python": platform.python_version(), "torch": torch.__version__,
                              "machine": platform.machine(), "threads": torch.get_num_threads()},
              "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        x = torch.randn(args.tokens, n)
        dense_matrix = hadamard_matrix(n, dtype=torch.float32)
        reference = (x.double() @ hadamard_matrix(n)).float()
        methods = {"dense_matmul": lambda v: v @ dense_matrix, "butterfly": butterfly,
                   "kronecker": BACKENDS["kronecker"][1]}
        if BACKENDS["fht-cpu"][0](x):
            methods["fht_cpu"] = BACKENDS["fht-cpu"][1]
        rows = {}
        for name, function in methods.items():
            error = ((function(x) - reference).abs().max() / reference.abs().max()).item()
            rows[name] = {"median_ms": round(median_ms(function, x, args.repeats), 2), "max_rel_error": error}
        for row in rows.values():
            row["speedup_vs_dense"] = round(rows["dense_matmul"]["median_ms"] / row["median_ms"], 2)
        report["sizes"][str(n)] = rows
    emit(report, args.out)


if __name__ == "__main__":
    main()
