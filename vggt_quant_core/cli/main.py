"""``vggt-quant``: reconstruct with (quantized) VGGT from the command line."""

import argparse
import logging
import sys
import traceback
from typing import Callable, List, Optional

from ..model import CheckpointError
from . import bench, calibrate, demo, infer, quantize, scenes, train
from . import eval as evaluate

log = logging.getLogger("vggt_quant")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vggt-quant", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (infer, demo, scenes, evaluate, quantize, calibrate, bench, train):
        module.add_parser(commands)
    return parser


def run_reporting_errors(prog: str, verbose: bool, body: Callable[[], Optional[int]],
                         interrupted: str = "interrupted (files are written atomically: none is half-written)") -> int:
    """Run a command: bad input is reported in one line (exit 2), a traceback only with ``verbose``;
    Ctrl-C exits 130 with ``interrupted``."""
    try:
        return body() or 0
    except (CheckpointError, ValueError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    return run_reporting_errors(f"vggt-quant {args.command}", args.verbose, lambda: args.run(args))
