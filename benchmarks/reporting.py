"""Shared by the benchmark scripts: print the report as JSON and, if asked, write it (atomically)."""

import json
from pathlib import Path
from typing import Optional

from vggt_quant_core.fileio import write_text_atomic


def emit(report: dict, out: Optional[Path] = None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if out is not None:
        write_text_atomic(out, text + "\n")
