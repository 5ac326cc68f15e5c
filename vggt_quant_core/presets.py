"""Named models: ``--preset NAME`` anywhere a checkpoint is accepted."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from .outlier_model import inject_outliers
from .model import CheckpointError, VGGT, VGGTConfig, load_vggt
from .quant import is_quantized_checkpoint, load_quantized, quant_record

log = logging.getLogger(__name__)

VGGT_1B_URL = "https://huggingface.co/facebook/VGGT-1B/resolve/main/model.pt"
VGGT_1B_ENV = "VGGT_QUANT_VGGT1B"
VGGT_1B_DEFAULT_PATH = Path.home() / ".cache" / "vggt_quant" / "VGGT-1B" / "model.pt"
# Weights shipped inside the package (package data, see setup.py).
PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights"
TRAINED_DEFAULT = "vggt-tiny-synth"


def vggt_1b_weights() -> Path:
    """Where the official VGGT-1B weights are expected: ``$VGGT_QUANT_VGGT1B`` or the cache path."""
    path = Path(os.environ.get(VGGT_1B_ENV, VGGT_1B_DEFAULT_PATH)).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"VGGT-1B weights not found at {path}. Download model.pt (5 GB) from {VGGT_1B_URL} "
            f"to that path, or set {VGGT_1B_ENV}=/path/to/model.pt")
    return path


def packaged_weights(name: str) -> Callable[[], Path]:
    """A ``Preset.weights`` callable for a file of ``PACKAGED_WEIGHTS``."""
    def locate() -> Path:
        path = PACKAGED_WEIGHTS / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the package was installed without its weights "
                                  "(reinstall it; setup.py lists them as package data)")
        return path
    return locate


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: VGGTConfig
    image_size: int                                  # preprocessing target width (crop mode)
    weights: Optional[Callable[[], Path]] = None     # None: untrained, seeded initialisation
    seed: int = 0
    post_init: Optional[Callable[[VGGT], VGGT]] = None  # applied to the seeded initialisation


def _small_config(img_size: int, embed_dim: int, depth: int, levels, patch_embed_depth: int = 2,
                  head_dim: int = 16, dpt_channels=(16, 32, 64, 64)) -> VGGTConfig:
    """A small VGGT: same module types as VGGT-1B, smaller widths and depths, no track head."""
    heads = embed_dim // head_dim
    dpt = {"dim_in": 2 * embed_dim, "features": 32, "out_channels": list(dpt_channels),
           "intermediate_layer_idx": list(levels)}
    return VGGTConfig.from_dict({
        "img_size": img_size, "embed_dim": embed_dim,
        "aggregator": {"depth": depth, "num_heads": heads},
        "patch_embed": {"depth": patch_embed_depth, "num_heads": heads},
        "camera_head": {"dim_in": 2 * embed_dim, "trunk_depth": 1, "num_heads": heads},
        "depth_head": {**dpt, "output_dim": 2, "activation": "exp"},
        "point_head": {**dpt, "output_dim": 4, "activation": "inv_log"},
        "track_head": None,
    })


PRESETS: Dict[str, Preset] = {p.name: p for p in [
    Preset("vggt-1b", "official VGGT-1B (1.26B parameters), weights supplied by the user",
           VGGTConfig(), image_size=518, weights=vggt_1b_weights),
    Preset(TRAINED_DEFAULT, "5.1M-parameter VGGT trained from scratch on generated scenes (112x84 input, "
           "weights in the package): reconstructs indoor-like scenes it was trained for; made by "
           "`vggt-quant train` (docs/training.md)",
           _small_config(112, 128, 6, (1, 3, 4, 5), patch_embed_depth=3, head_dim=32,
                         dpt_channels=(32, 64, 128, 128)),
           image_size=112, weights=packaged_weights(f"{TRAINED_DEFAULT}.safetensors")),
    Preset("vggt-tiny-random", "untrained 1.3M-parameter VGGT (seeded weights): exercises the whole "
           "pipeline in seconds; its reconstructions are meaningless",
           _small_config(224, 64, 4, (0, 1, 2, 3)), image_size=224),
    Preset("vggt-outlier", "untrained 4M-parameter VGGT with VGGT-1B-like activation outliers (massive "
           "camera/register-token channels, outlier channels, heavy tails; see outlier_model.py): a "
           "quantization benchmark model, not a reconstruction model",
           _small_config(224, 128, 6, (1, 3, 4, 5)), image_size=224, post_init=inject_outliers),
]}
DEFAULT_PRESET = TRAINED_DEFAULT


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_preset(preset: Preset, dtype: torch.dtype = torch.float32,
                 device: Union[str, torch.device] = "cpu") -> VGGT:
    if preset.weights is not None:
        return load_vggt(preset.weights(), config=preset.config, dtype=dtype, device=device)
    if dtype != torch.float32:
        raise ValueError(f"preset {preset.name} is untrained; load it in float32 and use autocast")
    log.warning("preset %s is untrained (seeded random weights): the pipeline runs, but its output "
                "geometry is meaningless", preset.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        model = VGGT(preset.config)
    if preset.post_init is not None:
        model = preset.post_init(model)
    return model.to(device).eval()


def load_model(checkpoint: Optional[Union[str, Path]] = None, preset: Optional[str] = None,
               dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu"
               ) -> Tuple[VGGT, int, str]:
    """A model from a checkpoint path or a preset name (default preset if neither is given).

    Returns the model, the preprocessing width it expects and a short description.
    """
    if checkpoint is not None and preset is not None:
        raise ValueError("give a checkpoint or a preset, not both")
    if checkpoint is not None:
        if Path(checkpoint).is_file() and is_quantized_checkpoint(checkpoint):
            model = load_quantized(checkpoint, device=device)
            label = quant_record(model).config.label
            return model, model.config.img_size, f"quantized checkpoint {checkpoint} ({label})"
        model = load_vggt(checkpoint, dtype=dtype, device=device)
        return model, model.config.img_size, f"checkpoint {checkpoint}"
    chosen = get_preset(preset or DEFAULT_PRESET)
    return build_preset(chosen, dtype=dtype, device=device), chosen.image_size, f"preset {chosen.name}"


def load_model_spec(spec: str, device: Union[str, torch.device] = "cpu") -> Tuple[VGGT, int, str]:
    """A model named by one string (what ``--model`` takes): a preset name or an existing checkpoint path.
    Returns what ``load_model`` returns."""
    if spec in PRESETS:
        return load_model(preset=spec, device=device)
    path = Path(spec).expanduser()
    if path.exists():
        return load_model(checkpoint=path, device=device)
    raise ValueError(f"--model {spec!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing "
                     "checkpoint file or directory")
