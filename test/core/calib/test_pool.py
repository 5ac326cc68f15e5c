"""Sample pools: windows by id, deterministic subsets, folder discovery, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_quant_core.calib import SamplePool, folder_sources
from vggt_quant_core.calib.pool import drop_count, split_count


def test_windows_and_ids(rendered_sources):
    pool = SamplePool.from_sources(rendered_sources, window=4, stride=2, image_size=56)
    assert len(pool) == 3 * 3  # starts 0, 2, 4 in each 8-frame sequence
    assert pool.ids[:3] == ["scene0:0-3", "scene0:2-5", "scene0:4-7"]
    window = pool.load(1)
    assert window.shape == (4, 3, 42, 56) and window.dtype == torch.float32
    expected = torch.from_numpy(rendered_sources[0].frames(2, 3)[0]).permute(2, 0, 1).float() / 255
    assert torch.equal(window[0], expected)  # frames 2..5 of scene0, already at the model size


def test_pool_size_subset_is_seeded(rendered_sources):
    a = SamplePool.from_sources(rendered_sources, window=2, stride=1, pool_size=5, seed=1)
    b = SamplePool.from_sources(rendered_sources, window=2, stride=1, pool_size=5, seed=1)
    c = SamplePool.from_sources(rendered_sources, window=2, stride=1, pool_size=5, seed=2)
    assert a.ids == b.ids and a.ids != c.ids and len(a) == 5


def test_folder_sources_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for sequence in ("run_b", "run_a"):
        (tmp_path / sequence).mkdir()
        for i in (10, 2, 1):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / sequence / f"f{i}.png")
    sources = folder_sources([tmp_path])
    assert [s.name for s in sources] == ["run_a", "run_b"]
    assert [p.name for p in sources[0].paths] == ["f1.png", "f2.png", "f10.png"]
    with pytest.raises(ValueError, match="no images"):
        folder_sources([_empty(tmp_path)])
    with pytest.raises(ValueError, match="not a directory"):
        folder_sources([tmp_path / "nope"])
    with pytest.raises(ValueError, match="longest sequence has 3 frames"):
        SamplePool.from_sources(sources, window=5, stride=1)


def _empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_counting_helpers():
    assert split_count(10, 4) == [3, 3, 2, 2] and sum(split_count(40, 8)) == 40
    assert drop_count(10, 0.2) == 2 and drop_count(9, 0.2) == 1 and drop_count(1, 0.5) == 0
    with pytest.raises(ValueError):
        drop_count(10, 1.0)
