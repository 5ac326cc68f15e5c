"""Triton integer-GEMM kernels in the Triton interpreter on CPU (opt-in: VGGTQ_TEST_TRITON=1 with triton
installed; triton is not part of the default install). Checks the in-kernel int4 unpacking and tiling
(exact int32 accumulation) and the fused epilogue; not speed, shared memory or tensor-core lowering."""

import os

import pytest
import torch

from vggt_quant_core.kernels import pack_int4
from vggt_quant_core.kernels.registry import LinearSpec, QuantizedWeights
from vggt_quant_core.kernels.triton_int import TritonIntBackend, triton_missing
from vggt_quant_core.quant.quantizers import QuantSpec, compute_qparams, quantize_to_int

OPTED_IN = os.environ.get("VGGTQ_TEST_TRITON") == "1"
if OPTED_IN:
    os.environ["TRITON_INTERPRET"] = "1"  # Triton reads it when it is imported, i.e. just below
pytestmark = pytest.mark.skipif(not OPTED_IN or triton_missing() is not None,
                                reason="opt-in: VGGTQ_TEST_TRITON=1 and triton installed")


def test_triton_backend_does_not_claim_the_cpu_by_default():
    spec = LinearSpec(64, 40, w_bits=8, a_bits=8)
    assert TritonIntBackend("t", 0, packed=False).supports(spec, torch.device("cpu"), None) == "runs on cuda only"


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("rows", [1, 17, 45])
def test_interpreted_kernel_is_exact_and_matches_the_reference(packed, rows):
    k, n = 96, 40  # not multiples of the 32-wide tiles: masking is exercised
    generator = torch.Generator().manual_seed(rows)
    qmax = 7 if packed else 127
    codes = torch.randint(-qmax - 1, qmax + 1, (n, k), generator=generator, dtype=torch.int8)
    weights = QuantizedWeights(qweight=pack_int4(codes) if packed else codes, w_scale=torch.rand(n, 1) / 50,
                               w_zero=None, bias=torch.randn(n), act_clip=torch.tensor(1.0))
    spec = LinearSpec(k, n, w_bits=4 if packed else 8, a_bits=8, w_packed=packed)
    backend = TritonIntBackend("interpreted", 0, packed=packed, device_type="cpu")
    assert backend.supports(spec, torch.device("cpu"), None) is None
    state = backend.prepare(weights, spec)
    x = torch.randn(rows, k, generator=generator)
    a_spec = QuantSpec(8, granularity="per_token")
    a_scale, _ = compute_qparams(x, a_spec)
    a_codes = quantize_to_int(x, a_spec, a_scale)
    assert torch.equal(backend.int_accumulate(state, a_codes).long(), a_codes.long() @ codes.long().T)
    y = backend.forward(state, x, torch.float32)
    expected = (a_codes.double() * a_scale.double()) @ (codes.double() * weights.w_scale.double()).T
    expected += weights.bias.double()
    assert torch.allclose(y.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
