"""NFDS: noise-filtered, frame-aware, clustered selection of calibration samples (QuantVGGT).

1. Deep statistics: for every candidate window, mean and variance of the tokens entering the last
   ``deep_blocks`` frame and global aggregator blocks (one full-precision aggregator pass).
2. Noise filter (paper eq. 10): per statistic, the robust z-score |s - median| / (1.4826 MAD) across
   candidates; a window's noise score is the mean of its z-scores. We read "drop the noisiest fraction p"
   literally: the floor(p N) windows with the highest scores are removed (p = 0.2 by default), the
   rest kept. (The public code computes an IQR rule and then discards its result; we apply the filter.)
3. Frame-aware correlation vector (eq. 12): for frames k = 1..S-1, the cosine similarity between the
   final aggregator tokens of frame 0 and frame k, averaged over tokens: a vector of length S - 1 that
   describes the window's motion/overlap pattern.
4. Clustering: scikit-learn KMeans (K = 8) on those vectors, then uniform sampling of about n/K windows
   inside each cluster; clusters smaller than their share are taken whole and the remainder is drawn
   uniformly from the other kept windows.

Strategies for ablation: ``random`` (uniform), ``filtered`` (2 then uniform), ``clustered`` (3-4 without
2), ``nfds`` (2-4). Everything is deterministic for a seed, and every step is recorded in the report.
"""

import logging
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch

from .pool import SamplePool, drop_count, split_count

log = logging.getLogger(__name__)
STRATEGIES = ("random", "filtered", "clustered", "nfds")


@dataclass
class SampleFeatures:
    deep_stats: np.ndarray   # [N, 4 * deep_blocks]: mean and variance at each deep frame/global block input
    correlation: np.ndarray  # [N, S - 1]: frame-aware correlation vectors


def frame_correlation(tokens: torch.Tensor) -> torch.Tensor:
    """Final aggregator tokens [S, P, D] -> [S - 1]: mean over tokens of cos(frame 0, frame k)."""
    reference = tokens[0:1].double()
    return torch.nn.functional.cosine_similarity(tokens[1:].double(), reference, dim=-1).mean(dim=-1)


@torch.no_grad()
def sample_features(model: torch.nn.Module, pool: SamplePool, deep_blocks: int = 4) -> SampleFeatures:
    """One full-precision aggregator pass per pool window (heads are not run)."""
    aggregator = model.aggregator
    blocks = [b for pair in zip(aggregator.frame_blocks, aggregator.global_blocks) for b in pair][-2 * deep_blocks:]
    current: List[float] = []

    def record(module, args):
        x = args[0].double()
        current.extend([x.mean().item(), x.var().item()])

    handles = [block.register_forward_pre_hook(record) for block in blocks]
    device = next(model.parameters()).device
    stats, correlations = [], []
    try:
        for index in range(len(pool)):
            current.clear()
            tokens, _ = aggregator(pool.load(index)[None].to(device), keep_layers=[-1])
            stats.append(list(current))
            correlations.append(frame_correlation(tokens[-1][0]).cpu().numpy())
            if (index + 1) % 50 == 0:
                log.info("nfds: features of %d/%d windows", index + 1, len(pool))
    finally:
        for handle in handles:
            handle.remove()
    return SampleFeatures(np.asarray(stats), np.stack(correlations))


def robust_noise_scores(stats: np.ndarray) -> np.ndarray:
    """Mean robust z-score per sample: |s - median| / (1.4826 MAD) per statistic (columns)."""
    median = np.median(stats, axis=0)
    mad = np.median(np.abs(stats - median), axis=0)
    z = np.abs(stats - median) / (1.4826 * mad + 1e-12)
    return z.mean(axis=1)


def _uniform(rng: np.random.Generator, candidates: np.ndarray, count: int) -> np.ndarray:
    return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))


def select_samples(features: SampleFeatures, ids: List[str], n_samples: int, strategy: str = "nfds",
                   noise_fraction: float = 0.2, clusters: int = 8, seed: int = 0) -> Dict:
    """Pick ``n_samples`` windows; returns {"indices": [...], "report": {...}} (report = what was done)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    total = len(ids)
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    rng = np.random.default_rng(seed)
    report: Dict = {"strategy": strategy, "pool": total, "requested": n_samples, "seed": seed}
    kept = np.arange(total)
    if strategy in ("filtered", "nfds"):
        scores = robust_noise_scores(features.deep_stats)
        dropped = np.sort(np.argsort(-scores, kind="stable")[:drop_count(total, noise_fraction)])
        kept = np.setdiff1d(kept, dropped)
        report["noise_filter"] = {"fraction": noise_fraction, "dropped": [ids[i] for i in dropped],
                                  "dropped_scores": [round(float(scores[i]), 4) for i in dropped],
                                  "kept": len(kept)}
        log.info("nfds: noise filter dropped %d of %d windows", len(dropped), total)
    if n_samples > len(kept):
        log.warning("nfds: %d samples requested but only %d candidates: taking all", n_samples, len(kept))
        n_samples = len(kept)
    if strategy in ("random", "filtered"):
        chosen = _uniform(rng, kept, n_samples)
    else:
        from sklearn.cluster import KMeans

        k = min(clusters, len(kept))
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features.correlation[kept])
        chosen_parts, sizes = [], []
        for cluster, quota in enumerate(split_count(n_samples, k)):
            members = kept[labels == cluster]
            sizes.append(len(members))
            chosen_parts.append(_uniform(rng, members, quota))
        chosen = np.concatenate(chosen_parts)
        shortfall = n_samples - len(chosen)
        if shortfall:
            chosen = np.concatenate([chosen, _uniform(rng, np.setdiff1d(kept, chosen), shortfall)])
        report["clusters"] = {"k": k, "sizes": sizes, "picked": [len(p) for p in chosen_parts],
                              "topped_up": int(shortfall)}
        log.info("nfds: %d clusters of sizes %s, picked %s (+%d top-up)", k, sizes,
                 [len(p) for p in chosen_parts], shortfall)
    chosen = sorted(int(i) for i in chosen)
    report["selected"] = [ids[i] for i in chosen]
    return {"indices": chosen, "report": report}
