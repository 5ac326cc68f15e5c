"""Which backend ``auto`` picks per device, GPU generation and format (CUDA choices decided without a GPU:
``supports`` only reads the spec, the device type and the compute capability)."""

import pytest
import torch

from vggt_quant_core.kernels import cutlass_int, triton_int
from vggt_quant_core.kernels.registry import LinearSpec, backends, register_backend, select_backend

CUDA = torch.device("cuda")
W8A8 = LinearSpec(1024, 3072, w_bits=8, a_bits=8)
W4A8 = LinearSpec(1024, 3072, w_bits=4, a_bits=8, w_packed=True)
W4A4 = LinearSpec(1024, 3072, w_bits=4, a_bits=4, w_packed=True)


@pytest.fixture
def with_cutlass_and_triton(monkeypatch):
    monkeypatch.setattr(cutlass_int, "cutlass_missing", lambda: None)
    monkeypatch.setattr(triton_int, "triton_missing", lambda: None)


@pytest.fixture
def without_optional_kernels(monkeypatch):
    monkeypatch.setattr(cutlass_int, "cutlass_missing", lambda: "opt-in")
    monkeypatch.setattr(triton_int, "triton_missing", lambda: "triton not importable")


@pytest.mark.parametrize("spec,capability,expected", [
    (W4A4, (8, 9), "cuda-int4-cutlass"),   # Ada: native INT4 tensor cores
    (W4A4, (8, 7), "cuda-int4-cutlass"),   # Orin
    (W4A4, (9, 0), "cuda-w4-triton"),      # Hopper: no INT4 MMA -> int8 compute on packed weights
    (W4A8, (8, 0), "cuda-w4-triton"),
    (W8A8, (9, 0), "cuda-int8-cutlass"),
    (W8A8, (7, 5), "cuda-int8-intmm"),     # Turing: no 8-bit tl.dot, no sm_80 CUTLASS kernel
])
def test_cuda_choice_with_every_kernel_available(with_cutlass_and_triton, spec, capability, expected):
    assert select_backend(spec, CUDA, capability).name == expected


@pytest.mark.parametrize("spec", [W8A8, W4A8, W4A4])
def test_cuda_default_install_uses_int_mm(without_optional_kernels, spec):
    assert select_backend(spec, CUDA, (8, 9)).name == "cuda-int8-intmm"


def test_shapes_cublaslt_cannot_take_fall_back_to_the_reference(without_optional_kernels, cpu_without_amx):
    assert select_backend(LinearSpec(1020, 3072, w_bits=8, a_bits=8), CUDA, (9, 0)) is None
    assert select_backend(LinearSpec(1020, 3072, w_bits=8, a_bits=8), torch.device("cpu")).name == "cpu-int8"


def test_cpu_never_gets_a_cuda_backend(with_cutlass_and_triton, cpu_without_amx):
    for spec in (W8A8, W4A8, W4A4):
        assert select_backend(spec, torch.device("cpu")).name == "cpu-int8"


def test_backends_are_sorted_by_priority_and_names_are_unique():
    priorities = [b.priority for b in backends()]
    assert priorities == sorted(priorities, reverse=True)
    with pytest.raises(ValueError, match="already registered"):
        register_backend(backends()[0])
    with pytest.raises(ValueError, match="invalid backend name"):
        register_backend(type("Auto", (cutlass_int.CutlassBackend,), {})("auto", 0, int4=False))


def test_cutlass_is_opt_in(monkeypatch):
    monkeypatch.delenv(cutlass_int.CUTLASS_ENV, raising=False)
    assert "opt-in" in cutlass_int.cutlass_missing()
    monkeypatch.setenv(cutlass_int.CUTLASS_ENV, "1")
    if torch.version.cuda is None:
        assert cutlass_int.cutlass_missing() == "this torch has no CUDA"
