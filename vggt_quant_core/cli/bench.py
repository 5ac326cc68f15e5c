"""``vggt-quant bench``: benchmarks that print JSON (ratios measured side by side in one run)."""

import argparse
import json
import logging
from pathlib import Path

import torch

from ..eval import speed_bench
from ..eval.fidelity_bench import format_table, run_fidelity
from ..fileio import write_text_atomic
from ..inference import PRECISIONS, resolve_device
from ..kernels.allocator import tune_glibc_malloc
from ..kernels import set_compile
from ..model import VGGT, VGGTConfig
from ..presets import get_preset, load_model_spec
from ..quant import RECIPES, parse_bits, quant_record
from ..quant.quantizers import NUMBER_FORMATS
from . import bench_accuracy

log = logging.getLogger("vggt_quant")


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="benchmarks of quantized models: fidelity, accuracy, speed")
    kinds = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    fidelity = kinds.add_parser("fidelity", help="output error of every method x bits vs full precision",
                                description="Quantize the model with each method and bit-width and report the "
                                            "relative L2 error and SQNR of its outputs against the same model in "
                                            "full precision, plus activation statistics before/after the "
                                            "transforms.")
    fidelity.add_argument("--model", default="vggt-outlier", help="preset name or checkpoint path "
                                                                  "(default: vggt-outlier)")
    fidelity.add_argument("--methods", default="rtn,smoothquant,quarot,dsfq",
                          help=f"comma-separated, from {sorted(RECIPES)}")
    fidelity.add_argument("--bits", default="w8a8,w6a6,w4a8,w4a4", help="comma-separated wXaY")
    fidelity.add_argument("--formats", default="int",
                          help=f"comma-separated number formats, from {', '.join(NUMBER_FORMATS)}: e4m3 (FP8) "
                               "adds a w8a8-e4m3 row next to each w8a8 one (default: int)")
    fidelity.add_argument("--frames", type=int, default=4, help="frames per window")
    fidelity.add_argument("--windows", type=int, default=2, help="evaluation windows (rendered scenes)")
    fidelity.add_argument("--calibration-windows", type=int, default=2,
                          help="windows for activation statistics (smoothing)")
    fidelity.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                          help="autocast of the quantized models (the FP model compared with runs in fp32)")
    fidelity.add_argument("--fused-residual", action="store_true",
                          help="fuse attn.proj/mlp.fc2's epilogue with LayerScale + residual (as bench speed does)")
    fidelity.add_argument("--quantize-dino", action="store_true",
                          help="quantize DINOv2's block Linears too (QuantConfig.include_patch_embed)")
    fidelity.add_argument("--device", default="auto")
    fidelity.add_argument("--json", type=Path, help="write the report here")
    fidelity.set_defaults(run=run_fidelity_command)
    bench_accuracy.add_parser(kinds)
    add_speed_parser(kinds)


def add_speed_parser(kinds) -> None:
    speed = kinds.add_parser("speed", help="latency and memory: fp32, bf16 and quantized, side by side",
                             description="Time the VGGT-1B aggregator Linear shapes (qkv, proj, fc1, fc2 at M = "
                                         "frames x tokens; random weights) and a whole model and its aggregator "
                                         "in fp32, bf16 and every quantized config, interleaved in one run with "
                                         "warm-up and medians; report weight bytes and peak memory. CPU only "
                                         "for now (GPU kernels: benchmarks/gpu_kernels.py).")
    speed.add_argument("--model", default="vggt-outlier",
                       help="preset name or float checkpoint for the whole-model part (default: vggt-outlier; "
                            "VGGT-1B takes minutes per forward on a CPU)")
    speed.add_argument("--frames", type=int, default=10, help="frames for the Linear shapes (default 10)")
    speed.add_argument("--image", default="518x518",
                       help="HxW giving the tokens per frame of the Linear shapes (518x518: 1374, 392x518: 1041)")
    speed.add_argument("--model-frames", type=int, default=4, help="frames for the whole-model part (default 4)")
    speed.add_argument("--model-image", help="HxW images of the model part, e.g. 392x518 (default: the model's "
                                             "square size)")
    speed.add_argument("--float-parts", default="auto",
                       help="comma-separated autocast(s) each quantized config runs under: its float parts (DINO, "
                            "attention, norms) in the model part, its output dtype (and proj/fc2 input dtype) in the "
                            "linears part: fp32, bf16; auto = bf16 where the CPU has AMX-BF16, else fp32")
    speed.add_argument("--random-weights", action="store_true",
                       help="build the preset with random weights (timing does not depend on them; e.g. vggt-1b "
                            "without its weights file)")
    speed.add_argument("--methods", default="rtn,quarot", help=f"comma-separated, from {sorted(RECIPES)}")
    speed.add_argument("--bits", default="w8a8,w4a8,w4a4", help="comma-separated wXaY")
    speed.add_argument("--backend", default="auto",
                       help="comma-separated QuantLinear backends to time each config with (auto, reference, "
                            "or a registered name)")
    speed.add_argument("--fused-residual", default="on", choices=("on", "off", "both"),
                       help="model part: fuse attn.proj/mlp.fc2's dequant epilogue with LayerScale + residual add "
                            "(quant.fuse_residual_epilogues); both: time each quantized config with and without")
    speed.add_argument("--quantize-dino", default="off", choices=("on", "off", "both"),
                       help="model part: quantize DINOv2's block Linears too (QuantConfig.include_patch_embed; 96 "
                            "more in VGGT-1B); both: time each quantized config with and without")
    speed.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median reported)")
    speed.add_argument("--threads", type=int, help="torch threads (default: torch's, here the core count)")
    speed.add_argument("--parts", default="linears,aggregator,model",
                       help="which parts: linears, aggregator, model, checkpoint")
    speed.add_argument("--no-compile", action="store_true", help="eager element-wise passes (no torch.compile)")
    speed.add_argument("--default-allocator", action="store_true",
                       help="keep glibc's default malloc thresholds (see kernels/allocator.py)")
    speed.add_argument("--json", type=Path, help="write the report here")
    speed.set_defaults(run=run_speed_command)


