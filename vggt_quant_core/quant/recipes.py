"""Methods as thin compositions of shared parts: which input transforms each quantized Linear gets."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Input transform steps, in order: [rotate] then smooth (DSFQ), or smooth then [affine] (FlatQuant)."""

    name: str
    rotate: bool  # random Hadamard rotation of the input (online), inverse folded into the weight
    smooth: bool  # per-channel smoothing; needs activation statistics
    affine: bool  # learnable Kronecker affine transform after the smoothing (FlatQuant / FGQ)
    description: str


RECIPES = {r.name: r for r in [
    Recipe("rtn", False, False, False, "round-to-nearest on the raw weights and activations"),
    Recipe("smoothquant", False, True, False, "SmoothQuant: per-channel smoothing, fused into LayerNorm where exact"),
    Recipe("quarot", True, False, False, "QuaRot-style: online random Hadamard per Linear"),
    Recipe("dsfq", True, True, False, "QuantVGGT DSFQ: random Hadamard, then smoothing of the rotated channels"),
    Recipe("flatquant", False, True, True,
           "FlatQuant / FGQ: smoothing (fusable into LayerNorm), then a learnable Kronecker affine transform "
           "(random orthogonal until calibrated)"),
]}
