"""Which of VGGT's Linears are quantized, and what precedes them (VGGT-specific knowledge lives here)."""

from typing import List, Optional

from torch import nn

BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
# Inside a pre-norm Block the input of these Linears is exactly the output of that LayerNorm.
_PRECEDING_NORM = {"attn.qkv": "norm1", "mlp.fc1": "norm2"}


# Their output goes straight into the block's LayerScale and residual add: ``x + ls(linear(...))``.
RESIDUAL_BRANCH_OUTPUTS = ("attn.proj", "mlp.fc2")


def aggregator_blocks(model: nn.Module) -> List[str]:
    """Aggregator block names in execution order F0, G0, F1, G1, ... (index 2i frame, 2i + 1 global)."""
    depth = len(model.aggregator.frame_blocks)
    return [f"aggregator.{kind}_blocks.{i}" for i in range(depth) for kind in ("frame", "global")]


def target_blocks(model: nn.Module, include_patch_embed: bool = False, include_camera_trunk: bool = False
                  ) -> List[str]:
    blocks = []
    if include_patch_embed:
        blocks += [f"aggregator.patch_embed.blocks.{i}" for i in range(len(model.aggregator.patch_embed.blocks))]
    blocks += aggregator_blocks(model)
    if include_camera_trunk and model.camera_head is not None:
        blocks += [f"camera_head.trunk.{i}" for i in range(len(model.camera_head.trunk))]
    return blocks


def target_layers(model: nn.Module, include_patch_embed: bool = False, include_camera_trunk: bool = False
                  ) -> List[str]:
    """Names of the Linears to quantize: by default the 4 Linears of each aggregator block (192 in VGGT-1B)."""
    return [f"{block}.{linear}" for block in target_blocks(model, include_patch_embed, include_camera_trunk)
            for linear in BLOCK_LINEARS]


def preceding_norm(layer_name: str) -> Optional[str]:
    """The LayerNorm whose output is this Linear's whole input (qkv <- norm1, fc1 <- norm2), or None."""
    for suffix, norm in _PRECEDING_NORM.items():
        if layer_name.endswith("." + suffix):
            return layer_name[: -len(suffix)] + norm
    return None
