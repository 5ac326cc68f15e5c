"""Training loop for VGGT-architecture models on cached generated scenes (CPU or GPU), resumable.

Every ``checkpoint_every`` steps the model, optimizer, gradient scaler, step, elapsed times and log are
written atomically to ``<out>/checkpoint.pt``; ``resume=True`` continues from it, and because the
windows of a step depend only on (seed, step) the continued run sees the data an uninterrupted run
would. The end result is ``<out>/model.safetensors`` (``save_vggt``: float32 with the architecture in
its header) and ``<out>/train_log.json`` (settings, environment, loss curve, validation scores).
"""

import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ..data import SceneSequence, generate_sequence
from ..eval.evaluate import HEADLINE_METRICS, evaluate_sequences
from ..fileio import atomic_path, write_text_atomic
from ..model import VGGT, save_vggt
from .dataset import WindowSampler, window_batch
from .losses import LossWeights, vggt_loss

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 16000
    lr: float = 4e-4
    min_lr: float = 1e-5            # cosine decay ends here
    warmup_steps: int = 500         # linear warm-up from 0
    weight_decay: float = 0.05      # on matrices and convolution kernels only
    grad_clip: float = 1.0          # max global gradient norm
    seed: int = 0                   # model initialisation and window sampling
    precision: str = "fp32"         # autocast of the aggregator: fp32, bf16, fp16 (fp16 with a gradient scaler)
    log_every: int = 50
    checkpoint_every: int = 250
    validate_every: int = 2000
    validation_scenes: int = 8
    validation_frames: int = 10
    validation_first_seed: int = 900_000  # training-range seeds never cached for training
    layer_scale_init: float = 0.1   # LayerScale of aggregator and camera-trunk blocks at the start (see initialise)
    fov_init: float = 1.0           # field of view (radians) the camera head starts from (see initialise)

    def __post_init__(self):
        if self.precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {self.precision!r}")
        if self.checkpoint_every % self.log_every:
            raise ValueError("checkpoint_every must be a multiple of log_every (log entries end at checkpoints)")
        if self.steps < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("need steps >= 1, warmup_steps >= 0 and lr > 0")

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def initialise(model: VGGT, settings: TrainSettings) -> None:
    """Training-time initialisation of a fresh model (the architecture is unchanged).

    * LayerScale: VGGT's init value 0.01 (meant for long training of a deep model) keeps the alternating
      attention blocks near no-ops for thousands of steps of a short CPU training; the heads then learn from
      the patch embedding alone and the camera head, seeing the same camera token in every frame, predicts
      one pose for all (observed: gammas shrank to 0.005 by step 2000, poses constant). ``layer_scale_init``
      starts the blocks stronger.
    * Field of view: the camera head's FoV goes through a ReLU; a random start below zero is a dead unit
      that never learns (observed for fov_w). The last pose layer's FoV biases start at ``fov_init`` divided
      by the head's iterations (its deltas add up over the iterations), so every iteration starts positive.
    """
    blocks = [*model.aggregator.frame_blocks, *model.aggregator.global_blocks]
    if model.camera_head is not None:
        blocks += list(model.camera_head.trunk)
        iterations = model.camera_head.config.num_iterations
        model.camera_head.pose_branch.fc2.bias[7:9] = settings.fov_init / iterations
    for block in blocks:
        block.ls1.gamma.fill_(settings.layer_scale_init)
        block.ls2.gamma.fill_(settings.layer_scale_init)


def _optimizer(model: VGGT, settings: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.95))


def _validation_sequences(settings: TrainSettings, width: int, height: int) -> List[SceneSequence]:
    """The validation scenes, rendered once per run (every validation scores the same ones)."""
    first = settings.validation_first_seed
    return [generate_sequence(seed, settings.validation_frames, width, height)
            for seed in range(first, first + settings.validation_scenes)]


def _validate(model: VGGT, sequences: List[SceneSequence]) -> Dict[str, float]:
    model.eval()
    try:
        report = evaluate_sequences(model, sequences, with_baseline=False)
    finally:
        model.train()
    return {key: round(report["model"][key], 4) for key in HEADLINE_METRICS}


