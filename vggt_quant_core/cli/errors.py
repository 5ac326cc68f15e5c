"""How every console script ends: bad input in one line (exit 2), Ctrl-C in one line (exit 130)."""

import sys
import traceback
from typing import Callable, Optional

from ..model import CheckpointError


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