_ON_OFF_BOTH = {"on": (True,), "off": (False,), "both": (False, True)}


def run_speed_command(args: argparse.Namespace) -> int:
    quant_configs = [(m.strip(), parse_bits(b)) for m in args.methods.split(",") if m.strip()
                     for b in args.bits.split(",") if b.strip()]
    unknown = {m for m, _ in quant_configs} - set(RECIPES)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {sorted(RECIPES)}")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"linears", "aggregator", "model", "checkpoint"}:
        raise ValueError(f"--parts takes linears, aggregator, model, checkpoint; got {args.parts!r}")
    height, width = _parse_image("--image", args.image)
    if min(args.frames, args.model_frames, args.repeats) < 1:
        raise ValueError("--frames, --model-frames and --repeats must be >= 1")
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    float_dtypes = speed_bench.float_part_dtypes(args.float_parts)
    if args.no_compile:
        set_compile(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = False if args.default_allocator else tune_glibc_malloc()
    report = {"benchmark": "speed", "environment": speed_bench.environment(), "malloc_tuned": malloc_tuned,
              "compile": not args.no_compile, "backends": backends}
    if "linears" in parts:
        report["linears"] = speed_bench.bench_linears(VGGTConfig(), args.frames, height, width, quant_configs,
                                                      backends, args.repeats, float_dtypes)
        report["linears"]["shapes_of"] = "VGGT-1B"
    model_parts = [p for p in ("aggregator", "model") if p in parts]
    if model_parts:
        if args.random_weights:
            preset = get_preset(args.model)
            torch.manual_seed(0)
            heads = () if "model" in parts else preset.config.enabled_heads  # the aggregator part needs none
            model, size = VGGT(preset.config.without_heads(*heads)).eval(), preset.image_size
            description = f"preset {preset.name} with random weights"
        else:
            model, size, description = load_model_spec(args.model, torch.device("cpu"))
        if quant_record(model) is not None:
            raise ValueError(f"{args.model} is already quantized; give the float model")
        image = _parse_image("--model-image", args.model_image) if args.model_image else (size, size)
        report["model"] = speed_bench.bench_model(model, description, args.model_frames, image, quant_configs,
                                                  backends, args.repeats, model_parts,
                                                  float_dtypes, _ON_OFF_BOTH[args.fused_residual],
                                                  _ON_OFF_BOTH[args.quantize_dino])
    if "checkpoint" in parts:
        report["vggt_1b_checkpoint"] = speed_bench.vggt_1b_checkpoint_sizes()
    text = json.dumps(report, indent=1)
    if args.json:
        write_text_atomic(args.json, text + "\n")
        log.info("wrote %s", args.json)
    print(speed_bench.format_speed_table(report))
    return 0


def _parse_image(option: str, text: str):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{option} must look like 518x518, got {text!r}") from None
    return height, width


def run_fidelity_command(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(RECIPES)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {sorted(RECIPES)}")
    bit_pairs = [parse_bits(b) for b in args.bits.split(",") if b.strip()]
    number_formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not number_formats or set(number_formats) - set(NUMBER_FORMATS):
        raise ValueError(f"--formats takes {', '.join(NUMBER_FORMATS)}; got {args.formats!r}")
    if args.frames < 2 or args.windows < 1 or args.calibration_windows < 1:
        raise ValueError("--frames must be >= 2, --windows and --calibration-windows >= 1")
    device = resolve_device(args.device)
    model, width, description = load_model_spec(args.model, device)
    log.info("fidelity: %s, %d methods x %d bit-widths, %d windows of %d frames", description, len(methods),
             len(bit_pairs), args.windows, args.frames)
    report = run_fidelity(model, methods, bit_pairs, args.frames, args.windows, args.calibration_windows, width,
                          number_formats, PRECISIONS[args.precision], args.fused_residual, args.quantize_dino)
    report["model"] = description
    text = json.dumps(report, indent=1)
    if args.json:
        write_text_atomic(args.json, text + "\n")
        log.info("wrote %s", args.json)
    print(format_table(report))
    return 0
