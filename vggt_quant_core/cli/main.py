"""``vggt-quant``: reconstruct with (quantized) VGGT from the command line."""

import argparse
import logging
import sys
from typing import List, Optional

from . import bench, calibrate, demo, infer, quantize, reconstruct, scenes, train
from . import eval as evaluate
from ..console import run_reporting_errors

log = logging.getLogger("vggt_quant")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vggt-quant", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (infer, reconstruct, demo, scenes, evaluate, quantize, calibrate, bench, train):
        module.add_parser(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    return run_reporting_errors(f"vggt-quant {args.command}", args.verbose, lambda: args.run(args))
