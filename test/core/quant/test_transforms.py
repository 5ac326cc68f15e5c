"""Computational invariance of the input transforms (fp64)."""

import pytest
import torch

from vggt_quant_core.kernels import hadamard_matrix
from vggt_quant_core.quant.transforms import (ChannelScale, InputTransform, KroneckerAffine, RandomHadamard,
                                              smoothing_scale)


@pytest.mark.parametrize("n", [48, 64, 52])  # 52: no Hadamard matrix -> random orthogonal fallback
def test_rotation_is_orthogonal_and_invariant(n):
    rotation = RandomHadamard(n, seed=7).double()
    dense = rotation(torch.eye(n, dtype=torch.float64))  # R = diag(s) H / sqrt(n) (or the fallback)
    assert torch.allclose(dense @ dense.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    if rotation.fast:
        assert torch.allclose(dense, rotation.signs.double()[:, None] * hadamard_matrix(n), atol=1e-12)
    x, weight = torch.randn(9, n, dtype=torch.float64), torch.randn(5, n, dtype=torch.float64)
    assert torch.allclose(rotation(x) @ rotation.fold_weight(weight).T, x @ weight.T, atol=1e-10)


def test_seeds_give_different_reproducible_rotations():
    assert torch.equal(RandomHadamard(64, 1).signs, RandomHadamard(64, 1).signs)
    assert not torch.equal(RandomHadamard(64, 1).signs, RandomHadamard(64, 2).signs)


def test_dsfq_composition_is_invariant_and_records_its_order():
    n = 64
    transform = InputTransform([RandomHadamard(n, 3), ChannelScale(n)]).double()
    transform.steps[1].set_scale(torch.rand(n, dtype=torch.float64) + 0.1)
    x, weight = torch.randn(11, n, dtype=torch.float64), torch.randn(7, n, dtype=torch.float64)
    assert torch.allclose(transform(x) @ transform.fold_weight(weight).T, x @ weight.T, atol=1e-10)
    assert [step["type"] for step in transform.describe()] == ["hadamard", "scale"]
    assert transform.index("scale") == 1 and transform.index("hadamard") == 0
    assert torch.allclose(transform(x, upto=1), transform.steps[0](x))


def test_smoothing_balances_activation_and_weight_maxima():
    x = torch.randn(200, 32, dtype=torch.float64) * torch.logspace(-1, 2, 32, dtype=torch.float64)
    weight = torch.randn(16, 32, dtype=torch.float64)
    scale = smoothing_scale(x.abs().amax(0), weight, alpha=0.5).double()
    smoothed_x, smoothed_w = x / scale, weight * scale
    assert torch.allclose(smoothed_x.abs().amax(0), smoothed_w.abs().amax(0), rtol=1e-6)
    assert torch.allclose(smoothed_x @ smoothed_w.T, x @ weight.T, atol=1e-9)


def test_kronecker_affine_matches_the_dense_kronecker_product_and_stays_invariant():
    n = 48  # 6 x 8
    transform = KroneckerAffine(n, seed=2).double()
    assert transform.left.shape == (6, 6) and transform.right.shape == (8, 8)
    with torch.no_grad():  # a learned transform is no longer orthogonal
        transform.left.add_(0.3 * torch.randn(6, 6, dtype=torch.float64))
        transform.right.add_(0.3 * torch.randn(8, 8, dtype=torch.float64))
    x, weight = torch.randn(5, n, dtype=torch.float64), torch.randn(7, n, dtype=torch.float64)
    dense = torch.kron(transform.left, transform.right)
    assert torch.allclose(transform(x), x @ dense, atol=1e-10)
    assert torch.allclose(transform(x) @ transform.fold_weight(weight).T, x @ weight.T, atol=1e-9)
    transform(x).sum().backward()
    assert transform.left.grad is not None and transform.right.grad is not None
