"""Depth maps as colour images (turbo colour map; near is red, far is blue)."""

import numpy as np

# Polynomial fit of Google's Turbo colour map (Mikhailov, 2019): channel = c . [1, x, ..., x^5].
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])


def turbo(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> uint8 RGB [..., 3]."""
    x = np.clip(values, 0.0, 1.0)[..., None] ** np.arange(6)
    return (np.clip(x @ _TURBO.T, 0.0, 1.0) * 255).round().astype(np.uint8)


def colorize_depth(depth: np.ndarray, valid: np.ndarray = None, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Depth [H, W] -> uint8 RGB [H, W, 3]. Inverse depth is stretched between its ``low`` and
    ``high`` percentiles over valid pixels; invalid pixels are black."""
    valid = np.isfinite(depth) & (depth > 0) if valid is None else valid & np.isfinite(depth) & (depth > 0)
    image = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return image
    inverse = 1.0 / depth[valid]
    lo, hi = np.percentile(inverse, [low, high])
    scaled = (inverse - lo) / max(hi - lo, 1e-12)
    # The ends of turbo are near black; [0.1, 0.95] keeps far clearly blue and near clearly red.
    image[valid] = turbo(0.1 + 0.85 * np.clip(scaled, 0, 1))
    return image
