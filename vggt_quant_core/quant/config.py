"""``QuantConfig``: everything that defines a quantized model, serialisable to JSON."""

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from .quantizers import NUMBER_FORMATS, QuantSpec
from .recipes import RECIPES

FULL_PRECISION_BITS = 16  # w_bits/a_bits = 16: that side stays in float


@dataclass(frozen=True)
class QuantConfig:
    """Quantization of VGGT's transformer Linears.

    Defaults: round-to-nearest W8A8, weights symmetric per output channel, activations symmetric and
    dynamic per token, on the 192 aggregator Linears. ``method`` picks the input transforms (see
    ``recipes.RECIPES``); ``seed`` seeds the random Hadamard signs; ``smooth_alpha`` is SmoothQuant's
    migration strength; ``fuse_smoothing`` folds a leading smoothing scale into the preceding LayerNorm
    where that is exact (attn.qkv after norm1, mlp.fc1 after norm2). ``number_format``: ``int`` (integer
    grids) or ``e4m3`` (FP8 E4M3 on every quantized side, which must then be 8-bit and symmetric).
    """

    method: str = "rtn"
    w_bits: int = 8
    a_bits: int = 8
    w_granularity: str = "per_channel"
    w_group_size: int = 128
    w_symmetric: bool = True
    w_clip_ratio: float = 1.0
    a_granularity: str = "per_token"
    a_dynamic: bool = True
    a_symmetric: bool = True
    a_clip_ratio: float = 1.0
    smooth_alpha: float = 0.5
    fuse_smoothing: bool = True
    include_patch_embed: bool = False
    include_camera_trunk: bool = False
    seed: int = 0
    learnable_clip: bool = False
    number_format: str = "int"

    def __post_init__(self):
        if self.method not in RECIPES:
            raise ValueError(f"unknown method {self.method!r}; choose from {sorted(RECIPES)}")
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            if bits != FULL_PRECISION_BITS and not 2 <= bits <= 8:
                raise ValueError(f"{name} must be 2..8 or {FULL_PRECISION_BITS} (no quantization), got {bits}")
        if self.w_granularity == "per_token" or self.a_granularity not in ("per_token", "per_tensor"):
            raise ValueError("weights are quantized per_channel/per_group/per_tensor, activations per_token/"
                             "per_tensor")
        if self.number_format not in NUMBER_FORMATS:
            raise ValueError(f"number_format must be one of {NUMBER_FORMATS}, got {self.number_format!r}")
        if not 0 < self.smooth_alpha < 1:
            raise ValueError(f"smooth_alpha must be in (0, 1), got {self.smooth_alpha}")
        self.w_spec()  # validates the remaining fields
        self.a_spec()
        if not self.a_dynamic and self.a_granularity != "per_tensor":
            raise ValueError("static activation quantization is per_tensor only (a per-token static scale would "
                             "depend on the frame count and resolution)")

    def w_spec(self) -> Optional[QuantSpec]:
        if self.w_bits == FULL_PRECISION_BITS:
            return None
        return QuantSpec(self.w_bits, self.w_symmetric, self.w_granularity, self.w_group_size, self.w_clip_ratio,
                         self.number_format)

    def a_spec(self) -> Optional[QuantSpec]:
        if self.a_bits == FULL_PRECISION_BITS:
            return None
        return QuantSpec(self.a_bits, self.a_symmetric, self.a_granularity, clip_ratio=self.a_clip_ratio,
                         number_format=self.number_format)

    @property
    def needs_calibration_data(self) -> bool:
        return RECIPES[self.method].smooth or (not self.a_dynamic and self.a_bits != FULL_PRECISION_BITS)

    @property
    def label(self) -> str:
        suffix = "" if self.number_format == "int" else f"-{self.number_format}"
        return f"{self.method}-w{self.w_bits}a{self.a_bits}{suffix}"

    def to_dict(self) -> dict:
        """Field -> value; ``number_format`` only when it is not ``int``, so integer configs (and the
        checkpoint headers that hold them) are written as before the field existed."""
        data = dataclasses.asdict(self)
        if self.number_format == "int":
            del data["number_format"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown QuantConfig field(s) {sorted(unknown)}")
        return cls(**data)


def parse_bits(text: str) -> Tuple[int, int]:
    """``w4a8`` -> (4, 8); ``w4a16`` is weight-only."""
    match = re.fullmatch(r"w(\d+)a(\d+)", text.strip().lower())
    if not match:
        raise ValueError(f"bits must look like w4a8, got {text!r}")
    return int(match.group(1)), int(match.group(2))
