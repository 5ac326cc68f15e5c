"""Right integer sums on every CPU: which backend ``auto`` takes per CPU (flags faked), the ISA caps, and, in
fresh processes under ``ONEDNN_MAX_CPU_ISA``/``VGGTQ_MAX_CPU_ISA`` (read once per process), every CPU integer
backend's sums against an int64 reference wherever it accepts a layer."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from vggt_quant_core.kernels import amx_int8, cpu_isa, int_mm, onednn_int8, registry
from vggt_quant_core.kernels.onednn_verbose import onednn_primitives
from vggt_quant_core.kernels.registry import LinearSpec, select_backend
from vggt_quant_core.quant import QuantLinear, QuantSpec
from vggt_quant_core.quant.transforms import InputTransform

CPU = torch.device("cpu")
W8A8 = LinearSpec(1024, 3072, w_bits=8, a_bits=8)
AVX2 = {"sse4_2", "avx", "avx2", "fma"}
ZEN4 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}   # AVX-512 with VNNI, no AMX
SPR = ZEN4 | {"avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}                      # Sapphire Rapids
INT8, ONEDNN, FUSED = int_mm.CPU_INT8, onednn_int8.CPU_AMX_INT8, amx_int8.CPU_AMX_INT8_FUSED
NO_VNNI_AUTO = "torch._int_mm runs a scalar loop"


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(hardware flags or None, ONEDNN_MAX_CPU_ISA, VGGTQ_MAX_CPU_ISA): the backend choice as on that
    CPU (the OS grant of AMX faked, the fused kernel's build assumed to work)."""
    def install(flags, onednn_cap="", vggtq_cap=""):
        hardware = None if flags is None else frozenset(flags)
        for module in (cpu_isa, int_mm):
            monkeypatch.setattr(module, "hardware_flags", lambda: hardware)
        monkeypatch.setattr(cpu_isa.torch.cpu, "_init_amx", lambda: True)
        monkeypatch.setattr(amx_int8, "_build", lambda: (lambda *args: None, None))
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
        monkeypatch.setenv(cpu_isa.ONEDNN_CAP_ENV, onednn_cap)
        monkeypatch.setenv(cpu_isa.ISA_CAP_ENV, vggtq_cap)
        monkeypatch.setattr(registry, "_LOGGED", set())
        for cache in (amx_int8.amx_fused_missing, onednn_int8.amx_int8_missing):
            cache.cache_clear()
    yield install
    for cache in (amx_int8.amx_fused_missing, onednn_int8.amx_int8_missing):
        cache.cache_clear()


@pytest.mark.parametrize("flags,onednn_cap,vggtq_cap,chosen,isa,reasons", [
    (None, "", "", "reference", None,  # ARM, or no /proc/cpuinfo
     {FUSED: "no x86 CPU flags", ONEDNN: "no x86 CPU flags", INT8: NO_VNNI_AUTO}),
    (AVX2, "", "", "reference", "AVX2", {FUSED: "no AMX-INT8", ONEDNN: "no AMX-INT8", INT8: NO_VNNI_AUTO}),
    (ZEN4, "", "", "cpu-int8", "AVX512-VNNI", {FUSED: "no AMX-INT8", ONEDNN: "no AMX-INT8"}),
    (ZEN4, "AVX512_CORE", "", "reference", "AVX-512",  # oneDNN as on Skylake-SP: ATen still calls it
     {INT8: "ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps oneDNN off VNNI: oneDNN's int8 GEMMs saturate"}),
    (ZEN4, "AVX2", "", "reference", "AVX2", {INT8: "wrong results"}),
    (ZEN4, "", "avx2", "reference", "AVX2", {INT8: "no AVX512-VNNI (hidden by VGGTQ_MAX_CPU_ISA=avx2)"}),
    (SPR, "", "", "cpu-amx-int8-fused", "AMX-INT8", {}),
    (SPR, "AVX512_CORE_VNNI", "", "cpu-amx-int8-fused", "AMX-INT8", {ONEDNN: "keeps oneDNN off AMX"}),
    (SPR, "AVX512_CORE_BF16", "avx512", "cpu-int8", "AVX512-VNNI",
     {FUSED: "no AMX-INT8 (no amx_int8/amx_tile flags in /proc/cpuinfo) (hidden by VGGTQ_MAX_CPU_ISA=avx512)",
      ONEDNN: "keeps oneDNN off AMX"}),
    (SPR, "AVX2", "avx2", "reference", "AVX2", {INT8: "wrong results", FUSED: "hidden by VGGTQ_MAX_CPU_ISA=avx2"}),
    (SPR - {"avx512_bf16"}, "", "", "cpu-amx-int8", "AMX-INT8", {FUSED: "no AVX512-BF16"}),
])
def test_auto_per_cpu_and_isa_caps(fake_cpu, caplog, flags, onednn_cap, vggtq_cap, chosen, isa, reasons):
    if onednn_int8.onednn_qlinear_missing() is not None:
        pytest.skip(onednn_int8.onednn_qlinear_missing())
    fake_cpu(flags, onednn_cap, vggtq_cap)
    for backend, why in reasons.items():
        reason = backend.supports(W8A8, CPU, None) or backend.auto_skip_reason(CPU)
        assert reason is not None and why in reason, (backend.name, reason)
    with caplog.at_level(logging.DEBUG, logger=registry.__name__):
        backend = select_backend(W8A8, CPU)
    assert (backend.name if backend else "reference") == chosen
    # the reasons of the backends tried before the chosen one are logged
    assert all(why in caplog.text for b, why in reasons.items() if backend is None or b.priority > backend.priority)
    assert cpu_isa.kernel_isa() == (isa or cpu_isa.platform.machine())


