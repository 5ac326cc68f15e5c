"""NFDS: noise filter counts, correlation vectors, per-cluster sampling, determinism."""

import numpy as np
import pytest
import torch

from vggt_quant_core.calib import sample_features, select_samples
from vggt_quant_core.calib.nfds import SampleFeatures, frame_correlation, robust_noise_scores


def _features(n=40, frames=5, seed=0):
    rng = np.random.default_rng(seed)
    stats = rng.normal(size=(n, 8))
    stats[[i for i in (3, 17, 29) if i < n]] += 25.0  # obvious outliers
    # four well-separated motion patterns
    centres = rng.uniform(0.2, 1.0, size=(4, frames - 1))
    correlation = centres[np.arange(n) % 4] + rng.normal(scale=0.01, size=(n, frames - 1))
    return SampleFeatures(stats, correlation), [f"s{i}" for i in range(n)]


def test_robust_scores_by_hand():
    stats = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    # median 3, MAD 1 -> z = |x - 3| / 1.4826
    assert np.allclose(robust_noise_scores(stats), np.abs(stats[:, 0] - 3) / 1.4826)


def test_noise_filter_drops_the_noisiest_fraction():
    features, ids = _features()
    result = select_samples(features, ids, n_samples=10, strategy="filtered", noise_fraction=0.2, seed=0)
    dropped = result["report"]["noise_filter"]["dropped"]
    assert len(dropped) == 8  # floor(0.2 * 40)
    assert {"s3", "s17", "s29"} <= set(dropped)
    assert not set(dropped) & set(result["report"]["selected"])
    assert len(result["indices"]) == 10


def test_clustered_sampling_spreads_over_clusters_and_is_deterministic():
    features, ids = _features()
    result = select_samples(features, ids, n_samples=8, strategy="nfds", clusters=4, seed=3)
    clusters = result["report"]["clusters"]
    assert clusters["k"] == 4 and sum(clusters["picked"]) + clusters["topped_up"] == 8
    assert all(p <= q for p, q in zip(clusters["picked"], [2, 2, 2, 2]))
    patterns = {i % 4 for i in result["indices"]}
    assert patterns == {0, 1, 2, 3}  # every motion pattern is represented
    again = select_samples(features, ids, n_samples=8, strategy="nfds", clusters=4, seed=3)
    assert again["indices"] == result["indices"]
    other = select_samples(features, ids, n_samples=8, strategy="nfds", clusters=4, seed=4)
    assert other["indices"] != result["indices"]


def test_short_clusters_are_topped_up_and_small_pools_taken_whole():
    features, ids = _features(n=12)
    result = select_samples(features, ids, n_samples=10, strategy="clustered", clusters=8, seed=0)
    assert len(result["indices"]) == 10 and len(set(result["indices"])) == 10
    result = select_samples(features, ids, n_samples=50, strategy="random", seed=0)
    assert result["indices"] == list(range(12))
    with pytest.raises(ValueError, match="strategy"):
        select_samples(features, ids, 4, strategy="best")


def test_frame_correlation_properties():
    tokens = torch.randn(4, 10, 16)
    tokens[2] = tokens[0]
    correlation = frame_correlation(tokens)
    assert correlation.shape == (3,) and correlation[1] == pytest.approx(1.0)
    scaled = tokens * torch.tensor([2.0, 0.5, 3.0, 7.0])[:, None, None]
    assert torch.allclose(frame_correlation(scaled), correlation)


def test_sample_features_from_the_model(small_pool, golden_dir):
    from vggt_quant_core.model import load_vggt
    model = load_vggt(golden_dir / "tiny_a")
    features = sample_features(model, small_pool, deep_blocks=2)
    assert features.deep_stats.shape == (len(small_pool), 2 * 2 * 2)
    assert features.correlation.shape == (len(small_pool), 2)
    assert np.isfinite(features.deep_stats).all() and (np.abs(features.correlation) <= 1 + 1e-6).all()
