"""Side-by-side study of the training levers that should make camera pose learnable (issue: a default
model that reconstructs). Each named recipe trains the ``vggt-tiny-synth`` architecture pose-first
(camera loss only, dense heads off) on windows of one scene cache (2-4 contiguous frames, or for the
``sampling*`` recipes random 2-10-frame subsets of the whole sequence), with the same seed, steps and
validation scenes; ``--report`` tabulates held-out pose (AUC@30, mean relative rotation error against the
identity's, translation-direction error against one constant direction's) at every validation of every
run found.

Run two recipes at once, one thread each, on a 2-core machine (they then share nothing but memory):

    python benchmarks/pose_levers.py --recipe baseline --cache DIR --out RUNS/baseline --threads 1 &
    python benchmarks/pose_levers.py --recipe levers --cache DIR --out RUNS/levers --threads 1 &
    python benchmarks/pose_levers.py --report RUNS --held-out-scenes 48 --json benchmarks/results/pose_levers.json

Runs resume (``--resume``) from their checkpoint; write them outside the repository.
"""

import argparse
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from typing import Optional

import numpy as np
import torch

from vggt_quant_core.eval.metrics import pose_metrics, relative_pose_errors
from vggt_quant_core.geometry import pose_encoding_to_extri_intri
from vggt_quant_core.model import VGGT
from vggt_quant_core.presets import TRAINED_DEFAULT, get_preset
from vggt_quant_core.train.dataset import WindowSampler, load_scene_cache, window_batch
from vggt_quant_core.train.losses import LossWeights
from vggt_quant_core.train.trainer import (TrainSettings, train, training_forward, validation_scores,
                                           validation_sequences)
from reporting import emit  # benchmarks/reporting.py (the script's folder is on sys.path)

POSE_FIRST = LossWeights(depth=0.0, point=0.0)
ALL_LEVERS = (TrainSettings(patch_init="whitened", clip_per_module=True),
              replace(POSE_FIRST, flow=1.0, attention=1.0))
SAMPLER = WindowSampler(batch=8, min_frames=2, max_frames=4, strides=(1, 2, 3))
# Random frame subsets across the whole cached sequence, 2-10 frames (windows like a 10-frame evaluation's);
# batch 4 of 6 frames on average costs a step what SAMPLER's batch 8 of 3 frames does.
SUBSETS = WindowSampler(batch=4, min_frames=2, max_frames=10, sampling="subset")
PAIR_LOSS = replace(ALL_LEVERS[1], pair=1.0)
POINT_PROBES = replace(PAIR_LOSS, camera_points=1.0, camera_points_block=1, frame0_points=1.0, frame0_points_block=4)


@dataclass(frozen=True)
class Recipe:
    settings: TrainSettings
    weights: LossWeights
    description: str
    sampler: WindowSampler = SAMPLER


# Steps, seed and validation are set by the command line.
RECIPES = {
    "baseline": Recipe(TrainSettings(), POSE_FIRST,
                       "v1 recipe (global clip, random patch embedding, camera loss only)"),
    "levers": Recipe(*ALL_LEVERS, "whitened patch embedding + per-module clipping + flow and attention supervision"),
    "levers-no-attention": Recipe(ALL_LEVERS[0], replace(ALL_LEVERS[1], attention=0.0), "levers without attention"),
    "levers-no-flow": Recipe(ALL_LEVERS[0], replace(ALL_LEVERS[1], flow=0.0), "levers without flow"),
    "levers-random-init": Recipe(replace(ALL_LEVERS[0], patch_init="random"), ALL_LEVERS[1],
                                 "levers with the random patch embedding"),
    "whitened": Recipe(TrainSettings(patch_init="whitened", clip_per_module=True), POSE_FIRST,
                       "whitened patch embedding + per-module clipping only"),
    "levers-positions": Recipe(replace(ALL_LEVERS[0], pos_embed_init="sincos"),
                               replace(ALL_LEVERS[1], attention_all_keys=True),
                               "levers + sine-cosine position embedding + attention supervised over all keys"),
    "levers-positions-block0": Recipe(replace(ALL_LEVERS[0], pos_embed_init="sincos"),
                                      replace(ALL_LEVERS[1], attention_all_keys=True, correspondence_block=0),
                                      "levers-positions with both correspondence losses on global block 0"),
    "sampling": Recipe(*ALL_LEVERS, "levers on random 2-10-frame subsets of the whole sequence", SUBSETS),
    "sampling-pair": Recipe(ALL_LEVERS[0], PAIR_LOSS, "sampling + relative-pose angle loss of every frame pair",
                            SUBSETS),
    "sampling-pair-points": Recipe(ALL_LEVERS[0], POINT_PROBES,
                                   "sampling-pair + 3D point probes (own camera after global block 1, frame 0's "
                                   "after block 4)", SUBSETS),
}
# Held-out windows of the training shape: 3 frames at each stride, 4 starts per held-out sequence.
WINDOW_STRIDES, WINDOW_FRAMES, WINDOW_STARTS = (1, 2, 3), 3, (0, 4, 8, 12)


