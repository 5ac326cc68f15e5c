"""Which oneDNN kernels a call runs: oneDNN's verbose log, switched on for one call and read back.

oneDNN prints one ``onednn_verbose,...,exec,cpu,<primitive>,<implementation>,...`` line per primitive it
executes (e.g. ``matmul brg_matmul:avx10_1_512_amx`` for an AMX GEMM, ``ref_int8:any`` for its slow
reference), with C ``printf`` on the process's stdout: so stdout's file descriptor is pointed at a
temporary file for the call. ATen kernels that do not go through oneDNN (fp32 ``F.linear`` uses MKL or
OpenBLAS, CPU ``_scaled_mm`` is emulated) leave no line: an empty list. ``onednn_primitives_per_module``
attributes the lines to the modules that ran them (which kernel each Linear of a model ran).
"""

import ctypes
import ctypes.util
import functools
import os
import sys
import tempfile
from typing import Callable, Dict, List

import torch
from torch import nn

_MODULE_START, _MODULE_END = "vggtq_module_start,", "vggtq_module_end"


@functools.lru_cache(maxsize=None)
def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _flush_c_stdout() -> None:
    """Write out C stdio's buffer (oneDNN's lines) before anything else goes to the descriptor."""
    if _libc() is not None:
        _libc().fflush(None)


def parse_verbose(text: str) -> List[str]:
    """'<primitive> <implementation>' of every executed primitive in a oneDNN verbose log, in order."""
    return [primitive for _, primitive in _executed(text) if primitive is not None]


def _executed(text: str):
    """(module or None, primitive) per executed primitive, and (module, None) where a module starts (the
    markers of ``onednn_primitives_per_module``)."""
    module = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(_MODULE_START):
            module = line[len(_MODULE_START):]
            yield module, None
            continue
        if line == _MODULE_END:
            module = None
            continue
        fields = line.split(",")
        if fields[0] != "onednn_verbose" or "exec" not in fields:
            continue
        at = fields.index("exec")
        if len(fields) > at + 3:
            yield module, f"{fields[at + 2]} {fields[at + 3]}".strip()  # gemm_api names no implementation


def _verbose_log(run: Callable[[], object]) -> str:
    """oneDNN's verbose log of ``run()``, read from a temporary file that stdout's descriptor points to."""
    if not torch.backends.mkldnn.is_available():
        run()
        return ""
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
        return log_file.read().decode(errors="replace")


def onednn_primitives(run: Callable[[], object]) -> List[str]:
    """Call ``run()`` once with oneDNN's verbose mode on; the primitives it executed, in order (see
    ``parse_verbose``). Nothing is printed: the log goes to a temporary file."""
    return parse_verbose(_verbose_log(run))


def onednn_primitives_per_module(modules: Dict[str, nn.Module], run: Callable[[], object]) -> Dict[str, List[str]]:
    """Like ``onednn_primitives``, attributed to the (leaf) ``modules`` whose forward ran them: forward
    hooks write start and end markers into the same log. Modules that ran without a oneDNN primitive map
    to [], modules that did not run are left out."""
    def marker(text: str):
        def write(*_):
            _flush_c_stdout()
            os.write(1, f"{text}\n".encode())
        return write

    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(marker(_MODULE_START + name)))
        handles.append(module.register_forward_hook(marker(_MODULE_END)))
    try:
        text = _verbose_log(run)
    finally:
        for handle in handles:
            handle.remove()
    found: Dict[str, List[str]] = {}
    for module, primitive in _executed(text):
        if module is not None:
            found.setdefault(module, [])
            if primitive is not None:
                found[module].append(primitive)
    return found
