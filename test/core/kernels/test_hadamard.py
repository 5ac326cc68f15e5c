"""Hadamard transforms and int4 packing against dense fp64 references."""

import pytest
import torch

from vggt_quant_core.kernels import (hadamard_matrix, hadamard_transform, is_hadamard_order, pack_int4,
                                     random_orthogonal, unpack_int4)
from vggt_quant_core.kernels.hadamard import BACKENDS

ORDERS = [1, 2, 4, 12, 20, 28, 36, 48, 64, 192, 1024, 4096]


@pytest.mark.parametrize("n", ORDERS)
def test_normalised_hadamard_is_orthogonal_with_pm1_entries(n):
    matrix = hadamard_matrix(n)
    assert torch.allclose(matrix @ matrix.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(matrix.abs() * n ** 0.5, torch.ones(n, n, dtype=torch.float64))


@pytest.mark.parametrize("n", ORDERS)
def test_every_available_backend_equals_the_dense_matrix(n):
    x = torch.randn(7, 3, n, dtype=torch.float64)
    reference = x @ hadamard_matrix(n)
    used = []
    for name, (supports, _) in BACKENDS.items():
        if supports(x):
            assert torch.allclose(hadamard_transform(x, backend=name), reference, atol=1e-10), name
            used.append(name)
        if name in ("fht-cpu",) and supports(x.float()):
            out = hadamard_transform(x.float(), backend=name)
            assert torch.allclose(out.double(), reference, atol=1e-4 * n ** 0.5), name
    assert "kronecker" in used and "dense" in used


def test_fht_cpu_does_not_modify_its_input():
    if not BACKENDS["fht-cpu"][0](torch.zeros(2, 8)):
        pytest.skip("fht-cpu not installed")
    x = torch.randn(4, 64)
    before = x.clone()
    hadamard_transform(x, backend="fht-cpu")
    assert torch.equal(x, before)


def test_non_hadamard_orders_are_reported_and_fall_back_to_random_orthogonal():
    for n in (6, 52, 100):
        assert not is_hadamard_order(n)
        with pytest.raises(ValueError, match="no Hadamard"):
            hadamard_matrix(n)
    rotation = random_orthogonal(52, seed=3)
    assert torch.allclose(rotation @ rotation.T, torch.eye(52, dtype=torch.float64), atol=1e-12)
    assert torch.equal(rotation, random_orthogonal(52, seed=3))
    assert not torch.equal(rotation, random_orthogonal(52, seed=4))


@pytest.mark.parametrize("signed,low,high", [(True, -8, 7), (False, 0, 15)])
def test_int4_pack_round_trip_is_exact(signed, low, high):
    codes = torch.randint(low, high + 1, (5, 64), dtype=torch.int16)
    codes[0, :16] = torch.arange(low, high + 1)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 32)
    assert torch.equal(unpack_int4(packed, signed=signed).to(torch.int16), codes)
    # low nibble = even column
    assert packed[0, 0].item() & 0xF == codes[0, 0].item() & 0xF


def test_int4_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(2, 3, dtype=torch.int8))
    with pytest.raises(ValueError, match="4 bits"):
        pack_int4(torch.full((2, 2), 16, dtype=torch.int16))


@pytest.mark.parametrize("n", [64, 1024, 4096])
def test_random_hadamard_equals_signs_then_transform_bit_for_bit(n):
    from vggt_quant_core.kernels.hadamard import random_hadamard_transform

    x = torch.randn(6, n)
    signs = torch.randint(0, 2, (n,)).float() * 2 - 1
    before = x.clone()
    for backend in (None, "kronecker") + (("fht-cpu",) if BACKENDS["fht-cpu"][0](x) else ()):
        assert torch.equal(random_hadamard_transform(x, signs, backend), hadamard_transform(x * signs, backend))
    assert torch.equal(x, before)
