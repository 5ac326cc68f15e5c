"""``vggt-quant bench accuracy``: accuracy against ground truth of every method x bits (the papers' tables)."""

import argparse
import json
import logging
import sys
from pathlib import Path

from ..data.preprocess import default_height
from ..eval.accuracy_bench import DEFAULT_METHODS, AccuracyBenchSettings, check_methods, format_tables, run_accuracy
from ..fileio import write_text_atomic
from ..inference import resolve_device
from ..presets import TRAINED_DEFAULT, load_model_spec
from ..quant import parse_bits

log = logging.getLogger("vggt_quant")


def add_parser(kinds) -> None:
    """Register ``accuracy`` under ``vggt-quant bench``."""
    defaults = AccuracyBenchSettings()
    parser = kinds.add_parser("accuracy", help="pose/depth/point accuracy of every method x bits on held-out scenes",
                              description="Full precision, a trivial baseline and every quantization method x "
                                          "bit-width, scored against ground truth on held-out generated scenes (pose "
                                          "AUC@30/15/5/3, depth AbsRel/delta<1.25, points Acc/Comp/NC), plus the "
                                          "activation statistics of the quantized layers' inputs by token kind. "
                                          "Calibrated methods (calib-*) learn on training-seed scenes.")
    parser.add_argument("--model", default=TRAINED_DEFAULT, help="preset name or checkpoint path (default: "
                                                                 "%(default)s)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated quant recipes and calib-<method> (default: %(default)s)")
    parser.add_argument("--bits", default="w8a8,w6a6,w4a8,w4a4", help="comma-separated wXaY (default: %(default)s)")
    parser.add_argument("--frames", default=",".join(map(str, defaults.frame_counts)),
                        help="frames per held-out sequence, comma-separated (default: %(default)s)")
    parser.add_argument("--scenes", type=int, default=defaults.scenes, help="held-out sequences per frame count")
    parser.add_argument("--samples", type=int, default=defaults.samples, help="calibration windows (calib-*)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="calibration epochs per block (calib-*)")
    parser.add_argument("--pool-scenes", type=int, default=defaults.pool_scenes,
                        help="training-seed sequences in the calibration pool (calib-*)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods)
    bit_pairs = [parse_bits(b) for b in args.bits.split(",") if b.strip()]
    settings = AccuracyBenchSettings(scenes=args.scenes, frame_counts=[int(f) for f in args.frames.split(",")],
                                     samples=args.samples, epochs=args.epochs, pool_scenes=args.pool_scenes)
    device = resolve_device(args.device)
    model, width, description = load_model_spec(args.model, device)
    height = default_height(width, model.config.patch_size)
    log.info("accuracy: %s, %d methods x %d bit-widths, %d held-out scenes x %s frames at %dx%d", description,
             len(methods), len(bit_pairs), settings.scenes, args.frames, width, height)
    report = run_accuracy(model, methods, bit_pairs, settings, width, height)
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"}
    report.update({"model": description, "argv": sys.argv, "arguments": arguments})
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
        log.info("wrote %s", args.json)
    print(format_tables(report))
    return 0
