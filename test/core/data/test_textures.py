"""Rich textures: deterministic, continuous, non-periodic noise and seamless photographs."""

import numpy as np
import pytest
import torch

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.textures import noise_texture, photo_texture, photographs, value_noise


def test_value_noise_is_deterministic_continuous_and_seed_dependent():
    points = torch.rand(2000, 3, dtype=torch.float64) * 20 - 10
    first = value_noise(points, seed=5)
    assert torch.equal(first, value_noise(points, seed=5))
    assert 0 <= first.min() and first.max() < 1 and first.std() > 0.1
    assert (first - value_noise(points, seed=6)).abs().mean() > 0.1
    nudged = value_noise(points + 1e-4, seed=5)
    assert (first - nudged).abs().max() < 1e-2          # no jumps at lattice cells


def test_noise_has_no_period_along_a_line():
    line = torch.zeros(4000, 3, dtype=torch.float64)
    line[:, 0] = torch.linspace(0, 40, 4000)
    values = noise_texture(line, scale=1.0, seed=1)
    shifts = [values[k:] - values[:-k] for k in range(50, 2000, 50)]
    # a periodic pattern would repeat itself exactly at some shift
    assert min(float(s.abs().mean()) for s in shifts) > 0.05


def test_photo_texture_samples_the_photograph_without_seams():
    images = photographs()
    assert images.shape[1] == 3 and images.dtype == torch.float32 and len(images) >= 2
    count = 200_000  # samples 1/20 photo pixel apart: bilinear sampling is continuous, a seam is a jump
    normals = torch.tensor([[0.0, 0.0, 1.0]]).expand(count, 3).double()
    points = torch.zeros(count, 3, dtype=torch.float64)
    points[:, 0] = torch.linspace(-5, 5, count)
    colours = photo_texture(points, normals, scale=1.0, seed=2)
    assert colours.shape == (count, 3) and 0 <= colours.min() and colours.max() <= 1
    # mirrored tiles: neighbouring samples stay close everywhere, including across the ten tile edges
    assert (colours[1:] - colours[:-1]).abs().max() < 0.05
    assert colours.std(0).min() > 0.05
    assert torch.equal(colours, photo_texture(points, normals, scale=1.0, seed=2))


def _flat_patch_fraction(textures: str) -> float:
    flat = []
    for seed in range(4):
        grey = generate_sequence(seed, 2, 112, 84, textures=textures).cameras[0].images.mean(-1) / 255
        flat.append(grey.reshape(2, 6, 14, 8, 14).std(axis=(2, 4)).ravel() < 0.05)
    return float(np.concatenate(flat).mean())


def test_rich_scenes_have_fewer_flat_patches_than_classic_ones():
    assert _flat_patch_fraction("rich") < _flat_patch_fraction("classic") - 0.03


def test_unknown_texture_set_is_named():
    with pytest.raises(ValueError, match="textures must be one of"):
        generate_sequence(0, 2, 28, 28, textures="marble")