def test_on_arm_the_amx_build_is_skipped_with_its_reason(fake_cpu, monkeypatch):
    """What ``make install`` runs after pip (``amx_fused_missing``), as on an aarch64 CPU: a reason, no compiler."""
    fake_cpu(None)
    monkeypatch.setattr(cpu_isa.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(amx_int8, "_build", lambda: pytest.fail("the AMX kernel must not be built on ARM"))
    assert amx_int8.amx_fused_missing() == "no x86 CPU flags in /proc/cpuinfo (machine aarch64): no AMX to use"
    assert cpu_isa.kernel_isa() == "aarch64" and select_backend(W8A8, CPU) is None


def test_cpu_int8_stays_available_by_name_where_it_is_only_slow(fake_cpu):
    fake_cpu(AVX2)
    assert INT8.supports(W8A8, CPU, None) is None and NO_VNNI_AUTO in INT8.auto_skip_reason(CPU)
    fake_cpu(ZEN4, "AVX2")
    assert "wrong results" in INT8.supports(W8A8, CPU, None)  # named or not: never wrong sums


def test_the_isa_cap_hides_flags_and_ignores_unknown_values_with_a_warning(fake_cpu, caplog):
    fake_cpu(SPR, vggtq_cap="avx512")
    assert cpu_isa.cpu_flags() == ZEN4 | {"avx_vnni"}
    fake_cpu(SPR, vggtq_cap="AVX2")
    assert cpu_isa.cpu_flags() == AVX2
    fake_cpu(SPR, vggtq_cap="avx512vnni")
    cpu_isa._warn_unknown_cap.cache_clear()
    with caplog.at_level(logging.WARNING, logger=cpu_isa.__name__):
        assert cpu_isa.cpu_flags() == SPR and cpu_isa.cpu_flags() == SPR
    assert caplog.text.count("VGGTQ_MAX_CPU_ISA='avx512vnni' is not one of avx512, avx2: ignored") == 1


def test_unknown_onednn_caps_count_as_hiding_vnni_and_amx(fake_cpu):
    fake_cpu(SPR, "AVX11_FUTURE")
    assert cpu_isa.onednn_int8_inexact() and cpu_isa.onednn_keeps_off_amx()
    fake_cpu(SPR, "avx10_1_512_amx")  # oneDNN reads the name case-insensitively
    assert cpu_isa.onednn_int8_inexact() is None and cpu_isa.onednn_keeps_off_amx() is None


def test_aten_calls_onednn_for_int_mm_exactly_where_the_library_says():
    """``cpu_int_mm_on_onednn`` restates ATen's dispatch rule; oneDNN's verbose log shows what really ran."""
    a, b = torch.ones(32, 64, dtype=torch.int8), torch.ones(64, 16, dtype=torch.int8)
    assert bool(onednn_primitives(lambda: torch._int_mm(a, b))) == int_mm.cpu_int_mm_on_onednn()


def test_the_cpu_is_named_with_the_isa_the_kernels_see(fake_cpu):
    description = cpu_isa.cpu_description()
    assert description["model"] and description["threads"] == torch.get_num_threads()
    assert description["kernel_isa"] in cpu_isa.cpu_label()
    fake_cpu(SPR, "AVX2", "avx2")
    caps = cpu_isa.cpu_description()["caps"]
    assert caps["VGGTQ_MAX_CPU_ISA"] == "avx2" and caps["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "AVX2" in cpu_isa.cpu_label() and "ONEDNN_MAX_CPU_ISA=AVX2" in cpu_isa.cpu_label()


def test_auto_on_this_cpu_runs_an_exact_fast_backend_or_the_reference():
    """No mocks: what ``auto`` runs here (the AMX kernels, cpu-int8 with AVX512-VNNI, else the reference),
    its output against the reference's."""
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(nn.Linear(64, 48), InputTransform([]), QuantSpec(8),
                                    QuantSpec(8, granularity="per_token"))
    layer.freeze()
    x = torch.randn(37, 64)
    with torch.no_grad():
        y = layer(x)
        used = layer.active_backend
        layer.backend = "reference"
        reference = layer(x)
    flags = cpu_isa.cpu_flags() or set()
    if onednn_int8.amx_int8_missing() is None or amx_int8.amx_fused_missing() is None:
        assert used.startswith("cpu-amx-int8")
    elif "avx512_vnni" in flags and int_mm.cpu_int_mm_inexact() is None and torch.backends.mkldnn.enabled:
        assert used == "cpu-int8"
    else:
        assert used == "reference"
    assert torch.allclose(y, reference, rtol=1e-5, atol=2e-6 * reference.abs().max())


# Run in a fresh process per cap: every CPU integer backend that accepts a layer must return its exact sums
# (activations with a row absmax of qmax give unit scales, so the float output is the integer sum); oneDNN's
# int8 GEMM and torch._int_mm are also run directly on saturating operands, to show what the refusals avoid.
SUMS_SCRIPT = r"""
import json, sys, torch
from vggt_quant_core.kernels import cpu_isa, int_mm, onednn_int8, pack_int4
from vggt_quant_core.kernels.registry import LinearSpec, QuantizedWeights, backends

def operands(a_qmax, w_qmax, case, rows=64, depth=256, cols=64):
    g = torch.Generator().manual_seed(0)
    if case == "random":
        a = torch.randint(-a_qmax, a_qmax + 1, (rows, depth), generator=g)
        w = torch.randint(-w_qmax - 1, w_qmax + 1, (cols, depth), generator=g)
    else:  # every byte pair at the extreme that saturates 16-bit pair sums
        a = torch.full((rows, depth), a_qmax)
        w = torch.full((cols, depth), w_qmax if case == "max" else -w_qmax - 1)
    a[:, 0] = a_qmax  # row absmax = qmax: activation scale 1, codes = a
    return a.to(torch.int8), w.to(torch.int8)

report = {"inexact": cpu_isa.onednn_int8_inexact(), "int_mm_on_onednn": int_mm.cpu_int_mm_on_onednn(),
          "sums": {}, "direct": {}}
for w_bits, a_bits in ((8, 8), (4, 8), (4, 4)):
    packed = w_bits <= 4
    spec = LinearSpec(256, 64, w_bits=w_bits, a_bits=a_bits, w_packed=packed)
    for backend in backends():
        if backend.supports(spec, torch.device("cpu"), None) is not None:
            continue
        for case in ("random", "max", "min"):
            a, w = operands((1 << (a_bits - 1)) - 1, (1 << (w_bits - 1)) - 1, case)
            weights = QuantizedWeights(qweight=pack_int4(w) if packed else w, w_scale=torch.ones(64, 1),
                                       w_zero=None, bias=None, act_clip=torch.tensor(1.0))
            y = backend.forward(backend.prepare(weights, spec), a.float(), torch.float32)
            error = (y.double() - (a.long() @ w.long().T).double()).abs().max().item()
            report["sums"][f"{backend.name} w{w_bits}a{a_bits} {case}"] = error
a, w = operands(127, 127, "max")
report["direct"]["torch._int_mm"] = (torch._int_mm(a, w.T).long() - a.long() @ w.long().T).abs().max().item()
if onednn_int8.onednn_qlinear_missing() is None:
    state = onednn_int8.CPU_AMX_INT8.prepare(QuantizedWeights(w, torch.ones(64, 1), None, None, torch.tensor(1.0)),
                                             LinearSpec(256, 64, w_bits=8, a_bits=8))
    acc = onednn_int8.CPU_AMX_INT8.weight_scaled_accumulate(state, a)
    report["direct"]["onednn int8"] = (acc.double() - (a.long() @ w.long().T).double()).abs().max().item()
json.dump(report, sys.stdout)
"""

CAPS = {
    "none": {},
    "avx512-no-amx": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "VGGTQ_MAX_CPU_ISA": "avx512"},
    "avx512-no-vnni-in-onednn": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "VGGTQ_MAX_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx2-onednn-only": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def _sums_under(caps: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "VGGTQ_MAX_CPU_ISA",
                                                            "ATEN_CPU_CAPABILITY")}
    done = subprocess.run([sys.executable, "-c", SUMS_SCRIPT], env={**env, **caps}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.skipif("avx2" not in (cpu_isa.hardware_flags() or ()), reason="the caps are x86 ISAs: needs AVX2")
@pytest.mark.parametrize("cap", sorted(CAPS))
def test_every_accepted_cpu_integer_backend_is_exact_under_the_isa_caps(cap):
    report = _sums_under(CAPS[cap])
    assert report["sums"], "no CPU integer backend accepted a layer"
    assert all("cpu-int8" in key or "cpu-amx" in key for key in report["sums"])
    wrong = {key: error for key, error in report["sums"].items() if error != 0}
    assert not wrong, f"under {CAPS[cap]}: inexact sums {wrong}"
    # The refusals are needed: oneDNN's int8 GEMM without VNNI is wrong on saturating operands, and so is
    # torch._int_mm where ATen hands it to such a oneDNN.
    if "onednn int8" in report["direct"]:
        assert (report["direct"]["onednn int8"] != 0) == (report["inexact"] is not None), report
    int_mm_wrong = report["int_mm_on_onednn"] and report["inexact"] is not None
    assert (report["direct"]["torch._int_mm"] != 0) == int_mm_wrong, report
