"""What this CPU and OS let a process run, as the backend choice sees it: the feature flags, whether AMX int8
tiles are usable, whether oneDNN's int8 GEMMs are exact here, and a name for the CPU next to speed figures.

Integer exactness: without VNNI (AVX2-only CPUs, AVX-512 before Cascade Lake, AMD Zen 2/3), int8 GEMM kernels
multiply unsigned x signed byte pairs with ``vpmaddubsw``, whose 16-bit pair sums saturate: oneDNN's int8 GEMMs
then return wrong sums for full-range operands (off by 8e4 at 64x256x64; ``test_cpu_isa.py`` shows it under
``ONEDNN_MAX_CPU_ISA=AVX2``). VNNI (``vpdpbusd``) and AMX accumulate in 32 bits: exact.

Running as another CPU would: ``VGGTQ_MAX_CPU_ISA`` hides features from the backend choice (``avx512``: AMX;
``avx2``: AMX, AVX-512 and AVX-VNNI). Kernels this library does not build keep running what they find, so
``make test-isa`` pairs it with oneDNN's ``ONEDNN_MAX_CPU_ISA`` and ATen's ``ATEN_CPU_CAPABILITY``, which those
libraries read once per process (so tests of other caps start fresh processes).
"""

import functools
import logging
import os
import platform
from pathlib import Path
from typing import Dict, Optional, Set, Tuple

import torch

log = logging.getLogger(__name__)

ISA_CAP_ENV = "VGGTQ_MAX_CPU_ISA"
# flag prefixes each cap hides from /proc/cpuinfo's list
ISA_CAPS: Dict[str, Tuple[str, ...]] = {"avx512": ("amx",), "avx2": ("amx", "avx512", "avx_vnni")}
ONEDNN_CAP_ENV = "ONEDNN_MAX_CPU_ISA"
# oneDNN's ISA names -> (AVX512-VNNI, AVX-VNNI, AMX) allowed: a cap allows the ISAs whose dnnl_cpu_isa_t bits
# it contains (AVX512_CORE_VNNI = 0x67 lacks AVX2_VNNI's 0x8; AVX10_1_512 = 0x1ef has it)
_ONEDNN_CAPS: Dict[str, Tuple[bool, bool, bool]] = {
    "SSE41": (False, False, False), "AVX": (False, False, False), "AVX2": (False, False, False),
    "AVX2_VNNI": (False, True, False), "AVX2_VNNI_2": (False, True, False), "AVX512_CORE": (False, False, False),
    "AVX512_CORE_VNNI": (True, False, False), "AVX512_CORE_BF16": (True, False, False),
    "AVX512_CORE_FP16": (True, True, False), "AVX10_1_512": (True, True, False), "AVX10_2_512": (True, True, False),
    "AVX512_CORE_AMX": (True, True, True), "AVX10_1_512_AMX": (True, True, True),
    "AVX512_CORE_AMX_FP16": (True, True, True), "AVX10_1_512_AMX_FP16": (True, True, True),
    "AVX10_2_512_AMX_2": (True, True, True), "ALL": (True, True, True), "DEFAULT": (True, True, True)}


@functools.lru_cache(maxsize=None)
def hardware_flags() -> Optional[frozenset]:
    """The CPU feature flags of /proc/cpuinfo (x86 Linux), or None where there are none (ARM lists
    ``Features``, other systems have no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


@functools.lru_cache(maxsize=None)
def _warn_unknown_cap(cap: str) -> None:
    log.warning("%s=%r is not one of %s: ignored, the backend choice sees every CPU feature", ISA_CAP_ENV, cap,
                ", ".join(ISA_CAPS))


def isa_cap() -> Optional[str]:
    """``VGGTQ_MAX_CPU_ISA`` (lower case), None when unset; a value it does not know is ignored with a warning
    (once per value)."""
    cap = os.environ.get(ISA_CAP_ENV, "").strip().lower()
    if cap and cap not in ISA_CAPS:
        _warn_unknown_cap(cap)
        return None
    return cap or None


def cpu_flags() -> Optional[Set[str]]:
    """The flags the backend choice sees: the hardware's, less those ``VGGTQ_MAX_CPU_ISA`` hides."""
    flags = hardware_flags()
    cap = isa_cap()
    if flags is None or cap is None:
        return None if flags is None else set(flags)
    return {flag for flag in flags if not flag.startswith(ISA_CAPS[cap])}


