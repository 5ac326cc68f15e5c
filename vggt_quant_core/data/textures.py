"""Non-periodic surface textures for the scene generator: multi-scale value noise and photographs.

The classic textures of ``scenes`` (checker, stripes, tiles, waves) are periodic and mostly flat: 60 % of
14x14 patches of their renders have a grey-level standard deviation below 0.05, and a wall of one of them
looks the same after a shift by one period, so a model cannot learn to match patches across frames on
them. These two are built so that every patch is distinct:

* ``noise``: solid (3-d, world-space) value noise, four octaves from half the material's scale down, on
  an integer lattice hashed per material; no period at all.
* ``photo``: one of the photographs scikit-learn ships, mapped onto the surface along the two world axes
  the surface faces least (tri-planar), mirrored at the edges of each tile so that it has no seams.

Both are deterministic functions of the hit points and the material's integer ``pattern_seed``.
"""

from functools import lru_cache

import torch
import torch.nn.functional as F

NOISE_OCTAVES = 4
NOISE_GAIN = 0.8            # amplitude ratio between successive octaves (fine detail stays strong)
_HASH_PRIMES = (73856093, 19349663, 83492791)
_MASK_31 = (1 << 31) - 1


def _lattice_values(cells: torch.Tensor, seed: int) -> torch.Tensor:
    """Pseudo-random values in [0, 1) of integer lattice points [..., 3] (int64), a hash per ``seed``."""
    h = (cells[..., 0] * _HASH_PRIMES[0]) ^ (cells[..., 1] * _HASH_PRIMES[1]) ^ (cells[..., 2] * _HASH_PRIMES[2])
    h = (h ^ seed) & _MASK_31
    for _ in range(2):  # integer avalanche rounds (xorshift-multiply), exact on every platform
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & _MASK_31
        h = ((h ^ (h >> 12)) * 0x297A2D39) & _MASK_31
    return (h & 0xFFFFFF).to(torch.float32) / float(1 << 24)


def value_noise(points: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth noise [M] in [0, 1) at points [M, 3] in lattice units (one lattice cell per unit)."""
    base = torch.floor(points)
    fraction = points - base
    weight = fraction * fraction * (3 - 2 * fraction)  # smoothstep: continuous gradients across cells
    base = base.to(torch.int64)
    value = torch.zeros(len(points), dtype=points.dtype)
    for corner in range(8):
        offset = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        corner_weight = torch.where(offset.bool(), weight, 1 - weight).prod(-1)
        value = value + corner_weight * _lattice_values(base + offset, seed).to(points.dtype)
    return value


def noise_texture(points: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    """Mix [M] in [0, 1] of ``NOISE_OCTAVES`` octaves of value noise, the coarsest cell ``scale / 2`` metres."""
    total, amplitude, norm = torch.zeros(len(points), dtype=points.dtype), 1.0, 0.0
    for octave in range(NOISE_OCTAVES):
        total = total + amplitude * value_noise(points * (2.0 ** (octave + 1)) / scale, seed + 7919 * octave)
        norm += amplitude
        amplitude *= NOISE_GAIN
    # Octave sums crowd the middle; stretching around 0.5 gives the full contrast of the material's colours.
    return ((total / norm - 0.5) * 3.5 + 0.5).clamp(0, 1)


@lru_cache(maxsize=1)
def photographs() -> torch.Tensor:
    """The photographs scikit-learn ships, [N, 3, H, W] float32 in [0, 1] (read once per process)."""
    from sklearn.datasets import load_sample_images  # the only use of these files; sklearn is a dependency

    images = load_sample_images().images
    return torch.stack([torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 for image in images])


def photo_texture(points: torch.Tensor, normals: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    """RGB [M, 3] in [0, 1]: photograph ``seed % N`` tiled every ``scale`` metres (its width) over the
    surface, starting at an offset drawn from ``seed``, along the two world axes the normals face least."""
    images = photographs()
    image = images[seed % len(images)]
    generator = torch.Generator().manual_seed(seed)
    offset = torch.rand(2, generator=generator, dtype=points.dtype) * 2
    aspect = image.shape[1] / image.shape[2]
    dominant = normals.abs().argmax(-1)
    axes = torch.tensor([[1, 2], [0, 2], [0, 1]])[dominant]          # [M, 2] in-surface world axes
    uv = torch.gather(points, 1, axes) / scale
    uv = uv / torch.tensor([1.0, aspect], dtype=points.dtype) + offset
    mirrored = 1 - (torch.remainder(uv, 2) - 1).abs()                # 0..1..0 every two tiles: no seams
    grid = (mirrored * 2 - 1).to(torch.float32).view(1, -1, 1, 2)
    sampled = F.grid_sample(image[None], grid, mode="bilinear", align_corners=True)  # [1, 3, M, 1]
    return sampled[0, :, :, 0].T.to(points.dtype)
