"""Block-wise reconstruction: learn each aggregator block's quantization parameters in turn.

Blocks run in execution order F0, G0, F1, G1, ... (index 2i = frame block i, 2i + 1 = global block i).
Frame blocks see tokens as (B*S, P, C), global blocks as (B, S*P, C), exactly as in ``Aggregator.forward``
(the public QuantVGGT code feeds global blocks per-frame tokens during calibration; we do not). For each
block the full-precision outputs are the targets; the learnable parameters of its QuantLinears (smoothing
scales, Kronecker affine factors, clipping logits) minimise the (optionally Fisher-weighted) MSE to them,
divided by its detached value (so the step size does not shrink with the loss). The next block's inputs
are the full-precision outputs (``chain="fp"``, default) or the calibrated block's outputs
(``chain="quant"``). Inputs are cached on the CPU. With a work directory, each finished block's
parameters are saved atomically and a restarted run resumes after the last finished block.
"""

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..fileio import atomic_path
from ..quant import quantization_disabled, quantized_layers
from ..quant.quantizers import ActQuantizer, WeightQuantizer

log = logging.getLogger(__name__)
LOSSES = ("mse", "fisher")
CHAINS = ("fp", "quant")


@dataclass(frozen=True)
class EngineConfig:
    epochs: int = 15
    transform_lr: float = 5e-3   # smoothing scales / affine factors
    clip_lr: float = 5e-2        # clipping logits
    min_lr: float = 1e-5         # cosine schedule floor
    loss: str = "mse"
    chain: str = "fp"
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES or self.chain not in CHAINS:
            raise ValueError(f"loss must be one of {LOSSES} and chain one of {CHAINS}")
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")


