"""Architecture configuration of VGGT.

The defaults are VGGT-1B. ``VGGTConfig.from_dict`` reads the ``config.json`` schema of the golden
fixtures (``shared/fixtures/vggt_golden/*/config.json``), which describes models of any size built
from the official module types. A head set to ``None`` is not built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

# Keys of the fixture schema that describe how a file was made, not the architecture.
_INFORMATIONAL_KEYS = {"seed", "init_regime", "inputs", "name", "official_commit", "torch_version_used"}


@dataclass(frozen=True)
class PatchEmbedConfig:
    """DINOv2-with-registers ViT that turns each frame into patch tokens (``aggregator.patch_embed``)."""

    type: str = "dinov2_reg"
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 1.0
    interpolate_antialias: bool = True
    interpolate_offset: float = 0.0
    block_chunks: int = 0
    ffn_layer: str = "mlp"
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    qk_norm: bool = False
    norm_eps: float = 1e-6

    def __post_init__(self):
        # The official DINOv2 class has more options; VGGT uses exactly these, and no other
        # combination is implemented here.
        unsupported = {
            "type": (self.type, "dinov2_reg"),
            "interpolate_offset": (self.interpolate_offset, 0.0),
            "block_chunks": (self.block_chunks, 0),
            "ffn_layer": (self.ffn_layer, "mlp"),
            "qk_norm": (self.qk_norm, False),
        }
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"patch_embed.{name}={value!r} is not supported (only {supported!r})")


@dataclass(frozen=True)
class AggregatorConfig:
    """Alternating frame/global attention trunk (``aggregator.frame_blocks``/``global_blocks``)."""

    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    aa_order: Tuple[str, ...] = ("frame", "global")
    aa_block_size: int = 1
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "aa_order", tuple(self.aa_order))
        # Calibration relies on the block order F0, G0, F1, G1, ...; that is what VGGT uses.
        if self.aa_order != ("frame", "global") or self.aa_block_size != 1:
            raise ValueError(
                f"aggregator aa_order={list(self.aa_order)} aa_block_size={self.aa_block_size} is not "
                "supported (only ['frame', 'global'] with block size 1, as in VGGT)"
            )
        if self.rope_freq <= 0:
            raise ValueError("aggregator.rope_freq must be > 0 (RoPE cannot be disabled in VGGT)")


@dataclass(frozen=True)
class CameraHeadConfig:
    dim_in: int = 2048
    trunk_depth: int = 4
    pose_encoding_type: str = "absT_quaR_FoV"
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    trans_act: str = "linear"
    quat_act: str = "linear"
    fl_act: str = "relu"
    num_iterations: int = 4

    def __post_init__(self):
        if self.pose_encoding_type != "absT_quaR_FoV":
            raise ValueError(f"Unsupported camera encoding type: {self.pose_encoding_type}")


@dataclass(frozen=True)
class DPTHeadConfig:
    dim_in: int = 2048
    patch_size: int = 14
    output_dim: int = 4
    activation: str = "inv_log"
    conf_activation: str = "expp1"
    features: int = 256
    out_channels: Tuple[int, ...] = (256, 512, 1024, 1024)
    intermediate_layer_idx: Tuple[int, ...] = (4, 11, 17, 23)
    pos_embed: bool = True
    feature_only: bool = False
    down_ratio: int = 1
    frames_chunk_size: int = 8

    def __post_init__(self):
        object.__setattr__(self, "out_channels", tuple(self.out_channels))
        object.__setattr__(self, "intermediate_layer_idx", tuple(self.intermediate_layer_idx))
        if len(self.out_channels) != 4 or len(self.intermediate_layer_idx) != 4:
            raise ValueError("DPT heads need exactly 4 out_channels and 4 intermediate_layer_idx")


def _depth_head() -> DPTHeadConfig:
    return DPTHeadConfig(output_dim=2, activation="exp")


def _track_feature_extractor() -> DPTHeadConfig:
    return DPTHeadConfig(features=128, feature_only=True, down_ratio=2, pos_embed=False)


@dataclass(frozen=True)
class TrackerConfig:
    """``BaseTrackerPredictor`` arguments in effect inside VGGT's track head."""

    latent_dim: int = 128
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    hidden_size: int = 384
    depth: int = 6
    use_spaceatt: bool = True
    max_scale: int = 518
    predict_conf: bool = True
    updateformer_num_heads: int = 8
    num_virtual_tracks: int = 64
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if not self.use_spaceatt:
            raise ValueError("tracker.use_spaceatt=False is not supported (VGGT uses space attention)")


