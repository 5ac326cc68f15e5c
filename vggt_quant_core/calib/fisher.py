"""Diagonal empirical Fisher of the tasks w.r.t. every aggregator block output (FGQ, paper eqs. 12-15).

For each task output T in (pose_enc, depth, world_points) the scalar objective is sum(T); its gradient
g with respect to the output tokens of block l gives F[task, l, c] = mean over samples of
sum over tokens of g[..., c]^2. Blocks are indexed in execution order: 2i = frame block i,
2i + 1 = global block i (the order of ``quant.targets.aggregator_blocks`` and of the calibration engine).

``normalize_fisher`` turns F into per-channel loss weights: each task divided by its mean, the tasks
summed with equal weights, each block divided by its mean (mean 1), then floored at 0.01.
"""

import json
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..fileio import PathLike, atomic_path
from ..model import CheckpointError
from .pool import SamplePool

TASKS = ("pose_enc", "depth", "world_points")


def _aggregator_blocks(model) -> List[torch.nn.Module]:
    aggregator = model.aggregator
    return [block for pair in zip(aggregator.frame_blocks, aggregator.global_blocks) for block in pair]


def estimate_fisher(model: torch.nn.Module, pool: SamplePool, indices: Sequence[int]) -> torch.Tensor:
    """F [len(TASKS), 2 * depth, C] averaged over the pool windows ``indices`` (float32, on CPU)."""
    blocks = _aggregator_blocks(model)
    dim = model.aggregator.camera_token.shape[-1]
    fisher = torch.zeros(len(TASKS), len(blocks), dim, dtype=torch.float64)
    outputs: List[torch.Tensor] = []

    def keep(module, args, output):
        output.retain_grad()
        outputs.append(output)

    device = next(model.parameters()).device
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    first = blocks[0]
    # The blocks' outputs are only part of an autograd graph if something upstream requires grad.
    start = first.register_forward_pre_hook(lambda m, args, kwargs: ((args[0].detach().requires_grad_(),),
                                                                     kwargs), with_kwargs=True)
    handles = [start] + [block.register_forward_hook(keep) for block in blocks]
    try:
        for index in indices:
            outputs.clear()
            with torch.enable_grad():
                predictions = model(pool.load(index).to(device))
                for task_index, task in enumerate(TASKS):
                    for output in outputs:
                        output.grad = None
                    predictions[task].float().sum().backward(retain_graph=task_index < len(TASKS) - 1)
                    for block_index, output in enumerate(outputs):
                        grad = output.grad.double().reshape(-1, dim)
                        fisher[task_index, block_index] += grad.square().sum(0).cpu()
    finally:
        for handle in handles:
            handle.remove()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
    return (fisher / max(len(indices), 1)).float()


def normalize_fisher(fisher: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """[T, L, C] raw Fisher -> [L, C] channel weights (mean 1 per block before the floor)."""
    fisher = fisher.double()
    per_task = fisher / fisher.mean(dim=(1, 2), keepdim=True).clamp(min=1e-300)
    combined = per_task.sum(dim=0)
    per_block = combined / combined.mean(dim=1, keepdim=True).clamp(min=1e-300)
    return per_block.clamp(min=floor).float()


def save_fisher(path: PathLike, fisher: torch.Tensor, sample_ids: Sequence[str], model_sha256: str) -> None:
    metadata = {"tasks": json.dumps(list(TASKS)), "samples": json.dumps(list(sample_ids)),
                "model_sha256": model_sha256}
    with atomic_path(path) as tmp:
        save_file({"fisher": fisher.contiguous()}, str(tmp), metadata=metadata)


def load_fisher(path: PathLike, model_sha256: str) -> Dict:
    """{"fisher": [T, L, C], "samples": [...]}; refuses a Fisher computed for other weights."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            fisher = handle.get_tensor("fisher")
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable Fisher file ({exc})") from exc
    if metadata.get("model_sha256") != model_sha256:
        raise CheckpointError(f"{path}: Fisher was computed for other model weights")
    return {"fisher": fisher, "samples": json.loads(metadata["samples"])}
