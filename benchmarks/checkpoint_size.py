"""Sizes of quantized VGGT-1B checkpoints, computed on the meta device (no weights needed).

Usage: python benchmarks/checkpoint_size.py [--out FILE]. Prints JSON: for W8 and W4 weights, with the
default 192 aggregator Linears and with DINOv2 + camera trunk added, the bytes of the quantized layers as
stored (codes, scales, biases, sign vectors) vs fp16/fp32, and of a self-contained file (everything else
float32) vs the whole model in fp16/fp32.
"""

import argparse
from pathlib import Path

import torch

from vggt_quant_core.model import VGGT
from vggt_quant_core.quant import QuantConfig, quantize, size_report
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for extras in (False, True):
        for bits in (8, 4):
            config = QuantConfig(method="quarot", w_bits=bits, a_bits=8, include_patch_embed=extras,
                                 include_camera_trunk=extras)
            with torch.device("meta"):
                model = quantize(VGGT(), config, log_fn=lambda message: None)
            report = size_report(model)
            report["self_contained_file_bytes"] = report["quantized_layers_bytes"] + report["unquantized_fp32_bytes"]
            rows.append({"weights": f"w{bits}", "layers": "aggregator+dino+camera_trunk" if extras else "aggregator",
                         **report})
    emit({"benchmark": "checkpoint_size", "model": "VGGT-1B", "rows": rows}, args.out)


if __name__ == "__main__":
    main()
