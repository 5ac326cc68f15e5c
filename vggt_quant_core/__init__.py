"""vggt_quant_core: quantized VGGT in pure PyTorch (no ROS imports anywhere in this package)."""

__version__ = "0.1.0"
