"""Two 4-bit codes per byte: the low nibble holds the even column (QuaRot/FlatQuant layout)."""

import torch


def pack_int4(codes: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Integer codes [..., K] in [-8, 7] (signed) or [0, 15] (unsigned) -> uint8 [..., K/2].

    ``validate=False`` skips the range check (two reductions and a device sync) for codes that a
    quantizer has already clamped to a 4-bit grid."""
    if codes.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even last dimension, got {codes.shape[-1]}")
    if validate and codes.numel() and not codes.is_meta and (codes.min() < -8 or codes.max() > 15):
        raise ValueError("codes do not fit in 4 bits")
    nibbles = (codes.to(torch.int16) & 0xF).to(torch.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """uint8 [..., K/2] -> int8 codes [..., K]; ``signed`` sign-extends the nibbles to [-8, 7]."""
    low = (packed & 0xF).to(torch.int8)
    high = (packed >> 4).to(torch.int8)
    if signed:
        low, high = (low ^ 8) - 8, (high ^ 8) - 8
    return torch.stack([low, high], dim=-1).flatten(-2)