def train(model: VGGT, cache: Dict[str, np.ndarray], out: Path, settings: TrainSettings = TrainSettings(),
          sampler: WindowSampler = WindowSampler(), loss_weights: LossWeights = LossWeights(),
          device: torch.device = torch.device("cpu"), resume: bool = False, provenance: Optional[dict] = None,
          log_fn: Callable[[str], None] = log.info) -> dict:
    """Train ``model`` in place on windows of ``cache`` (``dataset.load_scene_cache``); returns the log."""
    out = Path(out)
    checkpoint_path = out / "checkpoint.pt"
    scenes, frames, height, width = cache["depth"].shape[:4]
    model.to(device).train()
    optimizer = _optimizer(model, settings)
    autocast_dtype = AUTOCAST_DTYPES[settings.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
    record = {"settings": asdict(settings), "sampler": asdict(sampler), "loss_weights": asdict(loss_weights),
              "model_config": model.config.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
              "cache": {"scenes": int(scenes), "frames": int(frames), "width": int(width), "height": int(height),
                        "seeds": [int(cache["seeds"][0]), int(cache["seeds"][-1])]},
              "provenance": provenance or {}, "sessions": [], "history": [], "validation": [],
              "elapsed": {"wall_s": 0.0, "cpu_s": 0.0}, "skipped_steps": 0, "finished": False}
    record = json.loads(json.dumps(record))  # as it reads back from a checkpoint (tuples become lists)
    start = 0
    if checkpoint_path.exists():
        if not resume:
            raise ValueError(f"{checkpoint_path} exists: pass resume to continue it, or choose another output")
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        saved = json.loads(state["record"])
        if saved["settings"] != record["settings"] or saved["sampler"] != record["sampler"] \
                or saved["model_config"] != record["model_config"]:
            raise ValueError(f"{checkpoint_path} was written with other settings, sampler or architecture")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start, record = int(state["step"]), saved
        log_fn(f"train: resuming at step {start} of {settings.steps}")
    else:
        initialise(model, settings)
    record["sessions"].append({"start_step": start, "command": sys.argv, "device": str(device),
                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "python": platform.python_version(), "machine": platform.machine()})
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    elapsed_before = dict(record["elapsed"])
    sums: Dict[str, float] = {}
    counted = 0
    validation: Optional[List[SceneSequence]] = None

    def save_checkpoint(step: int) -> None:
        record["elapsed"] = {"wall_s": round(elapsed_before["wall_s"] + time.perf_counter() - wall_started, 1),
                             "cpu_s": round(elapsed_before["cpu_s"] + time.process_time() - cpu_started, 1)}
        with atomic_path(checkpoint_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "step": step, "record": json.dumps(record)}, tmp)
        write_text_atomic(out / "train_log.json", json.dumps(record, indent=1))

    for step in range(start, settings.steps):
        lr = settings.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in window_batch(cache, sampler.indices(step, scenes, frames)).items()}
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            predictions = model(batch["images"])
        losses = vggt_loss(predictions, batch, loss_weights)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(losses["loss"]):
            record["skipped_steps"] += 1
            log_fn(f"train: step {step}: non-finite loss, skipped")
        else:
            scaler.scale(losses["loss"]).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
            counted += 1
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            entry = {"step": done, "lr": round(lr, 7),
                     **{k: round(v / max(counted, 1), 5) for k, v in sums.items()},
                     "wall_s": round(elapsed_before["wall_s"] + time.perf_counter() - wall_started, 1)}
            record["history"].append(entry)
            log_fn(f"train: step {done}/{settings.steps} loss {entry.get('loss', math.nan):.4f} (camera "
                   f"{entry.get('camera', math.nan):.4f}, depth {entry.get('depth', math.nan):.4f}, point "
                   f"{entry.get('point', math.nan):.4f}) lr {lr:.2e}, {entry['wall_s']:.0f} s")
            sums, counted = {}, 0
        if done % settings.validate_every == 0 or done == settings.steps:
            if validation is None:
                validation = _validation_sequences(settings, int(width), int(height))
            scores = _validate(model, validation)
            record["validation"].append({"step": done, **scores})
            log_fn(f"train: validation at step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save_checkpoint(done)
    record["finished"] = True
    save_checkpoint(settings.steps)
    save_vggt(model.eval(), out / "model.safetensors")
    return record
