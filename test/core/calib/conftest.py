"""Small pools of rendered sequences for the calibration tests."""

import pytest

from vggt_quant_core.calib import InMemorySequence, SamplePool
from vggt_quant_core.data import generate_sequence


@pytest.fixture(scope="session")
def rendered_sources():
    sequences = [generate_sequence(s, 8, 56, 42).cameras[0] for s in range(3)]
    return [InMemorySequence(f"scene{s}", len(seq.images), lambda i, seq=seq: seq.images[i])
            for s, seq in enumerate(sequences)]


@pytest.fixture(scope="session")
def small_pool(rendered_sources):
    return SamplePool.from_sources(rendered_sources, window=3, stride=1, image_size=56)
