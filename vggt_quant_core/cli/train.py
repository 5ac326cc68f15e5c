"""``vggt-quant train``: train a VGGT-architecture preset on generated scenes (how vggt-tiny-synth was made)."""

import argparse
import logging
from pathlib import Path

import torch

from ..inference import resolve_device
from ..data.preprocess import default_height
from ..data.scenes import TEXTURE_SETS
from ..model import VGGT, load_vggt
from ..presets import PRESETS, TRAINED_DEFAULT, get_preset
from ..train.dataset import SAMPLINGS, CacheSpec, WindowSampler, build_scene_cache, load_scene_cache
from ..train.losses import LossWeights
from ..train.trainer import AUTOCAST_DTYPES, PATCH_INITS, TrainSettings, train

log = logging.getLogger("vggt_quant")


def add_parser(commands) -> None:
    parser = commands.add_parser("train", help="train a small VGGT on generated scenes (resumable)",
                                 description="Render training scenes once into a cache, then train the architecture "
                                             "of a preset from scratch with VGGT's losses (camera; confidence-aware "
                                             "depth and point with gradient terms). The defaults are the recipe of "
                                             f"{TRAINED_DEFAULT}. Interrupted runs continue with --resume.")
    parser.add_argument("--out", type=Path, default=Path(f"outputs/train/{TRAINED_DEFAULT}"),
                        help="run directory: checkpoint.pt, train_log.json, model.safetensors")
    parser.add_argument("--architecture", default=TRAINED_DEFAULT, choices=sorted(PRESETS),
                        help="preset whose architecture and input width to train (default %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path("outputs/train/scene_cache"),
                        help="scene cache directory (built if missing; default %(default)s)")
    cache_defaults = CacheSpec()
    parser.add_argument("--scenes", type=int, default=cache_defaults.scenes, help="training scenes (seeds 0..N-1)")
    parser.add_argument("--scene-frames", type=int, default=cache_defaults.frames,
                        help="frames rendered per scene (windows are drawn from them)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that render the scene cache in parallel (one core each)")
    parser.add_argument("--textures", default=cache_defaults.textures, choices=sorted(TEXTURE_SETS),
                        help="texture set of the training and validation scenes (default %(default)s)")
    settings, sampler, weights = TrainSettings(), WindowSampler(), LossWeights()
    parser.add_argument("--steps", type=int, default=settings.steps)
    parser.add_argument("--batch", type=int, default=sampler.batch, help="windows per step")
    parser.add_argument("--min-frames", type=int, default=sampler.min_frames)
    parser.add_argument("--max-frames", type=int, default=sampler.max_frames)
    parser.add_argument("--strides", default=",".join(map(str, sampler.strides)),
                        help="comma-separated frame strides of contiguous windows (default %(default)s)")
    parser.add_argument("--sampling", default=sampler.sampling, choices=SAMPLINGS,
                        help="contiguous frames at a stride, or random frame subsets across the whole sequence "
                             "(default %(default)s)")
    parser.add_argument("--curriculum-steps", type=int, default=sampler.curriculum_steps,
                        help="subset sampling: steps over which the windows' stretch grows from "
                             f"{sampler.curriculum_start:.0%} of the sequence to all of it (0 = all from the start)")
    parser.add_argument("--camera-only", action="store_true",
                        help="pose-first stage: camera loss (+ correspondence losses) only, dense heads not run")
    parser.add_argument("--flow", type=float, default=weights.flow,
                        help="weight of the flow-to-frame-0 loss on patch tokens (0 = off)")
    parser.add_argument("--attention", type=float, default=weights.attention,
                        help="weight of the attention supervision towards frame-0 correspondences (0 = off)")
    parser.add_argument("--correspondence-block", type=int, default=weights.correspondence_block,
                        help="global block the correspondence losses read (default %(default)s)")
    parser.add_argument("--pair", type=float, default=weights.pair,
                        help="weight of the relative-pose angle loss over every ordered frame pair (0 = off)")
    parser.add_argument("--camera-points", type=float, default=weights.camera_points,
                        help="weight of the probe of each patch's 3D point in its own camera (0 = off), read "
                             f"after global block {weights.camera_points_block}")
    parser.add_argument("--frame0-points", type=float, default=weights.frame0_points,
                        help="weight of the probe of each patch's 3D point in frame 0's camera (0 = off), read "
                             f"after global block {weights.frame0_points_block}")
    parser.add_argument("--patch-init", default=settings.patch_init, choices=PATCH_INITS,
                        help="patch embedding start: random, or PCA-whitened training patches")
    parser.add_argument("--clip-per-module", action="store_true",
                        help="clip the gradient norm of aggregator and each head separately (official code)")
    parser.add_argument("--grad-clip", type=float, default=settings.grad_clip)
    parser.add_argument("--camera-lr-scale", type=float, default=settings.camera_lr_scale,
                        help="camera head learning rate relative to --lr")
    parser.add_argument("--init-from", type=Path,
                        help="start from these weights (a previous curriculum stage) instead of a fresh model")
    parser.add_argument("--validation-frames", type=int, default=settings.validation_frames)
    parser.add_argument("--validation-scenes", type=int, default=settings.validation_scenes)
    parser.add_argument("--lr", type=float, default=settings.lr, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup-steps", type=int, default=settings.warmup_steps)
    parser.add_argument("--validate-every", type=int, default=settings.validate_every,
                        help="steps between validations on unseen training-range scenes")
    parser.add_argument("--checkpoint-every", type=int, default=settings.checkpoint_every)
    parser.add_argument("--log-every", type=int, default=settings.log_every)
    parser.add_argument("--seed", type=int, default=settings.seed)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")
    parser.add_argument("--precision", default="fp32", choices=sorted(AUTOCAST_DTYPES),
                        help="aggregator autocast (bf16 or fp16 on GPUs; fp32 on CPUs)")
    parser.add_argument("--threads", type=int, help="CPU threads (on a shared machine 1 is often fastest)")
    parser.add_argument("--resume", action="store_true", help="continue <out>/checkpoint.pt")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.architecture)
    width = preset.image_size
    spec = CacheSpec(scenes=args.scenes, frames=args.scene_frames, width=width,
                     height=default_height(width, preset.config.patch_size), textures=args.textures)
    build_scene_cache(args.cache, spec, workers=args.workers)
    cache = load_scene_cache(args.cache)
    settings = TrainSettings(steps=args.steps, lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
                             precision=args.precision, log_every=args.log_every,
                             checkpoint_every=args.checkpoint_every, validate_every=args.validate_every,
                             grad_clip=args.grad_clip, clip_per_module=args.clip_per_module,
                             camera_lr_scale=args.camera_lr_scale, patch_init=args.patch_init,
                             validation_frames=args.validation_frames, validation_scenes=args.validation_scenes,
                             validation_textures=args.textures)
    sampler = WindowSampler(batch=args.batch, min_frames=args.min_frames, max_frames=args.max_frames,
                            strides=tuple(int(s) for s in args.strides.split(",")), seed=args.seed,
                            sampling=args.sampling, curriculum_steps=args.curriculum_steps)
    loss_weights = LossWeights(depth=0.0 if args.camera_only else 1.0, point=0.0 if args.camera_only else 1.0,
                               flow=args.flow, attention=args.attention,
                               correspondence_block=args.correspondence_block, pair=args.pair,
                               camera_points=args.camera_points, frame0_points=args.frame0_points)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.init_from is not None:
        model = load_vggt(args.init_from, config=preset.config)
    else:
        model = VGGT(preset.config)
    log.info("train: %s architecture (%.2fM parameters) on %d cached scenes, %d steps on %s",
             preset.name, sum(p.numel() for p in model.parameters()) / 1e6, args.scenes, args.steps, device)
    record = train(model, cache, args.out, settings, sampler, loss_weights, device=device, resume=args.resume,
                   pretrained=args.init_from is not None,
                   provenance={"architecture": preset.name, "cache": str(args.cache),
                               "init_from": str(args.init_from) if args.init_from else None})
    final = record["validation"][-1] if record["validation"] else {}
    print(f"trained {args.out / 'model.safetensors'} in {record['elapsed']['wall_s'] / 3600:.2f} h "
          f"(CPU {record['elapsed']['cpu_s'] / 3600:.2f} h); validation: "
          + ", ".join(f"{k} {v:.3f}" for k, v in final.items() if k != "step"))
    return 0
