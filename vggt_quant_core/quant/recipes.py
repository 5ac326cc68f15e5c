"""Methods as thin compositions of shared parts: which input transforms each quantized Linear gets."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    rotate: bool  # random Hadamard rotation of the input (online), inverse folded into the weight
    smooth: bool  # per-channel smoothing (after the rotation when both); needs activation statistics
    description: str


RECIPES = {r.name: r for r in [
    Recipe("rtn", False, False, "round-to-nearest on the raw weights and activations"),
    Recipe("smoothquant", False, True, "SmoothQuant: per-channel smoothing, fused into LayerNorm where exact"),
    Recipe("quarot", True, False, "QuaRot-style: online random Hadamard per Linear"),
    Recipe("dsfq", True, True, "QuantVGGT DSFQ: random Hadamard, then smoothing of the rotated channels"),
]}
