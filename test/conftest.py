"""Session fixtures; golden data is read from ../shared beside the repository (never copied)."""

import os

import pytest

from helpers import GOLDEN, load_pt, require

# Quantized layers run eagerly in the suite: torch.compile costs seconds per shape; the compiled
# element-wise passes are tested explicitly (test/core/kernels/test_int_mm.py).
os.environ.setdefault("VGGTQ_COMPILE", "0")


@pytest.fixture(scope="session")
def golden_dir():
    return require(GOLDEN)


@pytest.fixture(scope="session")
def units(golden_dir):
    return load_pt(golden_dir / "units" / "units.pt")


@pytest.fixture
def int_mm_as_with_vnni(monkeypatch):
    """``auto`` takes cpu-int8 as on a CPU with AVX512-VNNI (where torch._int_mm runs oneDNN's VNNI GEMM). On
    CPUs without VNNI torch._int_mm runs ATen's scalar loop, exact as well (only slow), so the numerics hold on
    every CPU; skipped where cpu-int8 refuses because its sums would be wrong (a cap hiding VNNI from oneDNN)."""
    from vggt_quant_core.kernels import int_mm

    inexact = int_mm.cpu_int_mm_inexact()
    if inexact:
        pytest.skip(f"cpu-int8 refuses here: {inexact}")
    monkeypatch.setattr(int_mm, "cpu_int_mm_slow", lambda: None)


@pytest.fixture
def cpu_without_amx(monkeypatch, int_mm_as_with_vnni):
    """``auto`` as on a CPU with AVX512-VNNI and no AMX (AMD Zen 4, Ice Lake): cpu-int8."""
    from vggt_quant_core.kernels import amx_int8, onednn_int8

    monkeypatch.setattr(onednn_int8, "amx_int8_missing", lambda: "AMX hidden by the test")
    monkeypatch.setattr(amx_int8, "amx_fused_missing", lambda: "AMX hidden by the test")
