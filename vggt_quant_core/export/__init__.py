"""Writing results: point clouds, depth images, cameras, scene recordings with their ground truth."""

from .colormap import colorize_depth, turbo
from .ply import read_ply, write_ply
from .reconstruction import write_depth, write_reconstruction

__all__ = ["colorize_depth", "read_ply", "turbo", "write_depth", "write_ply", "write_reconstruction"]
