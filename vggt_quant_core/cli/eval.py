"""``vggt-quant eval``: accuracy of a model on held-out generated scenes, next to a trivial baseline."""

import argparse
import json
import logging
from pathlib import Path

from ..data import HELD_OUT_SEED_BASE, TRAJECTORIES
from ..data.scenes import TEXTURE_SETS
from ..data.preprocess import default_height
from ..eval.evaluate import BASELINE_DESCRIPTION, evaluate_model, format_accuracy_table
from ..eval.metrics import __doc__ as METRIC_DEFINITIONS
from ..fileio import write_text_atomic
from ..inference import PRECISIONS, resolve_device
from ..presets import DEFAULT_PRESET, PRESETS, load_model_spec

log = logging.getLogger("vggt_quant")


def add_parser(commands) -> None:
    parser = commands.add_parser("eval", help="accuracy on held-out generated scenes with ground truth",
                                 description="Render held-out procedural scenes, reconstruct them, and report pose "
                                             "AUC, depth AbsRel/delta and point Acc/Comp/NC for the model and a "
                                             "trivial baseline (identity poses, constant depth).")
    parser.add_argument("--model", default=DEFAULT_PRESET,
                        help=f"preset name ({', '.join(sorted(PRESETS))}) or checkpoint path (default: %(default)s)")
    parser.add_argument("--scenes", type=int, default=10, help="number of scenes (default 10)")
    parser.add_argument("--frames", type=int, default=10, help="frames per scene (default 10, as CO3D evaluation)")
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_SEED_BASE,
                        help=f"seed of the first scene (default {HELD_OUT_SEED_BASE}: seeds from there on are held "
                             "out of training and calibration)")
    parser.add_argument("--trajectory", default="any", choices=["any", *sorted(TRAJECTORIES)])
    parser.add_argument("--textures", default="classic", choices=sorted(TEXTURE_SETS),
                        help="scene texture set: classic (periodic patterns) or rich (noise and photographs)")
    parser.add_argument("--width", type=int, help="render width (default: the model's input width)")
    parser.add_argument("--height", type=int, help="render height (default: 3/4 of the width, a patch multiple)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS])
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.scenes < 1:
        raise ValueError("--scenes must be at least 1")
    device = resolve_device(args.device)
    model, trained_size, description = load_model_spec(args.model, device)
    patch = model.config.patch_size
    width = args.width or trained_size
    height = args.height or default_height(width, patch)
    seeds = list(range(args.first_seed, args.first_seed + args.scenes))
    log.info("evaluating %s on %d scenes x %d frames of %dx%d (seeds %d-%d)", description, args.scenes,
             args.frames, width, height, seeds[0], seeds[-1])
    report = evaluate_model(model, seeds, args.frames, width, height, args.trajectory, args.precision,
                            args.textures)
    report = {"model_name": description, "device": str(device), "precision": args.precision,
              "scenes": args.scenes, "frames": args.frames, "image_size_wh": [width, height],
              "seeds": [seeds[0], seeds[-1]], "trajectory": args.trajectory, "textures": args.textures,
              "baseline": BASELINE_DESCRIPTION, "definitions": METRIC_DEFINITIONS, **report}
    print(f"{description}: {args.scenes} held-out scenes x {args.frames} frames, {width}x{height}\n"
          + format_accuracy_table(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))
        print(f"report: {args.json}")
    return 0
