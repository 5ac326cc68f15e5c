"""Which oneDNN kernels a call runs: oneDNN's verbose log, switched on for one call and read back.

oneDNN prints one ``onednn_verbose,...,exec,cpu,<primitive>,<implementation>,...`` line per primitive it
executes (e.g. ``matmul brg_matmul:avx10_1_512_amx`` for an AMX GEMM, ``ref_int8:any`` for its slow
reference), with C ``printf`` on the process's stdout: so stdout's file descriptor is pointed at a
temporary file for the call. ATen kernels that do not go through oneDNN (fp32 ``F.linear`` uses MKL or
OpenBLAS, CPU ``_scaled_mm`` is emulated) leave no line: an empty list.
"""

import ctypes
import ctypes.util
import os
import sys
import tempfile
from typing import Callable, List

import torch


def _flush_c_stdout() -> None:
    name = ctypes.util.find_library("c")
    if name:
        ctypes.CDLL(name).fflush(None)


def parse_verbose(text: str) -> List[str]:
    """'<primitive> <implementation>' of every executed primitive in a oneDNN verbose log, in order."""
    found = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if fields[0] != "onednn_verbose" or "exec" not in fields:
            continue
        at = fields.index("exec")
        if len(fields) > at + 3:
            found.append(f"{fields[at + 2]} {fields[at + 3]}".strip())  # gemm_api names no implementation
    return found


def onednn_primitives(run: Callable[[], object]) -> List[str]:
    """Call ``run()`` once with oneDNN's verbose mode on; the primitives it executed, in order (see
    ``parse_verbose``). Nothing is printed: the log goes to a temporary file."""
    if not torch.backends.mkldnn.is_available():
        run()
        return []
    sys.stdout.flush()
    with tempfile.TemporaryFile() as log_file:
        saved = os.dup(1)
        os.dup2(log_file.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                run()
        finally:
            _flush_c_stdout()
            os.dup2(saved, 1)
            os.close(saved)
        log_file.seek(0)
        return parse_verbose(log_file.read().decode(errors="replace"))
