"""Named models: ``--preset NAME`` anywhere a checkpoint is accepted."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from .model import CheckpointError, VGGT, VGGTConfig, load_vggt

log = logging.getLogger(__name__)

VGGT_1B_URL = "https://huggingface.co/facebook/VGGT-1B/resolve/main/model.pt"
VGGT_1B_ENV = "VGGT_QUANT_VGGT1B"
VGGT_1B_DEFAULT_PATH = Path.home() / ".cache" / "vggt_quant" / "VGGT-1B" / "model.pt"


def vggt_1b_weights() -> Path:
    """Where the official VGGT-1B weights are expected: ``$VGGT_QUANT_VGGT1B`` or the cache path."""
    path = Path(os.environ.get(VGGT_1B_ENV, VGGT_1B_DEFAULT_PATH)).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"VGGT-1B weights not found at {path}. Download model.pt (5 GB) from {VGGT_1B_URL} "
            f"to that path, or set {VGGT_1B_ENV}=/path/to/model.pt")
    return path


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: VGGTConfig
    image_size: int                                # preprocessing target width (crop mode)
    weights: Optional[Callable[[], Path]] = None   # None: untrained, seeded initialisation
    seed: int = 0


def _tiny_config(img_size: int) -> VGGTConfig:
    dpt = {"dim_in": 128, "features": 32, "out_channels": [16, 32, 64, 64], "intermediate_layer_idx": [0, 1, 2, 3]}
    return VGGTConfig.from_dict({
        "img_size": img_size, "embed_dim": 64,
        "aggregator": {"depth": 4, "num_heads": 4},
        "patch_embed": {"depth": 2, "num_heads": 4},
        "camera_head": {"dim_in": 128, "trunk_depth": 1, "num_heads": 4},
        "depth_head": {**dpt, "output_dim": 2, "activation": "exp"},
        "point_head": {**dpt, "output_dim": 4, "activation": "inv_log"},
        "track_head": None,
    })


PRESETS: Dict[str, Preset] = {p.name: p for p in [
    Preset("vggt-1b", "official VGGT-1B (1.26B parameters), weights supplied by the user",
           VGGTConfig(), image_size=518, weights=vggt_1b_weights),
    Preset("vggt-tiny-random", "untrained 1.3M-parameter VGGT (seeded weights): exercises the whole "
           "pipeline in seconds; its reconstructions are meaningless",
           _tiny_config(224), image_size=224),
]}
DEFAULT_PRESET = "vggt-tiny-random"


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
        model = load_vggt(checkpoint, dtype=dtype, device=device)
        return model, model.config.img_size, f"checkpoint {checkpoint}"
    chosen = get_preset(preset or DEFAULT_PRESET)
    return build_preset(chosen, dtype=dtype, device=device), chosen.image_size, f"preset {chosen.name}"
