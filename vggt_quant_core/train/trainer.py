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
from torch import nn

from ..data import SceneSequence, generate_sequence
from ..eval.evaluate import BASELINE, CONSTANT_DIRECTION, HEADLINE_METRICS, evaluate_sequences
from ..fileio import atomic_path, write_text_atomic
from ..model import VGGT, save_vggt
from ..model.aggregator import _IMAGENET_MEAN, _IMAGENET_STD
from .correspondence import CorrespondenceProbe, patch_matching_accuracy
from .dataset import WindowSampler, window_batch
from .losses import LossWeights, vggt_loss

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PATCH_INITS = ("random", "whitened")
POS_EMBED_INITS = ("random", "sincos")
SINCOS_WAVELENGTHS = (4.0, 64.0)  # shortest and longest wavelength in patches (geometric in between)
LOGGED_PARTS = ("camera", "pair_rotation", "pair_translation", "depth", "point", "flow", "attention", "camera_points",
                "frame0_points", "match_top1")
WHITENING_PATCHES = 20000       # training patches the whitened patch embedding is computed from


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 16000
    lr: float = 4e-4
    min_lr: float = 1e-5            # cosine decay ends here
    warmup_steps: int = 500         # linear warm-up from 0
    weight_decay: float = 0.05      # on matrices and convolution kernels only
    grad_clip: float = 1.0          # max gradient norm (of all parameters, or of each module: clip_per_module)
    clip_per_module: bool = False   # clip aggregator, each head and the probe separately (the official code)
    camera_lr_scale: float = 1.0    # learning rate of the camera head relative to ``lr``
    patch_init: str = "random"      # "whitened": patch embedding from PCA-whitened training patches
    pos_embed_init: str = "random"  # "sincos": 2-d sine-cosine patch positions as strong as the patch features
    seed: int = 0                   # model initialisation and window sampling
    precision: str = "fp32"         # autocast of the aggregator: fp32, bf16, fp16 (fp16 with a gradient scaler)
    log_every: int = 50
    checkpoint_every: int = 250
    validate_every: int = 2000
    validation_scenes: int = 8
    validation_frames: int = 10
    validation_first_seed: int = 900_000  # training-range seeds never cached for training
    validation_textures: str = "rich"     # texture set of the validation scenes (as the cache's)
    layer_scale_init: float = 0.1   # LayerScale of aggregator and camera-trunk blocks at the start (see initialise)
    fov_init: float = 1.0           # field of view (radians) the camera head starts from (see initialise)

    def __post_init__(self):
        if self.precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {self.precision!r}")
        if self.checkpoint_every % self.log_every:
            raise ValueError("checkpoint_every must be a multiple of log_every (log entries end at checkpoints)")
        if self.steps < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("need steps >= 1, warmup_steps >= 0 and lr > 0")
        if self.patch_init not in PATCH_INITS:
            raise ValueError(f"patch_init must be one of {PATCH_INITS}, got {self.patch_init!r}")
        if self.pos_embed_init not in POS_EMBED_INITS:
            raise ValueError(f"pos_embed_init must be one of {POS_EMBED_INITS}, got {self.pos_embed_init!r}")
        if self.camera_lr_scale <= 0:
            raise ValueError("camera_lr_scale must be > 0")

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def whiten_patch_embedding(model: VGGT, images: np.ndarray, seed: int = 0) -> None:
    """Set the patch embedding (Conv2d ``patch x patch``, stride ``patch``) to PCA whitening of image
    patches: output channel c is the c-th principal component of ``WHITENING_PATCHES`` random patches of
    ``images`` [..., H, W, 3] uint8 (as the model normalises them), scaled to unit variance, centred by
    the bias. Tokens then carry the patches' strongest, smoothest contrasts from step 0, which vary
    continuously with sub-patch shifts (what matching across frames needs)."""
    projection = model.aggregator.patch_embed.patch_embed.proj
    patch, channels = projection.kernel_size[0], projection.out_channels
    frames = images.reshape(-1, *images.shape[-3:])
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(frames), size=WHITENING_PATCHES)
    ys = rng.integers(frames.shape[1] - patch + 1, size=WHITENING_PATCHES)
    xs = rng.integers(frames.shape[2] - patch + 1, size=WHITENING_PATCHES)
    crops = np.stack([frames[i, y:y + patch, x:x + patch] for i, y, x in zip(picks, ys, xs)])
    crops = torch.from_numpy(crops).double().div(255).permute(0, 3, 1, 2)            # [N, 3, p, p]
    mean = torch.tensor(_IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    flat = ((crops - mean) / std).reshape(len(crops), -1)                            # [N, 3*p*p], conv order
    centre = flat.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((flat - centre).T))
    order = eigenvalues.argsort(descending=True)[:channels]
    filters = eigenvectors[:, order].T / eigenvalues[order].clamp(min=1e-6).sqrt()[:, None]  # [C, 3*p*p]
    projection.weight.copy_(filters.reshape(projection.weight.shape).float())
    projection.bias.copy_(-(filters @ centre).float())


