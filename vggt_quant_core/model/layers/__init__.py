"""Reusable transformer layers (state-dict names as in the official VGGT/DINOv2 code)."""

from .attention import Attention
from .block import Block
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .rope import RotaryPositionEmbedding2D, grid_positions
from .vision_transformer import DinoVisionTransformer

__all__ = ["Attention", "Block", "DinoVisionTransformer", "LayerScale", "Mlp", "PatchEmbed",
           "RotaryPositionEmbedding2D", "grid_positions"]
