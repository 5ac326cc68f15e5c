"""How far a quantized model's outputs are from the same model in full precision."""

import math
from typing import Dict, Iterable, Mapping

import torch

FIDELITY_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def relative_l2(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """||actual - reference|| / ||reference|| (float64)."""
    actual, reference = actual.double(), reference.double()
    return ((actual - reference).norm() / reference.norm().clamp(min=1e-300)).item()


def sqnr_db(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(||ref||^2 / ||actual - ref||^2) in dB (inf if equal)."""
    noise = (actual.double() - reference.double()).square().sum().item()
    signal = reference.double().square().sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def compare_outputs(actual: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                    keys: Iterable[str] = FIDELITY_KEYS) -> Dict[str, Dict[str, float]]:
    """Per output: relative L2 error and SQNR of ``actual`` against ``reference``."""
    return {key: {"rel_l2": relative_l2(actual[key], reference[key]), "sqnr_db": sqnr_db(actual[key], reference[key])}
            for key in keys if key in reference}
