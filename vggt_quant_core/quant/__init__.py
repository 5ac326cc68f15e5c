"""Quantization of VGGT: ``quantize(model, QuantConfig(...))``, ``save_quantized``/``load_quantized``."""

from .api import (fuse_residual_epilogues, quantization_disabled, quantize, quantize_linear, quantized_layers,
                  state_dict_sha256)
from .checkpoint import is_quantized_checkpoint, load_quantized, read_header, save_quantized, size_report
from .config import QuantConfig, parse_bits
from .linear import QuantLinear
from .quantizers import QuantSpec
from .recipes import RECIPES
from .record import QuantRecord, quant_record

__all__ = ["QuantConfig", "QuantLinear", "QuantRecord", "QuantSpec", "RECIPES", "fuse_residual_epilogues",
           "is_quantized_checkpoint",
           "load_quantized", "parse_bits", "quant_record", "quantization_disabled", "quantize", "quantize_linear",
           "quantized_layers", "read_header", "save_quantized", "size_report", "state_dict_sha256"]
