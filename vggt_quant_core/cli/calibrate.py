"""``vggt-quant calibrate``: calibrate a quantized model on image folders or rosbag recordings.

``bags_main`` is the same command with bags only, for the ROS ``calibrate`` console script
(``vggt_quant_ros.calibrate_bags``).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List

from ..calib import METHODS, STRATEGIES, CalibrationSettings, PoolSpec
from ..calib.pipeline import calibrate_from_spec
from ..presets import DEFAULT_PRESET
from ..quant import parse_bits
from ..console import run_reporting_errors


def add_arguments(parser: argparse.ArgumentParser, folders: bool = True) -> None:
    """The options of ``vggt-quant calibrate``; without ``folders`` the pool comes from ``--bag`` only."""
    if folders:
        sources = parser.add_mutually_exclusive_group(required=True)
        sources.add_argument("--pool", nargs="+", type=Path, metavar="DIR",
                             help="a folder of images (one sequence) or a folder of sequence folders; repeatable")
    else:
        sources = parser
    sources.add_argument("--bag", action="append", required=not folders, metavar="PATH",
                         help="rosbag2 directory, .mcap/.db3 file or ROS 1 .bag (repeatable)")
    parser.add_argument("--topic", action="append", metavar="TOPIC",
                        help="bag image topic (Image or CompressedImage; repeatable; default: every image topic)")
    parser.add_argument("--max-gap", type=float, default=1.0,
                        help="seconds without a frame that end a stretch of a bag: windows never span it "
                             "(default 1.0)")
    parser.add_argument("--model", default=DEFAULT_PRESET,
                        help="base model: preset name or checkpoint (default %(default)s)")
    parser.add_argument("--method", default="dsfq", choices=sorted(METHODS),
                        help="dsfq (QuantVGGT), fgq (Fisher-guided FlatQuant), dsfq-fisher, rtn (no learning)")
    parser.add_argument("--bits", default="w4a4", help="wXaY (default w4a4)")
    parser.add_argument("--window", type=int, default=10, help="frames per sample window (default 10)")
    parser.add_argument("--stride", type=int, default=5, help="frames between window starts (default 5)")
    parser.add_argument("--pool-size", type=int, default=400, help="candidate windows (random subset; default 400)")
    parser.add_argument("--samples", type=int, default=40, help="calibration windows to select (default 40)")
    parser.add_argument("--strategy", choices=STRATEGIES, help="sample selection (default: the method's)")
    parser.add_argument("--noise-fraction", type=float, default=0.2, help="NFDS: drop this noisiest fraction")
    parser.add_argument("--clusters", type=int, default=8, help="NFDS: KMeans clusters (default 8)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per block (default 15)")
    parser.add_argument("--chain", choices=["fp", "quant"], default="fp",
                        help="block inputs from the full-precision (default) or the quantized chain")
    parser.add_argument("--fisher", type=Path, help="reuse a Fisher file written by an earlier run")
    parser.add_argument("--fisher-samples", type=int, default=8, help="windows for the Fisher estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-dir", type=Path, help="resumable state (default: <out>.work)")
    parser.add_argument("--no-base", action="store_true", help="store only the quantized layers")
    parser.add_argument("--out", type=Path, required=True, help="quantized checkpoint to write (.safetensors)")


def add_parser(commands) -> None:
    parser = commands.add_parser("calibrate", help="calibrate a quantized model on image sequences or rosbags",
                                 description="Select calibration windows (NFDS), estimate the Fisher (FGQ), learn "
                                             "the quantization block by block, and write a quantized checkpoint "
                                             "plus a JSON report. Interrupted runs resume from --work-dir.")
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    w_bits, a_bits = parse_bits(args.bits)
    settings = CalibrationSettings(method=args.method, w_bits=w_bits, a_bits=a_bits, samples=args.samples,
                                   strategy=args.strategy, noise_fraction=args.noise_fraction,
                                   clusters=args.clusters, fisher_samples=args.fisher_samples, epochs=args.epochs,
                                   chain=args.chain, seed=args.seed)
    pool = PoolSpec(folders=tuple(getattr(args, "pool", None) or ()), bags=tuple(args.bag or ()),
                    topics=tuple(args.topic or ()), max_gap_s=args.max_gap, window=args.window, stride=args.stride,
                    size=args.pool_size, seed=args.seed)
    _, summary = calibrate_from_spec(args.model, pool, settings, args.out, args.device, args.work_dir, args.fisher,
                                     include_base=not args.no_base)
    print(summary)
    return 0


def bags_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The arguments of ``calibrate`` on bags as a program of its own (the ROS console script): its own prog name
    and description, and ``-v``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    add_arguments(parser, folders=False)
    return parser


def bags_main(argv: List[str], prog: str, description: str) -> int:
    """``calibrate`` on bags as a program of its own, with a Ctrl-C message that says how to resume."""
    args = bags_parser(prog, description).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr, force=True)
    work_dir = args.work_dir or args.out.with_name(args.out.name + ".work")
    return run_reporting_errors(prog, args.verbose, lambda: run(args),
                                f"interrupted; progress is kept in {work_dir}: run the same command again to "
                                "resume (no checkpoint was written)")
