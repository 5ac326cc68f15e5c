"""Fisher estimation against an independent gradient, and FGQ's normalisation properties."""

import pytest
import torch

from vggt_quant_core.calib import estimate_fisher, normalize_fisher
from vggt_quant_core.calib.engine import BlockReconstructor, EngineConfig
from vggt_quant_core.calib.fisher import TASKS, load_fisher, save_fisher
from vggt_quant_core.model import CheckpointError, load_vggt


def test_normalisation_properties():
    generator = torch.Generator().manual_seed(0)
    fisher = torch.rand(3, 6, 16, generator=generator) ** 4
    weights = normalize_fisher(fisher, floor=0.0)
    assert torch.allclose(weights.mean(dim=1), torch.ones(6), atol=1e-5)  # each block has mean 1
    floored = normalize_fisher(fisher)
    assert floored.min() >= 0.01 and torch.equal(floored, weights.clamp(min=0.01))
    rescaled = fisher.clone()
    rescaled[1] *= 1000.0  # a task's scale does not matter
    assert torch.allclose(normalize_fisher(rescaled), floored, atol=1e-5)
    assert torch.allclose(normalize_fisher(torch.ones(3, 4, 8)), torch.ones(4, 8))


def test_estimate_matches_an_independent_gradient(small_pool, golden_dir):
    """F[depth, G1] from the estimator equals sum over tokens of (d sum(depth) / d out(G1))^2 computed with
    a zero probe added to that block's output."""
    model = load_vggt(golden_dir / "tiny_a")
    fisher = estimate_fisher(model, small_pool, [0])
    assert fisher.shape == (len(TASKS), 2 * model.aggregator.depth, 64)
    block = model.aggregator.global_blocks[1]  # execution index 3
    probe = {}

    def add_probe(module, args, output):
        probe["tensor"] = torch.zeros_like(output, requires_grad=True)
        return output + probe["tensor"]

    handle = block.register_forward_hook(add_probe)
    try:
        depth = model(small_pool.load(0))["depth"]
        grad, = torch.autograd.grad(depth.sum(), probe["tensor"])
    finally:
        handle.remove()
    expected = grad.double().reshape(-1, 64).square().sum(0)
    assert torch.allclose(fisher[TASKS.index("depth"), 3].double(), expected, rtol=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # restored after the estimate


def test_fisher_loss_with_unit_weights_is_mse_and_normalised_step_is_one():
    engine = BlockReconstructor.__new__(BlockReconstructor)  # only the loss is exercised
    engine.config = EngineConfig(loss="fisher")
    engine.fisher_weights = torch.ones(1, 4)
    output, target = torch.randn(3, 5, 4, requires_grad=True), torch.randn(3, 5, 4)
    loss = engine._loss(output, target, 0)
    assert torch.allclose(loss, (output - target).square().mean())
    normalised = loss / loss.detach()
    assert normalised.item() == pytest.approx(1.0)
    normalised.backward()
    assert torch.allclose(output.grad, 2 * (output - target).detach() / output.numel() / loss.detach())


def test_fisher_file_round_trip_is_tied_to_the_weights(tmp_path):
    fisher = torch.rand(3, 4, 8)
    save_fisher(tmp_path / "f.safetensors", fisher, ["a:0-1"], "abc")
    loaded = load_fisher(tmp_path / "f.safetensors", "abc")
    assert torch.equal(loaded["fisher"], fisher) and loaded["samples"] == ["a:0-1"]
    with pytest.raises(CheckpointError, match="other model weights"):
        load_fisher(tmp_path / "f.safetensors", "xyz")
