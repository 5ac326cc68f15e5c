"""``vggt-quant bench``: benchmarks that print JSON (ratios measured side by side in one run)."""

import argparse
import json
import logging
from pathlib import Path

import torch

from ..eval.fidelity_bench import format_table, run_fidelity
from ..fileio import write_text_atomic
from ..inference import resolve_device
from ..presets import PRESETS, load_model
from ..quant import RECIPES, parse_bits
from . import bench_accuracy

log = logging.getLogger("vggt_quant")


def load_model_spec(spec: str, device: torch.device):
    """A preset name or a checkpoint path -> (model, width, description)."""
    if spec in PRESETS:
        return load_model(preset=spec, device=device)
    return load_model(checkpoint=Path(spec), device=device)


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="benchmarks (fidelity and accuracy of quantized models)")
    kinds = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    fidelity = kinds.add_parser("fidelity", help="output error of every method x bits vs full precision",
                                description="Quantize the model with each method and bit-width and report the "
                                            "relative L2 error and SQNR of its outputs against the same model in "
                                            "full precision, plus activation statistics before/after the "
                                            "transforms.")
    fidelity.add_argument("--model", default="vggt-outlier", help="preset name or checkpoint path "
                                                                  "(default: vggt-outlier)")
    fidelity.add_argument("--methods", default="rtn,smoothquant,quarot,dsfq",
                          help=f"comma-separated, from {sorted(RECIPES)}")
    fidelity.add_argument("--bits", default="w8a8,w6a6,w4a8,w4a4", help="comma-separated wXaY")
    fidelity.add_argument("--frames", type=int, default=4, help="frames per window")
    fidelity.add_argument("--windows", type=int, default=2, help="evaluation windows (rendered scenes)")
    fidelity.add_argument("--calibration-windows", type=int, default=2,
                          help="windows for activation statistics (smoothing)")
    fidelity.add_argument("--device", default="auto")
    fidelity.add_argument("--json", type=Path, help="write the report here")
    fidelity.set_defaults(run=run_fidelity_command)
    bench_accuracy.add_parser(kinds)


def run_fidelity_command(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(RECIPES)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {sorted(RECIPES)}")
    bit_pairs = [parse_bits(b) for b in args.bits.split(",") if b.strip()]
    if args.frames < 2 or args.windows < 1 or args.calibration_windows < 1:
        raise ValueError("--frames must be >= 2, --windows and --calibration-windows >= 1")
    device = resolve_device(args.device)
    model, width, description = load_model_spec(args.model, device)
    log.info("fidelity: %s, %d methods x %d bit-widths, %d windows of %d frames", description, len(methods),
             len(bit_pairs), args.windows, args.frames)
    report = run_fidelity(model, methods, bit_pairs, args.frames, args.windows, args.calibration_windows, width)
    report["model"] = description
    text = json.dumps(report, indent=1)
    if args.json:
        write_text_atomic(args.json, text + "\n")
        log.info("wrote %s", args.json)
    print(format_table(report))
    return 0