@torch.no_grad()
def sincos_position_embedding(model: VGGT) -> None:
    """Set the patch position embedding to 2-d sines and cosines of the patch column and row (a quarter
    of the channels each for sin x, cos x, sin y, cos y; wavelengths ``SINCOS_WAVELENGTHS``), amplitude
    sqrt(2) so each channel has about unit variance, like whitened patch features.

    Why: the aggregator's RoPE acts on queries and keys only, so an attention output (a mix of values)
    says *what* it matched, not *where*; DINO's absolute position embedding is what values can carry, and
    at its usual start (std 0.02) it is drowned by the patch features. Long wavelengths keep a mix of
    neighbouring positions close to the position of the mix: matched displacement becomes linear in the
    attention output."""
    pos_embed = model.aggregator.patch_embed.pos_embed                  # [1, 1 + side*side, C]
    channels = pos_embed.shape[-1]
    side = int(round((pos_embed.shape[1] - 1) ** 0.5))
    count = channels // 4
    wavelengths = torch.logspace(math.log10(SINCOS_WAVELENGTHS[0]), math.log10(SINCOS_WAVELENGTHS[1]), count)
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
    phases = [2 * math.pi * coordinate.reshape(-1, 1) / wavelengths for coordinate in (cols, rows)]
    table = torch.cat([f(p) for p in phases for f in (torch.sin, torch.cos)], dim=1) * math.sqrt(2)
    pos_embed.zero_()
    pos_embed[0, 1:, :table.shape[1]] = table


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


def _trained_modules(model: VGGT, probe: Optional[CorrespondenceProbe]) -> Dict[str, nn.Module]:
    """The units of per-module clipping and learning rates: aggregator, each head, the probe."""
    modules = {name: module for name, module in model.named_children() if module is not None}
    if probe is not None:
        modules["correspondence_probe"] = probe
    return modules


def _optimizer(modules: Dict[str, nn.Module], settings: TrainSettings) -> torch.optim.Optimizer:
    groups = []
    for name, module in modules.items():
        scale = settings.camera_lr_scale if name == "camera_head" else 1.0
        params = [p for p in module.parameters() if p.requires_grad]
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay,
                    "lr_scale": scale},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_scale": scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr, betas=(0.9, 0.95))


def _clip(modules: Dict[str, nn.Module], settings: TrainSettings) -> Dict[str, float]:
    """Clip gradients (globally, or per module) and return the norms before clipping."""
    if not settings.clip_per_module:
        params = [p for m in modules.values() for p in m.parameters()]
        return {"grad_norm": float(torch.nn.utils.clip_grad_norm_(params, settings.grad_clip))}
    return {f"grad_norm_{name}": float(torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip))
            for name, module in modules.items()}


def training_forward(model: VGGT, images: torch.Tensor, dense: bool) -> Dict[str, torch.Tensor]:
    """The model's training-mode predictions; without ``dense`` only the aggregator's last layer and the
    camera head run (pose-first stages: about 5x cheaper per step than all heads)."""
    if dense or model.camera_head is None:
        return model(images)
    tokens, _ = model.aggregator(images, keep_layers=[-1])
    with torch.autocast(device_type=images.device.type, enabled=False):
        pose_enc_list = model.camera_head([t if t is None else t.float() for t in tokens])
    return {"pose_enc": pose_enc_list[-1], "pose_enc_list": pose_enc_list}


def validation_sequences(settings: TrainSettings, width: int, height: int, textures: str) -> List[SceneSequence]:
    """The validation scenes (held-out seeds from ``validation_first_seed``), rendered once per run (every
    validation scores the same ones)."""
    first = settings.validation_first_seed
    return [generate_sequence(seed, settings.validation_frames, width, height, textures=textures)
            for seed in range(first, first + settings.validation_scenes)]


def validation_scores(model: VGGT, sequences: List[SceneSequence]) -> Dict[str, float]:
    """Headline metrics, the mean rotation error of all frame pairs (the model's and the identity's) and the
    mean translation-direction error (the model's and that of the best constant direction)."""
    model.eval()
    try:
        report = evaluate_sequences(model, sequences, with_baseline=True)
    finally:
        model.train()
    scores = {key: round(report["model"][key], 4)
              for key in (*HEADLINE_METRICS, "rotation_error_deg_mean", "translation_error_deg_mean")}
    scores["identity_rotation_error_deg_mean"] = round(report[BASELINE]["rotation_error_deg_mean"], 4)
    scores["constant_translation_error_deg_mean"] = round(report[CONSTANT_DIRECTION]["translation_error_deg_mean"], 4)
    return scores