@torch.no_grad()
def window_pose_scores(model: VGGT, cache: dict) -> dict:
    """Pose of held-out windows shaped like the training windows: AUC@30 and mean rotation error of all
    frame pairs, per stride and pooled, the model's next to identity poses'."""
    model.eval()
    scores = {}
    for stride in WINDOW_STRIDES:
        errors = {"model": ([], []), "identity": ([], [])}
        for scene in range(len(cache["seeds"])):
            for start in WINDOW_STARTS:
                frames = np.array([start + stride * k for k in range(WINDOW_FRAMES)])
                batch = window_batch(cache, [np.concatenate([[scene], frames])])
                pose_enc = training_forward(model, batch["images"], dense=False)["pose_enc"]
                extrinsics, _ = pose_encoding_to_extri_intri(pose_enc, batch["images"].shape[-2:])
                for name, prediction in (("model", extrinsics[0]), ("identity", torch.eye(3, 4).expand(3, 3, 4))):
                    rotation, translation = relative_pose_errors(prediction.numpy(), batch["extrinsics"][0].numpy())
                    errors[name][0].append(rotation)
                    errors[name][1].append(translation)
        for name, (rotation, translation) in errors.items():
            metrics = pose_metrics(np.concatenate(rotation), np.concatenate(translation))
            scores[f"stride{stride}_{name}"] = {
                "auc@30": round(metrics["auc@30"], 4),
                "rotation_error_deg": round(metrics["rotation_error_deg_mean"], 3),
                "translation_error_deg": round(metrics["translation_error_deg_mean"], 3)}
    model.train()
    return scores


def run_recipe(args: argparse.Namespace) -> None:
    recipe = RECIPES[args.recipe]
    settings = replace(recipe.settings, steps=args.steps, seed=args.seed, validate_every=args.validate_every,
                       validation_scenes=args.validation_scenes, validation_frames=args.validation_frames)
    torch.manual_seed(args.seed)
    model = VGGT(get_preset(TRAINED_DEFAULT).config)
    train(model, load_scene_cache(args.cache), args.out, settings, replace(recipe.sampler, seed=args.seed),
          recipe.weights, resume=args.resume, provenance={"recipe": args.recipe, "cache": str(args.cache)})


def report(runs: Path, held_out: Optional[Path], held_out_scenes: int = 0) -> dict:
    """Every run below ``runs``: its validations; with ``held_out``, its checkpoint on held-out windows of the
    training shape; with ``held_out_scenes``, its checkpoint on that many held-out 10-frame sequences scored as
    the validation scores them (more scenes than a validation, for a steadier final figure)."""
    rows, windows, ten_frames = [], {}, {}
    cache = load_scene_cache(held_out) if held_out else None
    sequences = None
    for log_path in sorted(runs.glob("*/train_log.json")):
        record = json.loads(log_path.read_text())
        recipe = record["provenance"].get("recipe", log_path.parent.name)
        last = record["history"][-1] if record["history"] else {}
        if cache is not None or held_out_scenes:
            model = VGGT(get_preset(TRAINED_DEFAULT).config)
            state = torch.load(log_path.parent / "checkpoint.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
        if cache is not None:
            windows[recipe] = {"step": int(state["step"]), **window_pose_scores(model, cache)}
        if held_out_scenes:
            if sequences is None:
                settings = replace(TrainSettings(**record["settings"]), validation_scenes=held_out_scenes)
                sequences = validation_sequences(settings, record["cache"]["width"], record["cache"]["height"],
                                                 settings.validation_textures)
            ten_frames[recipe] = {"step": int(state["step"]), **validation_scores(model, sequences)}
        for scores in record["validation"]:
            rows.append({"recipe": recipe, "step": scores["step"], "auc@30": scores["auc@30"],
                         "rotation_error_deg": scores["rotation_error_deg_mean"],
                         "identity_rotation_error_deg": scores["identity_rotation_error_deg_mean"],
                         "translation_error_deg": scores.get("translation_error_deg_mean"),
                         "constant_translation_error_deg": scores.get("constant_translation_error_deg_mean"),
                         "match_top1_last": last.get("match_top1"), "wall_s": record["elapsed"]["wall_s"]})
    return {"recipes": {name: {"description": recipe.description, "sampler": asdict(recipe.sampler)}
                        for name, recipe in RECIPES.items()},
            "validation_10_frames": rows, "held_out_windows": windows, "held_out_10_frames": ten_frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES))
    parser.add_argument("--cache", type=Path, help="scene cache (vggt-quant train builds one)")
    parser.add_argument("--out", type=Path, help="run directory")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--validation-scenes", type=int, default=8)
    parser.add_argument("--validation-frames", type=int, default=10)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report", type=Path, help="tabulate every run below this folder instead of training")
    parser.add_argument("--held-out", type=Path,
                        help="with --report: a cache of held-out seeds whose training-shaped windows score each run")
    parser.add_argument("--held-out-scenes", type=int, default=0,
                        help="with --report: score each run's checkpoint on this many held-out 10-frame sequences")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:
        emit(report(args.report, args.held_out, args.held_out_scenes), args.json)
        return
    if not (args.recipe and args.cache and args.out):
        parser.error("training needs --recipe, --cache and --out (or --report RUNS)")
    run_recipe(args)


if __name__ == "__main__":
    main()