def hidden_note(flag: str) -> str:
    """' (hidden by VGGTQ_MAX_CPU_ISA=...)' where the hardware has ``flag`` and the cap hides it, else ''."""
    shown = flag in (cpu_flags() or ()) or flag not in (hardware_flags() or ())
    return "" if shown else f" (hidden by {ISA_CAP_ENV}={isa_cap()})"


def amx_int8_unavailable() -> Optional[str]:
    """None if this process can run AMX int8 tile instructions, else why not."""
    flags = cpu_flags()
    if flags is None:
        return f"no x86 CPU flags in /proc/cpuinfo (machine {platform.machine() or 'unknown'}): no AMX to use"
    if "amx_int8" not in flags or "amx_tile" not in flags:
        return "this CPU has no AMX-INT8 (no amx_int8/amx_tile flags in /proc/cpuinfo)" + hidden_note("amx_int8")
    init_amx = getattr(torch.cpu, "_init_amx", None)  # asks Linux for the AMX tile state (arch_prctl)
    if init_amx is not None and not init_amx():
        return "the OS does not grant this process the AMX tile state"
    return None


def onednn_cap() -> Tuple[Optional[str], Tuple[bool, bool, bool]]:
    """(``ONEDNN_MAX_CPU_ISA`` or None, what it allows: AVX512-VNNI, AVX-VNNI, AMX). A name this table lacks
    counts as allowing none of them: a needless refusal, never a wrong sum."""
    cap = os.environ.get(ONEDNN_CAP_ENV, "").strip().upper()
    if not cap:
        return None, (True, True, True)
    return cap, _ONEDNN_CAPS.get(cap, (False, False, False))


def onednn_keeps_off_amx() -> Optional[str]:
    """Why oneDNN may not run AMX in this process (``ONEDNN_MAX_CPU_ISA``), or None."""
    cap, (_, _, amx) = onednn_cap()
    return None if amx else f"{ONEDNN_CAP_ENV}={cap} keeps oneDNN off AMX"


def onednn_int8_inexact() -> Optional[str]:
    """None if oneDNN's int8 GEMMs run VNNI or AMX instructions here (exact sums), else why they saturate.
    oneDNN sees the hardware (not ``VGGTQ_MAX_CPU_ISA``) within its own cap."""
    flags = hardware_flags() or frozenset()
    cap, (vnni512, vnni256, _) = onednn_cap()
    if (vnni512 and "avx512_vnni" in flags) or (vnni256 and "avx_vnni" in flags):
        return None
    where = f"{ONEDNN_CAP_ENV}={cap} keeps oneDNN off VNNI" if cap and flags & {"avx512_vnni", "avx_vnni"} else \
        "this CPU has no VNNI (no avx512_vnni/avx_vnni flags in /proc/cpuinfo)"
    return f"{where}: oneDNN's int8 GEMMs saturate 16-bit pair sums there (wrong results)"


def kernel_isa() -> str:
    """The widest integer-GEMM instruction set the backend choice sees here (caps applied), e.g. 'AMX-INT8',
    'AVX512-VNNI', 'AVX2'; the machine type where there are no x86 flags."""
    flags = cpu_flags()
    if flags is None:
        return platform.machine() or "unknown"
    cap, (vnni512, vnni256, _) = onednn_cap()
    # AMX: our fused kernel does not go through oneDNN, so only the visible flags and the OS count
    for flag, name, allowed in (("amx_int8", "AMX-INT8", amx_int8_unavailable() is None),
                                ("avx512_vnni", "AVX512-VNNI", vnni512), ("avx_vnni", "AVX-VNNI", vnni256),
                                ("avx512f", "AVX-512", vnni512 or "512" in (cap or "")), ("avx2", "AVX2", True)):
        if flag in flags and allowed:
            return name
    return "SSE"


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """/proc/cpuinfo's model name (x86) or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_description() -> Dict[str, object]:
    """The CPU next to a speed figure: model, the integer ISA the kernels see, ATen's vector capability, the
    caps in force and the core count torch uses."""
    return {"model": cpu_model(), "kernel_isa": kernel_isa(),
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "caps": {env: os.environ[env] for env in (ISA_CAP_ENV, ONEDNN_CAP_ENV, "ATEN_CPU_CAPABILITY")
                     if os.environ.get(env)},
            "threads": torch.get_num_threads()}


def cpu_label() -> str:
    """One line for tables and /diagnostics, e.g. 'AMD EPYC (AVX2, 2 threads)'."""
    description = cpu_description()
    caps = ", ".join(f"{k}={v}" for k, v in description["caps"].items())
    return (f"{description['model']} ({description['kernel_isa']}, {description['threads']} threads"
            + (f", {caps}" if caps else "") + ")")
