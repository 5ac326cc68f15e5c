"""VGGT model: configuration, modules, and checkpoint loading."""

from .config import HEAD_NAMES, VGGTConfig
from .loading import CheckpointError, load_vggt, save_vggt
from .vggt import VGGT

__all__ = ["CheckpointError", "HEAD_NAMES", "VGGT", "VGGTConfig", "load_vggt", "save_vggt"]
