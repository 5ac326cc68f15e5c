"""Preprocessing against the official loader's outputs (stored losslessly as PNGs)."""

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_quant_core.data.preprocess import (load_and_preprocess_images, model_input_size, preprocess_image,
                                             preprocessed_intrinsics)


def _cases(units):
    case = units["load_and_preprocess_images"]
    for key, expected_pngs in case["expected_png"].items():
        names, mode = key.split("|")
        names = names[len("batch["):-1].split(",") if names.startswith("batch[") else [names]
        yield key, names, mode, expected_pngs, case["shapes"][key]


def test_matches_official_loader_exactly(units, golden_dir):
    root = golden_dir / "units"
    checked = 0
    for key, names, mode, expected_pngs, shape in _cases(units):
        paths = [root / units["load_and_preprocess_images"]["inputs"][n] for n in names]
        ours = load_and_preprocess_images(paths, mode=mode)
        assert list(ours.shape) == list(shape), key
        for i, png in enumerate(expected_pngs):
            expected = torch.from_numpy(np.asarray(Image.open(root / png).convert("RGB")).copy())
            expected = expected.permute(2, 0, 1).float() / 255
            assert torch.equal(ours[i], expected), f"{key} image {i}"
        checked += 1
    assert checked == 11


def test_half_rounds_to_even_like_python():
    # 49 * 518 / 74 / 14 = 24.5 -> 24 (banker's rounding), so H = 336 not 350
    assert model_input_size(74, 49, "crop") == (518, 336)
    assert model_input_size(300, 500, "pad") == (308, 518)


def test_accepts_arrays_and_rejects_bad_input(tmp_path):
    array = np.zeros((30, 40, 3), dtype=np.uint8)
    assert preprocess_image(array, target_size=56).shape == (3, 42, 56)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image(array.astype(np.float32))
    with pytest.raises(ValueError, match="mode"):
        preprocess_image(array, mode="stretch")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        preprocess_image(bad)
    with pytest.raises(ValueError, match="too thin"):
        preprocess_image(np.zeros((2, 400, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="At least 1"):
        load_and_preprocess_images([])


@pytest.mark.parametrize("width, height, mode", [(640, 480, "crop"), (480, 640, "crop"), (640, 480, "pad"),
                                                 (300, 500, "pad")])
def test_preprocessed_intrinsics_follow_the_pixels(width, height, mode):
    """A blob at the projection of a 3D point stays at its projection with the mapped intrinsics."""
    intrinsics = np.array([[0.8 * width, 0, (width - 1) / 2 + 7], [0, 0.8 * width, (height - 1) / 2 - 5], [0, 0, 1]])
    point = np.array([0.13, -0.07, 1.0])
    u, v, _ = intrinsics @ point
    yy, xx = np.mgrid[0:height, 0:width]
    blob = 255 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 4.0 ** 2))
    image = np.repeat((255 - blob).round().astype(np.uint8)[..., None], 3, axis=2)  # dark blob on white, as the pad
    out = 1 - preprocess_image(image, mode=mode, target_size=224)[0].double()
    weights = out / out.sum()
    grid_v, grid_u = torch.meshgrid(torch.arange(out.shape[0]), torch.arange(out.shape[1]), indexing="ij")
    centroid = np.array([(weights * grid_u).sum().item(), (weights * grid_v).sum().item()])
    mapped = preprocessed_intrinsics(intrinsics, width, height, mode=mode, target_size=224) @ point
    assert np.abs(centroid - mapped[:2]).max() < 0.05, (centroid, mapped)