@dataclass
class BlockInput:
    """One window's tokens in the frame layout (B*S, P, C) and RoPE positions (B*S, P, 2)."""

    tokens: torch.Tensor
    pos: torch.Tensor
    batch: int
    frames: int

    def layout(self, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens and positions as the block of ``kind`` sees them."""
        if kind == "frame":
            return self.tokens, self.pos
        num_tokens, dim = self.tokens.shape[1:]
        return (self.tokens.reshape(self.batch, self.frames * num_tokens, dim),
                self.pos.reshape(self.batch, self.frames * num_tokens, 2))

    def replaced(self, output: torch.Tensor) -> "BlockInput":
        return BlockInput(output.reshape(self.tokens.shape).detach().cpu(), self.pos, self.batch, self.frames)


def aggregator_block_sequence(model: nn.Module) -> List[Tuple[str, str, nn.Module]]:
    """(name, kind, block) in execution order F0, G0, F1, G1, ..."""
    aggregator = model.aggregator
    return [(f"aggregator.{kind}_blocks.{i}", kind, getattr(aggregator, f"{kind}_blocks")[i])
            for i in range(aggregator.depth) for kind in ("frame", "global")]


@torch.no_grad()
def embed_windows(model: nn.Module, windows: Sequence[torch.Tensor]) -> List[BlockInput]:
    """Full-precision inputs of block F0 for each window [S, 3, H, W] (cached on CPU)."""
    device = next(model.parameters()).device
    inputs = []
    with quantization_disabled(model):  # DINOv2 blocks may be quantized too; the chain starts in FP
        for window in windows:
            images = window[None] if window.dim() == 4 else window
            tokens, pos = model.aggregator.embed(images.to(device))
            inputs.append(BlockInput(tokens.cpu(), pos.cpu(), images.shape[0], images.shape[1]))
    return inputs


@torch.no_grad()
def run_block(block: nn.Module, kind: str, item: BlockInput, device: torch.device) -> torch.Tensor:
    tokens, pos = item.layout(kind)
    return block(tokens.to(device), pos=pos.to(device))


def fp_chain(model: nn.Module, windows: Sequence[torch.Tensor]) -> Iterator[Tuple[str, List[torch.Tensor]]]:
    """Yield (block name, full-precision outputs per window) in execution order, as the engine chains them."""
    device = next(model.parameters()).device
    inputs = embed_windows(model, windows)
    with quantization_disabled(model):
        for name, kind, block in aggregator_block_sequence(model):
            outputs = [run_block(block, kind, item, device) for item in inputs]
            yield name, outputs
            inputs = [item.replaced(out) for item, out in zip(inputs, outputs)]


def learnable_parameters(block: nn.Module) -> Dict[str, List[nn.Parameter]]:
    """The block's quantization parameters, by optimiser group (original weights stay frozen)."""
    groups = {"transform": [], "clip": []}
    for layer in quantized_layers(block).values():
        groups["transform"] += list(layer.transform.parameters())
        for quantizer in (layer.weight_quantizer, layer.act_quantizer):
            if isinstance(quantizer, (WeightQuantizer, ActQuantizer)) and quantizer.clip_logit is not None:
                groups["clip"].append(quantizer.clip_logit)
    return groups


def peak_memory_bytes(device: torch.device) -> int:
    """Peak resident memory of this process (CPU) or peak allocated memory of the CUDA device."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class BlockReconstructor:
    def __init__(self, model: nn.Module, config: EngineConfig, fisher_weights: Optional[torch.Tensor] = None,
                 work_dir: Optional[Path] = None, log_fn: Callable[[str], None] = log.info) -> None:
        if config.loss == "fisher" and fisher_weights is None:
            raise ValueError("the fisher loss needs fisher_weights [blocks, channels]")
        self.model, self.config, self.fisher_weights = model, config, fisher_weights
        self.work_dir = None if work_dir is None else Path(work_dir)
        self.log = log_fn
        self.device = next(model.parameters()).device

    def _loss(self, output: torch.Tensor, target: torch.Tensor, block_index: int) -> torch.Tensor:
        error = (output.float() - target.float()).square()
        if self.config.loss == "fisher":
            error = error * self.fisher_weights[block_index].to(error.device)
        return error.mean()

    @torch.no_grad()
    def _mean_loss(self, block, kind, inputs, targets, block_index) -> float:
        losses = [self._loss(run_block(block, kind, item, self.device), target.to(self.device), block_index).item()
                  for item, target in zip(inputs, targets)]
        return sum(losses) / len(losses)

    def _state_path(self, block_index: int, name: str) -> Optional[Path]:
        if self.work_dir is None:
            return None
        return self.work_dir / "blocks" / f"{block_index:03d}_{name.split('.', 1)[1]}.safetensors"

    def _train(self, block, kind, inputs, targets, block_index) -> None:
        cfg = self.config
        groups = learnable_parameters(block)
        params = [p for group in groups.values() for p in group]
        if not params or cfg.epochs == 0:
            return
        optimizer = torch.optim.AdamW([
            {"params": groups["transform"], "lr": cfg.transform_lr, "weight_decay": 0.0},
            {"params": groups["clip"], "lr": cfg.clip_lr, "weight_decay": 0.0},
        ])
        steps = cfg.epochs * len(inputs)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg.min_lr)
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + block_index)
        for _ in range(cfg.epochs):
            for sample in torch.randperm(len(inputs), generator=generator).tolist():
                tokens, pos = inputs[sample].layout(kind)
                output = block(tokens.to(self.device), pos=pos.to(self.device))
                loss = self._loss(output, targets[sample].to(self.device), block_index)
                optimizer.zero_grad(set_to_none=True)
                (loss / loss.detach().clamp(min=1e-30)).backward()
                optimizer.step()
                schedule.step()

    def _save_state(self, path: Path, block: nn.Module, losses: Dict[str, float]) -> None:
        learnable = {id(p) for group in learnable_parameters(block).values() for p in group}
        state = {name: p.detach().contiguous().cpu() for name, p in block.named_parameters() if id(p) in learnable}
        with atomic_path(path) as tmp:
            save_file(state or {"empty": torch.zeros(1)}, str(tmp),
                      metadata={k: repr(v) for k, v in losses.items()})

    @staticmethod
    def _load_state(path: Path, block: nn.Module) -> Dict[str, float]:
        with safe_open(str(path), framework="pt") as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys() if k != "empty"}
            losses = {k: float(v) for k, v in (handle.metadata() or {}).items()}
        block.load_state_dict(state, strict=False)
        return losses

    def run(self, windows: Sequence[torch.Tensor]) -> Dict:
        """Calibrate every aggregator block; returns per-block losses, time and peak memory."""
        started = time.perf_counter()
        inputs = embed_windows(self.model, windows)
        sequence = aggregator_block_sequence(self.model)
        blocks_report, trained_seconds, trained_blocks = [], 0.0, 0
        for index, (name, kind, block) in enumerate(sequence):
            block_start = time.perf_counter()
            with quantization_disabled(self.model):
                targets = [run_block(block, kind, item, self.device).cpu() for item in inputs]
            path = self._state_path(index, name)
            if path is not None and path.exists():
                losses = self._load_state(path, block)
                resumed = True
            else:
                before = self._mean_loss(block, kind, inputs, targets, index)
                initial = [p.detach().clone() for group in learnable_parameters(block).values() for p in group]
                self._train(block, kind, inputs, targets, index)
                after = self._mean_loss(block, kind, inputs, targets, index)
                if after > before:  # a short run can end worse than its start: keep the initialisation
                    with torch.no_grad():
                        for param, value in zip((p for g in learnable_parameters(block).values() for p in g), initial):
                            param.copy_(value)
                    after = before
                losses = {"before": before, "after": after}
                if path is not None:
                    self._save_state(path, block, losses)
                resumed = False
                trained_seconds += time.perf_counter() - block_start
                trained_blocks += 1
            blocks_report.append({"block": name, "shape": list(inputs[0].layout(kind)[0].shape), "resumed": resumed,
                                  **{k: float(v) for k, v in losses.items()}})
            if self.config.chain == "fp":
                inputs = [item.replaced(target) for item, target in zip(inputs, targets)]
            else:
                inputs = [item.replaced(run_block(block, kind, item, self.device)) for item in inputs]
            remaining = len(sequence) - index - 1
            eta = trained_seconds / max(trained_blocks, 1) * remaining
            self.log(f"calibrate: block {index + 1}/{len(sequence)} {name.split('.', 1)[1]}: loss "
                     f"{losses['before']:.4g} -> {losses['after']:.4g}{' (resumed)' if resumed else ''}, "
                     f"ETA {eta:.0f} s")
        return {"blocks": blocks_report, "seconds": round(time.perf_counter() - started, 2),
                "peak_memory_bytes": peak_memory_bytes(self.device), "windows": len(inputs),
                "config": self.config.__dict__}
