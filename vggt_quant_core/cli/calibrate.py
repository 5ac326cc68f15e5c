"""``vggt-quant calibrate``: calibrate a quantized model on image sequences from disk."""

import argparse
import logging
from pathlib import Path

from ..calib import METHODS, STRATEGIES, CalibrationSettings, SamplePool, folder_sources
from ..calib.pipeline import calibrate_to_checkpoint
from ..fileio import write_text_atomic
from ..inference import resolve_device
from ..presets import DEFAULT_PRESET, load_model_spec
from ..quant import parse_bits

log = logging.getLogger("vggt_quant")


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with the ROS ``calibrate`` node."""
    parser.add_argument("--model", default=DEFAULT_PRESET,
                        help="base model: preset name or checkpoint (default %(default)s)")
    parser.add_argument("--method", default="dsfq", choices=sorted(METHODS),
                        help="dsfq (QuantVGGT), fgq (Fisher-guided FlatQuant), dsfq-fisher, rtn (no learning)")
    parser.add_argument("--bits", default="w4a4", help="wXaY (default w4a4)")
    parser.add_argument("--window", type=int, default=10, help="frames per sample window (default 10)")
    parser.add_argument("--stride", type=int, default=5, help="frames between window starts (default 5)")
    parser.add_argument("--pool-size", type=int, default=400, help="candidate windows (random subset; default 400)")
    parser.add_argument("--samples", type=int, default=40, help="calibration windows to select (default 40)")
    parser.add_argument("--strategy", choices=STRATEGIES, help="sample selection (default: the method's)")
    parser.add_argument("--noise-fraction", type=float, default=0.2, help="NFDS: drop this noisiest fraction")
    parser.add_argument("--clusters", type=int, default=8, help="NFDS: KMeans clusters (default 8)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per block (default 15)")
    parser.add_argument("--chain", choices=["fp", "quant"], default="fp",
                        help="block inputs from the full-precision (default) or the quantized chain")
    parser.add_argument("--fisher", type=Path, help="reuse a Fisher file written by an earlier run")
    parser.add_argument("--fisher-samples", type=int, default=8, help="windows for the Fisher estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-dir", type=Path, help="resumable state (default: <out>.work)")
    parser.add_argument("--no-base", action="store_true", help="store only the quantized layers")
    parser.add_argument("--out", type=Path, required=True, help="quantized checkpoint to write (.safetensors)")


def settings_from(args: argparse.Namespace) -> CalibrationSettings:
    w_bits, a_bits = parse_bits(args.bits)
    return CalibrationSettings(method=args.method, w_bits=w_bits, a_bits=a_bits, samples=args.samples,
                               strategy=args.strategy, noise_fraction=args.noise_fraction, clusters=args.clusters,
                               fisher_samples=args.fisher_samples, epochs=args.epochs, chain=args.chain,
                               seed=args.seed)


def add_parser(commands) -> None:
    parser = commands.add_parser("calibrate", help="calibrate a quantized model on image sequences",
                                 description="Select calibration windows (NFDS), estimate the Fisher (FGQ), learn "
                                             "the quantization block by block, and write a quantized checkpoint "
                                             "plus a JSON report. Interrupted runs resume from --work-dir.")
    parser.add_argument("--pool", nargs="+", type=Path, required=True, metavar="DIR",
                        help="a folder of images (one sequence) or a folder of sequence folders; repeatable")
    add_calibration_arguments(parser)
    parser.set_defaults(run=run)


def summary_text(report: dict, out: Path) -> str:
    """A short human-readable account of a calibration run."""
    settings, selection = report["settings"], report["selection"]
    lines = [f"calibrated {out}: {settings['method']} w{settings['w_bits']}a{settings['a_bits']}",
             f"  samples: {len(report['samples'])} of a pool of {report['pool_size']} windows "
             f"({selection['strategy']}, seed {settings['seed']})"]
    if "noise_filter" in selection:
        lines.append(f"  noise filter dropped {len(selection['noise_filter']['dropped'])} windows")
    if "clusters" in selection:
        lines.append(f"  clusters: sizes {selection['clusters']['sizes']}, picked {selection['clusters']['picked']}")
    blocks = report.get("engine", {}).get("blocks", [])
    if blocks:
        before, after = sum(b["before"] for b in blocks), sum(b["after"] for b in blocks)
        lines.append(f"  block reconstruction loss: {before:.4g} -> {after:.4g} (sum over {len(blocks)} blocks; "
                     f"{sum(b['after'] < b['before'] for b in blocks)} blocks improved)")
        lines.append(f"  peak memory {report['engine']['peak_memory_bytes'] / 1e9:.2f} GB")
    size = report["size"]
    lines.append(f"  quantized layers {size['quantized_layers_bytes'] / 1e6:.1f} MB (fp16 "
                 f"{size['quantized_layers_fp16_bytes'] / 1e6:.1f} MB), file {size['file_bytes'] / 1e6:.1f} MB")
    lines.append(f"  time {report['seconds']:.0f} s; report {report['report_file']}")
    if "fisher_file" in report:
        lines.append(f"  Fisher (reusable with --fisher): {report['fisher_file']}")
    return "\n".join(lines)


def run_with_sources(args: argparse.Namespace, sources, provenance: dict) -> int:
    """Shared by ``vggt-quant calibrate`` (folders) and the ROS ``calibrate`` node (bags)."""
    settings = settings_from(args)
    device = resolve_device(args.device)
    model, width, description = load_model_spec(args.model, device)
    pool = SamplePool.from_sources(sources, args.window, args.stride, args.pool_size, args.seed, image_size=width)
    report = calibrate_to_checkpoint(model, pool, settings, args.out, args.work_dir, args.fisher,
                                     include_base=not args.no_base,
                                     provenance={"base_model": description, **provenance})
    text = summary_text(report, args.out)
    write_text_atomic(args.out.with_name(args.out.stem + ".summary.txt"), text + "\n")
    print(text)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_with_sources(args, folder_sources(args.pool), {"pool": [str(p) for p in args.pool]})
