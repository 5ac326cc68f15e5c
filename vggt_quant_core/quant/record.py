"""What a quantized model was made with, kept with the model: the model class itself knows nothing of it.

``quantize`` attaches the record, ``load_quantized`` rebuilds it from the checkpoint header and
``save_quantized`` writes it there; everything else reads it with ``quant_record``.
"""

from dataclasses import dataclass
from typing import Optional

from torch import nn

from .config import QuantConfig

_ATTRIBUTE = "_vggt_quant_record"


@dataclass(frozen=True)
class QuantRecord:
    config: QuantConfig
    base_sha256: Optional[str]   # SHA-256 of the float weights it was made from (None: a meta-device dry run)


def attach_record(model: nn.Module, record: QuantRecord) -> None:
    setattr(model, _ATTRIBUTE, record)


def quant_record(model: nn.Module) -> Optional[QuantRecord]:
    """The record of a quantized model; None for a float model."""
    return getattr(model, _ATTRIBUTE, None)
