"""What this CPU and OS let a process run: the feature flags, and whether AMX int8 tiles are usable."""

from pathlib import Path
from typing import Optional

import torch


def cpu_flags() -> Optional[set]:
    """The CPU feature flags of /proc/cpuinfo (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def amx_int8_unavailable() -> Optional[str]:
    """None if this process can run AMX int8 tile instructions, else why not."""
    flags = cpu_flags()
    if flags is None:
        return "CPU flags cannot be read (no /proc/cpuinfo), so AMX cannot be detected"
    if "amx_int8" not in flags or "amx_tile" not in flags:
        return "this CPU has no AMX-INT8 (no amx_int8/amx_tile flags in /proc/cpuinfo)"
    init_amx = getattr(torch.cpu, "_init_amx", None)  # asks Linux for the AMX tile state (arch_prctl)
    if init_amx is not None and not init_amx():
        return "the OS does not grant this process the AMX tile state"
    return None
