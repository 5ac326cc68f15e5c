"""Calibration pipeline: select samples, (estimate Fisher), initialise, reconstruct block by block, freeze.

Methods:

* ``dsfq``: QuantVGGT. Random Hadamard then smoothing (initialised from activation maxima), learned with
  the clipping; MSE loss; NFDS samples.
* ``fgq``: FGQ. Smoothing (fusable into LayerNorm) then a learnable Kronecker affine transform
  (FlatQuant), learned with the clipping under the Fisher-weighted loss; random samples as in the paper.
* ``dsfq-fisher``: DSFQ transforms with the Fisher-weighted loss and NFDS samples (both papers combined).
* ``rtn``: round-to-nearest, nothing learned (a quick baseline).

With a work directory every stage is resumable: the selection, the Fisher tensor and each calibrated
block are saved atomically, and a restarted run with the same settings continues where it stopped.

``calibrate_from_spec`` is the whole use case behind ``vggt-quant calibrate`` and the ROS ``calibrate``
script: base model by name or path, pool from folders or bags, checkpoint, report and summary on disk.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from torch import nn

from ..fileio import write_bytes_atomic, write_text_atomic
from ..inference import resolve_device
from ..presets import load_model_spec
from ..quant import QuantConfig, quantize, save_quantized, state_dict_sha256
from ..quant.api import freeze_model
from .engine import BlockReconstructor, EngineConfig
from .fisher import estimate_fisher, load_fisher, normalize_fisher, save_fisher
from .nfds import STRATEGIES, sample_features, select_samples
from .pool import PoolSpec, SamplePool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationMethod:
    recipe: str            # quant recipe (input transforms)
    loss: Optional[str]    # "mse", "fisher" or None (nothing learned)
    strategy: str          # default sample selection
    transform_lr: float = 5e-3
    clip_lr: float = 5e-2


METHODS = {
    "dsfq": CalibrationMethod("dsfq", "mse", "nfds"),
    "fgq": CalibrationMethod("flatquant", "fisher", "random", transform_lr=1e-2, clip_lr=1e-1),
    "dsfq-fisher": CalibrationMethod("dsfq", "fisher", "nfds"),
    "rtn": CalibrationMethod("rtn", None, "random"),
}


@dataclass(frozen=True)
class CalibrationSettings:
    method: str = "dsfq"
    w_bits: int = 4
    a_bits: int = 4
    samples: int = 40
    strategy: Optional[str] = None     # default: the method's
    noise_fraction: float = 0.2
    clusters: int = 8
    deep_blocks: int = 4
    fisher_samples: int = 8
    epochs: int = 15
    chain: str = "fp"
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {sorted(METHODS)}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {STRATEGIES}")

    @property
    def selection(self) -> str:
        return self.strategy or METHODS[self.method].strategy

    def quant_config(self) -> QuantConfig:
        method = METHODS[self.method]
        return QuantConfig(method=method.recipe, w_bits=self.w_bits, a_bits=self.a_bits, seed=self.seed,
                           learnable_clip=method.loss is not None)


class WorkDir:
    """Resumable state of one calibration run; refuses to mix runs with different settings."""

    def __init__(self, path: Optional[Path], settings: CalibrationSettings, pool_ids, model_sha256: str) -> None:
        self.path = None if path is None else Path(path)
        if self.path is None:
            return
        identity = {"settings": asdict(settings), "pool": list(pool_ids), "model_sha256": model_sha256}
        marker = self.path / "run.json"
        if marker.exists():
            if json.loads(marker.read_text()) != identity:
                raise ValueError(f"{self.path} holds a calibration run with other settings, pool or model; "
                                 "use another --work-dir or delete it")
            log.info("calibrate: resuming from %s", self.path)
        else:
            write_text_atomic(marker, json.dumps(identity))

    def file(self, name: str) -> Optional[Path]:
        return None if self.path is None else self.path / name


def calibrate(model: nn.Module, pool: SamplePool, settings: CalibrationSettings, work_dir: Optional[Path] = None,
              fisher_path: Optional[Path] = None, log_fn: Callable[[str], None] = log.info) -> Dict:
    """Quantize ``model`` in place with calibration on ``pool``; returns the report (the model ends frozen)."""
    started = time.perf_counter()
    method = METHODS[settings.method]
    base_sha256 = state_dict_sha256(model)
    work = WorkDir(work_dir, settings, pool.ids, base_sha256)
    report: Dict = {"settings": asdict(settings), "pool_size": len(pool), "base_sha256": base_sha256}

    # 1. sample selection
    selection_file = work.file("selection.json")
    if selection_file is not None and selection_file.exists():
        selection = json.loads(selection_file.read_text())
    else:
        features = sample_features(model, pool, settings.deep_blocks) if settings.selection != "random" else None
        selection = select_samples(features, pool.ids, settings.samples, settings.selection,
                                   settings.noise_fraction, settings.clusters, settings.seed)
        if selection_file is not None:
            write_text_atomic(selection_file, json.dumps(selection))
    report["selection"] = selection["report"]
    chosen = selection["indices"]
    log_fn(f"calibrate: {len(chosen)} samples selected ({settings.selection}) from a pool of {len(pool)}")

    # 2. Fisher weights
    fisher_weights = None
    if method.loss == "fisher":
        fisher_weights, report["fisher"] = _fisher(model, pool, chosen, settings, work, fisher_path, base_sha256,
                                                   log_fn)

    # 3. transforms initialised from statistics, 4. block-wise reconstruction, 5. freeze
    windows = [pool.load(i) for i in chosen]
    config = settings.quant_config()
    quantize(model, config, calibration_images=windows if config.needs_calibration_data else None, freeze=False,
             log_fn=log_fn)
    if method.loss is not None:
        engine_config = EngineConfig(epochs=settings.epochs, transform_lr=method.transform_lr, clip_lr=method.clip_lr,
                                     loss=method.loss, chain=settings.chain, seed=settings.seed)
        report["engine"] = BlockReconstructor(model, engine_config, fisher_weights, work.path, log_fn).run(windows)
    freeze_model(model, config)
    report["seconds"] = round(time.perf_counter() - started, 2)
    report["samples"] = [pool.ids[i] for i in chosen]
    return report


def _fisher(model, pool, chosen, settings, work, fisher_path, base_sha256, log_fn):
    if fisher_path is not None:
        loaded = load_fisher(fisher_path, base_sha256)
        source = str(fisher_path)
    else:
        cached = work.file("fisher.safetensors")
        if cached is not None and cached.exists():
            loaded, source = load_fisher(cached, base_sha256), str(cached)
        else:
            indices = chosen[:settings.fisher_samples]
            log_fn(f"calibrate: estimating the Fisher on {len(indices)} samples")
            fisher = estimate_fisher(model, pool, indices)
            loaded = {"fisher": fisher, "samples": [pool.ids[i] for i in indices]}
            source = "estimated"
            if cached is not None:
                save_fisher(cached, fisher, loaded["samples"], base_sha256)
    return normalize_fisher(loaded["fisher"]), {"source": source, "samples": loaded["samples"]}


def calibrate_to_checkpoint(model: nn.Module, pool: SamplePool, settings: CalibrationSettings, out: Path,
                            work_dir: Optional[Path] = None, fisher_path: Optional[Path] = None,
                            include_base: bool = True, provenance: Optional[Dict] = None,
                            log_fn: Callable[[str], None] = log.info) -> Dict:
    """``calibrate`` then write the quantized checkpoint ``out``, its report ``<out>.report.json`` and, when a
    Fisher was estimated, ``<out>.fisher.safetensors`` (reusable with ``fisher_path``). Returns the report."""
    out = Path(out)
    work_dir = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    report = calibrate(model, pool, settings, work_dir, fisher_path, log_fn)
    calibration = {"method": settings.method, "samples": report["samples"], "strategy": settings.selection,
                   **(provenance or {})}
    report["size"] = save_quantized(model, out, include_base=include_base, calibration=calibration)
    cached_fisher = work_dir / "fisher.safetensors"
    if cached_fisher.exists():
        report["fisher_file"] = str(out.with_name(out.stem + ".fisher.safetensors"))
        write_bytes_atomic(report["fisher_file"], cached_fisher.read_bytes())
    report_path = out.with_name(out.stem + ".report.json")
    write_text_atomic(report_path, json.dumps({**report, "provenance": provenance}, indent=1))
    report["report_file"] = str(report_path)
    return report


def calibrate_from_spec(model_spec: str, pool_spec: PoolSpec, settings: CalibrationSettings, out: Path,
                        device: str = "auto", work_dir: Optional[Path] = None, fisher_path: Optional[Path] = None,
                        include_base: bool = True, log_fn: Callable[[str], None] = log.info) -> Tuple[Dict, str]:
    """Calibrate the model ``model_spec`` (a preset name or checkpoint path) on the windows of ``pool_spec``
    and write what ``calibrate_to_checkpoint`` writes plus ``<out>.summary.txt``. Returns the report and the
    summary text."""
    out = Path(out)
    sources, provenance = pool_spec.sources()
    model, width, description = load_model_spec(model_spec, resolve_device(device))
    pool = SamplePool.from_sources(sources, pool_spec.window, pool_spec.stride, pool_spec.size, pool_spec.seed,
                                   image_size=width)
    report = calibrate_to_checkpoint(model, pool, settings, out, work_dir, fisher_path, include_base=include_base,
                                     provenance={"base_model": description, **provenance}, log_fn=log_fn)
    text = summary_text(report, out)
    write_text_atomic(out.with_name(out.stem + ".summary.txt"), text + "\n")
    return report, text


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