def train(model: VGGT, cache: Dict[str, np.ndarray], out: Path, settings: TrainSettings = TrainSettings(),
          sampler: WindowSampler = WindowSampler(), loss_weights: LossWeights = LossWeights(),
          device: torch.device = torch.device("cpu"), resume: bool = False, provenance: Optional[dict] = None,
          pretrained: bool = False, log_fn: Callable[[str], None] = log.info) -> dict:
    """Train ``model`` in place on windows of ``cache`` (``dataset.load_scene_cache``); returns the log.

    A fresh model is initialised first (``initialise``, and ``whiten_patch_embedding`` when asked);
    ``pretrained`` (a later curriculum stage) keeps the weights it has.
    """
    out = Path(out)
    checkpoint_path = out / "checkpoint.pt"
    scenes, frames, height, width = cache["depth"].shape[:4]
    model.to(device).train()
    probe = None
    if any(loss_weights.probe_weights.values()):
        probe = CorrespondenceProbe(model, loss_weights.correspondence_block, loss_weights.attention_head,
                                    loss_weights.attention_all_keys,
                                    loss_weights.camera_points_block if loss_weights.camera_points else None,
                                    loss_weights.frame0_points_block if loss_weights.frame0_points else None
                                    ).to(device)
    modules = _trained_modules(model, probe)
    optimizer = _optimizer(modules, settings)
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
                or saved["model_config"] != record["model_config"] or saved["loss_weights"] != record["loss_weights"]:
            raise ValueError(f"{checkpoint_path} was written with other settings, sampler, losses or architecture")
        model.load_state_dict(state["model"])
        if probe is not None:
            probe.load_state_dict(state["probe"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start, record = int(state["step"]), saved
        log_fn(f"train: resuming at step {start} of {settings.steps}")
    elif not pretrained:
        initialise(model, settings)
        if settings.patch_init == "whitened":
            whiten_patch_embedding(model, cache["images"], settings.seed)
        if settings.pos_embed_init == "sincos":
            sincos_position_embedding(model)
    record["sessions"].append({"start_step": start, "command": sys.argv, "device": str(device),
                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "python": platform.python_version(), "machine": platform.machine()})
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    elapsed_before = dict(record["elapsed"])
    sums: Dict[str, float] = {}
    counted = 0
    match_top1: Optional[float] = None  # the supervised head's matching, measured on each log interval's last batch
    validation: Optional[List[SceneSequence]] = None

    def save_checkpoint(step: int) -> None:
        record["elapsed"] = {"wall_s": round(elapsed_before["wall_s"] + time.perf_counter() - wall_started, 1),
                             "cpu_s": round(elapsed_before["cpu_s"] + time.process_time() - cpu_started, 1)}
        with atomic_path(checkpoint_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "probe": probe.state_dict() if probe is not None else {},
                        "scaler": scaler.state_dict(), "step": step, "record": json.dumps(record)}, tmp)
        write_text_atomic(out / "train_log.json", json.dumps(record, indent=1))

    for step in range(start, settings.steps):
        lr = settings.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        batch = {k: v.to(device) for k, v in window_batch(cache, sampler.indices(step, scenes, frames)).items()}
        if probe is not None:
            probe.attach()
        try:
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                predictions = training_forward(model, batch["images"], loss_weights.dense)
            losses = vggt_loss(predictions, batch, loss_weights)
            if probe is not None:
                auxiliary = probe.losses(batch, loss_weights.probe_weights)
                for name, value in auxiliary.items():
                    losses["loss"] = losses["loss"] + getattr(loss_weights, name) * value
                losses.update(auxiliary)
                if loss_weights.attention and (step + 1) % settings.log_every == 0:
                    with torch.no_grad():
                        match_top1 = patch_matching_accuracy(probe, batch)
        finally:
            if probe is not None:
                probe.detach()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(losses["loss"]):
            record["skipped_steps"] += 1
            log_fn(f"train: step {step}: non-finite loss, skipped")
        else:
            scaler.scale(losses["loss"]).backward()
            scaler.unscale_(optimizer)
            norms = _clip(modules, settings)
            scaler.step(optimizer)
            scaler.update()
            for name, value in {**{k: float(v.detach()) for k, v in losses.items()}, **norms}.items():
                sums[name] = sums.get(name, 0.0) + value
            counted += 1
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            entry = {"step": done, "lr": round(lr, 7),
                     **{k: round(v / max(counted, 1), 5) for k, v in sums.items()},
                     **({"match_top1": round(match_top1, 4)} if match_top1 is not None else {}),
                     "wall_s": round(elapsed_before["wall_s"] + time.perf_counter() - wall_started, 1)}
            record["history"].append(entry)
            parts = ", ".join(f"{k} {entry[k]:.4f}" for k in LOGGED_PARTS if k in entry)
            log_fn(f"train: step {done}/{settings.steps} loss {entry.get('loss', math.nan):.4f} ({parts}) "
                   f"lr {lr:.2e}, {entry['wall_s']:.0f} s")
            sums, counted = {}, 0
        if done % settings.validate_every == 0 or done == settings.steps:
            if validation is None:
                validation = validation_sequences(settings, int(width), int(height), settings.validation_textures)
            scores = validation_scores(model, validation)
            record["validation"].append({"step": done, **scores})
            log_fn(f"train: validation at step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save_checkpoint(done)
    record["finished"] = True
    save_checkpoint(settings.steps)
    save_vggt(model.eval(), out / "model.safetensors")
    return record