@dataclass(frozen=True)
class TrackHeadConfig:
    dim_in: int = 2048
    patch_size: int = 14
    features: int = 128
    iters: int = 4
    predict_conf: bool = True
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    hidden_size: int = 384
    feature_extractor: DPTHeadConfig = field(default_factory=_track_feature_extractor)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass(frozen=True)
class VGGTConfig:
    """Whole-model configuration; ``VGGTConfig()`` is VGGT-1B."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    patch_embed: PatchEmbedConfig = field(default_factory=PatchEmbedConfig)
    camera_head: Optional[CameraHeadConfig] = field(default_factory=CameraHeadConfig)
    depth_head: Optional[DPTHeadConfig] = field(default_factory=_depth_head)
    point_head: Optional[DPTHeadConfig] = field(default_factory=DPTHeadConfig)
    track_head: Optional[TrackHeadConfig] = field(default_factory=TrackHeadConfig)

    def __post_init__(self):
        if self.embed_dim % self.aggregator.num_heads or (self.embed_dim // self.aggregator.num_heads) % 4:
            raise ValueError(
                f"embed_dim {self.embed_dim} / {self.aggregator.num_heads} heads must give a head_dim "
                "divisible by 4 (2D RoPE splits it into y and x halves)"
            )
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        depth = self.aggregator.depth
        for name in ("depth_head", "point_head"):
            head = getattr(self, name)
            if head is not None and not all(-depth <= i < depth for i in head.intermediate_layer_idx):
                raise ValueError(f"{name}.intermediate_layer_idx {head.intermediate_layer_idx} outside "
                                 f"the {depth} aggregator layers")

    def without_heads(self, *names: str) -> "VGGTConfig":
        """A copy with the named heads (``camera``, ``depth``, ``point``, ``track``) disabled."""
        unknown = set(names) - set(HEAD_NAMES)
        if unknown:
            raise ValueError(f"unknown head(s) {sorted(unknown)}; choose from {list(HEAD_NAMES)}")
        return dataclasses.replace(self, **{f"{n}_head": None for n in names})

    @property
    def enabled_heads(self) -> Tuple[str, ...]:
        return tuple(n for n in HEAD_NAMES if getattr(self, f"{n}_head") is not None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VGGTConfig":
        """Build from the fixture ``config.json`` schema (missing fields take VGGT-1B values)."""
        data = {k: v for k, v in data.items() if k not in _INFORMATIONAL_KEYS}
        sections = {
            "aggregator": AggregatorConfig,
            "patch_embed": PatchEmbedConfig,
            "camera_head": CameraHeadConfig,
            "depth_head": DPTHeadConfig,
            "point_head": DPTHeadConfig,
            "track_head": TrackHeadConfig,
        }
        kwargs = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = None if value is None else _build(sections[key], value, key)
            elif key in ("img_size", "patch_size", "embed_dim"):
                kwargs[key] = int(value)
            else:
                raise ValueError(f"unknown VGGT config field {key!r}")
        # Head sections that are absent keep VGGT-1B's heads but must follow embed_dim.
        embed_dim = kwargs.get("embed_dim", 1024)
        if embed_dim != 1024:
            missing = [k for k in sections if k not in kwargs and k not in ("aggregator", "patch_embed")]
            if missing:
                raise ValueError(f"embed_dim={embed_dim} needs explicit sections {missing} (or null)")
        return cls(**kwargs)


HEAD_NAMES = ("camera", "depth", "point", "track")


def _build(config_cls, values: Mapping[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in config section {where!r}")
    kwargs = {}
    for name, value in values.items():
        nested = {"feature_extractor": DPTHeadConfig, "tracker": TrackerConfig}.get(name)
        kwargs[name] = _build(nested, value, f"{where}.{name}") if nested else value
    return config_cls(**kwargs)
