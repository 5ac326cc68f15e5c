"""Opt-in glibc allocator tuning for large CPU tensors.

By default glibc serves every allocation above 32 MiB (the dynamic mmap threshold's ceiling) with a fresh
``mmap`` and returns it with ``munmap`` on free. A VGGT Linear at 10 frames allocates 50-225 MB outputs
on every call, so each call page-faults its whole output again: on a 2-core VM this made an eager W8A8
Linear 2.2x slower and fp32 ``F.linear`` 10 % slower (``shared/docs/kernels.md`` §2.3). Raising the mmap
and trim thresholds keeps freed blocks in the heap for reuse. The cost: memory freed by the process is
not returned to the OS, so the resident size stays near its peak.

Nothing changes at import. Either call ``tune_glibc_malloc()`` once (the ``vggt-quant`` CLI does for CPU
runs: ``infer`` and ``bench speed``), or set glibc's own variables before Python starts:
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483648``.
"""

import ctypes
import ctypes.util
import logging
from typing import Optional

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # glibc reports (returns 0) a value it refuses; the result is logged
TRIM_THRESHOLD = 1 << 31

_tuned: Optional[bool] = None


def tune_glibc_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (idempotent). Returns whether glibc
    accepted both (False on non-glibc platforms, where nothing is changed)."""
    global _tuned
    if _tuned is not None:
        return _tuned
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        log.debug("allocator: no glibc mallopt here; left as is")
        _tuned = False
        return False
    accepted = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) & bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    log.debug("allocator: mallopt mmap_threshold=%d trim_threshold=%d accepted=%s", mmap_threshold, trim_threshold,
              accepted)
    _tuned = accepted
    return accepted
