"""Sim(3) alignment recovers known similarity transforms."""

import pytest
import torch

from vggt_quant_core.geometry import quat_to_mat, umeyama_sim3


def _random_sim3(generator):
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    return (torch.rand((), generator=generator, dtype=torch.float64) * 3 + 0.2, quat_to_mat(q / q.norm()),
            torch.randn(3, generator=generator, dtype=torch.float64) * 5)


def test_recovers_exact_similarity():
    generator = torch.Generator().manual_seed(0)
    scale, rotation, translation = _random_sim3(generator)
    source = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    target = scale * source @ rotation.T + translation
    found = umeyama_sim3(source, target)
    assert torch.allclose(found.scale, scale, atol=1e-10)
    assert torch.allclose(found.rotation, rotation, atol=1e-10)
    assert torch.allclose(found.translation, translation, atol=1e-9)
    assert torch.allclose(found.apply(source), target, atol=1e-9)
    assert torch.allclose(found.matrix()[:3, :3] @ source.T + found.translation[:, None], target.T, atol=1e-9)


def test_weights_ignore_outliers_and_invalid_points():
    generator = torch.Generator().manual_seed(1)
    scale, rotation, translation = _random_sim3(generator)
    source = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    target = scale * source @ rotation.T + translation
    target[:5] += 100.0                        # gross outliers ...
    weights = torch.ones(40, dtype=torch.float64)
    weights[:5] = 0                            # ... with zero weight
    source[5, 0] = float("nan")                # and a non-finite point
    found = umeyama_sim3(source, target, weights)
    assert torch.allclose(found.rotation, rotation, atol=1e-9) and torch.allclose(found.scale, scale, atol=1e-9)


def test_rigid_mode_and_reflection_safety():
    generator = torch.Generator().manual_seed(2)
    _, rotation, translation = _random_sim3(generator)
    source = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    found = umeyama_sim3(source, source @ rotation.T + translation, with_scale=False)
    assert found.scale == 1 and torch.allclose(found.rotation, rotation, atol=1e-10)
    mirrored = umeyama_sim3(source, source * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert torch.det(mirrored.rotation) > 0  # a proper rotation even when a reflection fits better


def test_degenerate_inputs_raise():
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_sim3(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="identical"):
        umeyama_sim3(torch.ones(5, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="two \\[N, 3\\]"):
        umeyama_sim3(torch.zeros(5, 2), torch.zeros(5, 2))
