"""Metric scale for a map that VGGT reconstructs up to scale, without ROS.

VGGT normalises every window to a scale of its own. A robot has what fixes it: a stereo rig of known
baseline, odometry, or a depth camera. Each gives, per window, the window's *metres per model unit*
(``ScaleSample``): a robust median of many ratios (camera pairs, travelled distances, pixels) with the
spread of those ratios. ``ScaleFilter`` fuses the samples with what chaining the windows already says
(the overlap alignment carries the map's scale from window to window) so that the map is in metres
without jumps: a one-dimensional Kalman filter on the log of the scale, where chaining is the process
(it drifts a little per window) and the sample the measurement, gated against outliers.

Before its first sample the map is in the first window's model units; the first accepted sample puts
the map in metres once (``ScaleDecision.rescale_map``); after that only new windows are corrected, by
a fraction of the disagreement. A lone sample outside the gate is dropped; samples that stay outside on
one side mean the chain drifts faster than assumed, and the filter follows them in bounded steps.
"""

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Optional, Sequence, Tuple

import numpy as np

from ..data import preprocessed_intrinsics

SCALE_SOURCES = ("none", "stereo", "odometry", "depth")
MAD_TO_SIGMA = 1.4826          # a normal distribution's standard deviation per median absolute deviation
MIN_DEPTH_SAMPLES = 100        # valid pixels a depth image must give
MIN_SAMPLE_SIGMA = 0.01        # a window's sample is never trusted to better than 1 % (model bias, not noise)


class NoScale(ValueError):
    """A window gives no scale sample; the message says why in one line."""


@dataclass(frozen=True)
class ScaleSample:
    """One window's measurement of its own scale."""

    metres_per_unit: float     # metres per model unit of the window
    spread: float              # relative robust spread of the individual ratios (MAD * 1.4826 / median)
    samples: int               # ratios that went into the median (after outlier rejection)
    source: str                # one of ``SCALE_SOURCES``

    @property
    def sigma(self) -> float:
        """Standard deviation of log(metres_per_unit) taken for the filter."""
        return max(self.spread / math.sqrt(self.samples), MIN_SAMPLE_SIGMA)


def _median_and_deviation(values: np.ndarray) -> Tuple[float, float]:
    """Median and robust standard deviation (MAD * 1.4826)."""
    median = float(np.median(values))
    return median, MAD_TO_SIGMA * float(np.median(np.abs(values - median)))


def robust_ratio(measured: np.ndarray, predicted: np.ndarray, source: str, min_samples: int = 1) -> ScaleSample:
    """Median of ``measured / predicted`` over the pairs where both are finite and positive, after dropping
    ratios more than 3 robust deviations from the first median; raises ``NoScale`` for fewer than
    ``min_samples`` usable pairs."""
    measured, predicted = np.asarray(measured, np.float64).ravel(), np.asarray(predicted, np.float64).ravel()
    valid = np.isfinite(measured) & np.isfinite(predicted) & (measured > 0) & (predicted > 0)
    if valid.sum() < min_samples:
        raise NoScale(f"{int(valid.sum())} usable {source} measurements in the window (need {min_samples})")
    ratios = measured[valid] / predicted[valid]
    median, deviation = _median_and_deviation(ratios)
    if deviation > 1e-9 * median:   # below that it is rounding, not outliers
        ratios = ratios[np.abs(ratios - median) <= 3 * deviation]
        median, deviation = _median_and_deviation(ratios)
    return ScaleSample(metres_per_unit=median, spread=deviation / median, samples=len(ratios), source=source)


def stereo_scale(centres: np.ndarray, baseline_m: float) -> ScaleSample:
    """``centres`` [T, C, 3]: predicted camera centres of T time steps of a rig whose cameras 0 and 1 are
    ``baseline_m`` apart; one ratio per time step."""
    if not (math.isfinite(baseline_m) and baseline_m > 0):
        raise NoScale(f"the stereo baseline is {baseline_m} m; give stereo_baseline_m or a CameraInfo of the second "
                      "camera with its projection's Tx = -fx * baseline")
    distance = np.linalg.norm(centres[:, 1] - centres[:, 0], axis=-1)
    return robust_ratio(np.full(len(distance), baseline_m), distance, "stereo")


def travel_scale(predicted: np.ndarray, measured: np.ndarray, min_travel_m: float) -> ScaleSample:
    """``predicted`` [K, 3] camera centres of a window's keyframes (model units), ``measured`` [K, 3] the same
    keyframes' positions from odometry (metres; NaN rows where unknown). One ratio per keyframe pair that
    travelled at least ``min_travel_m``."""
    known = np.flatnonzero(np.isfinite(measured).all(axis=1))
    if len(known) < 2:
        raise NoScale(f"odometry covers {len(known)} of the window's {len(measured)} keyframes (need 2)")
    i, j = np.triu_indices(len(known), k=1)
    i, j = known[i], known[j]
    travel = np.linalg.norm(measured[j] - measured[i], axis=1)
    moved = travel >= min_travel_m
    if not moved.any():
        raise NoScale(f"the camera travelled {travel.max():.3f} m within the window (odometry), less than "
                      f"scale_min_travel_m = {min_travel_m} m")
    return robust_ratio(travel[moved], np.linalg.norm(predicted[j] - predicted[i], axis=1)[moved], "odometry")


def depth_pairs(measured: np.ndarray, predicted: np.ndarray, mode: str, target_size: int,
                offset: Tuple[int, int] = (0, 0), stride: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """Measured and predicted depth of the same pixels: ``measured`` [H, W] metres (NaN or <= 0: invalid),
    registered to the colour image of that size; ``predicted`` [h, w] the model's depth (model units) of the
    preprocessed image (``mode``, ``target_size``), placed at ``offset`` (top, left) in the model input
    (padding of mixed sizes). Each ``stride``-th measured pixel goes to the model pixel it lands on."""
    height, width = measured.shape
    affine = preprocessed_intrinsics(np.eye(3), width, height, mode=mode, target_size=target_size)
    v, u = np.mgrid[0:height:stride, 0:width:stride]
    column = np.rint(affine[0, 0] * u + affine[0, 2]).astype(np.int64) + offset[1]
    row = np.rint(affine[1, 1] * v + affine[1, 2]).astype(np.int64) + offset[0]
    inside = (row >= 0) & (row < predicted.shape[0]) & (column >= 0) & (column < predicted.shape[1])
    return measured[v[inside], u[inside]], predicted[row[inside], column[inside]]


def depth_scale(pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> ScaleSample:
    """One ratio per valid pixel of every (measured, predicted) pair of ``depth_pairs``."""
    if not pairs:
        raise NoScale("no depth image matched the window's keyframes (check depth_topic and its stamps)")
    return robust_ratio(np.concatenate([m for m, _ in pairs]), np.concatenate([p for _, p in pairs]), "depth",
                        min_samples=MIN_DEPTH_SAMPLES)


class OdometryTrack:
    """Recent odometry positions by stamp (thread-safe: the subscription adds, the worker reads).

    ``positions_at`` interpolates linearly between the two messages around a stamp when they are at most
    ``max_gap_ns`` apart; stamps outside the track or in a larger gap have no position (NaN)."""

    def __init__(self, max_gap_ns: int = 500_000_000, keep: int = 20000):
        self.max_gap_ns = max_gap_ns
        self._stamps: Deque[int] = deque(maxlen=keep)
        self._positions: Deque[Tuple[float, float, float]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.received = 0

    def add(self, stamp_ns: int, position: Sequence[float]) -> None:
        with self._lock:
            self.received += 1
            if self._stamps and stamp_ns <= self._stamps[-1]:
                return   # out of order or repeated: the track stays sorted
            self._stamps.append(stamp_ns)
            self._positions.append(tuple(float(v) for v in position))

    def positions_at(self, stamps_ns: Sequence[int]) -> np.ndarray:
        """[K, 3] metres, NaN rows where the track has no position."""
        with self._lock:
            stamps, positions = np.array(self._stamps, np.int64), np.array(self._positions, np.float64)
        out = np.full((len(stamps_ns), 3), np.nan)
        for row, (stamp, after) in enumerate(zip(stamps_ns, np.searchsorted(stamps, stamps_ns))):
            if after < len(stamps) and stamps[after] == stamp:
                out[row] = positions[after]
            elif 0 < after < len(stamps) and stamps[after] - stamps[after - 1] <= self.max_gap_ns:
                weight = (stamp - stamps[after - 1]) / (stamps[after] - stamps[after - 1])
                out[row] = (1 - weight) * positions[after - 1] + weight * positions[after]
        return out


def scale_mode(source: str, metric: bool = False) -> Dict[str, str]:
    """The ``scale_mode`` and ``scale_source`` of /diagnostics: what unit the map is in."""
    if metric:
        return {"scale_mode": f"metric (metres, from {source})", "scale_source": source}
    waiting = f"; waiting for a {source} sample" if source != "none" else ""
    return {"scale_mode": "up-to-scale (model units of the first window)" + waiting, "scale_source": source}


@dataclass(frozen=True)
class ScaleDecision:
    """How one window goes into the map."""

    scale: float               # map-from-window scale to place the window with
    rescale_map: float         # factor for what is already in the map (1.0: nothing to do)
    used: bool                 # the window's sample went into the estimate
    problem: str               # why a sample was rejected or clipped ("" otherwise)


class ScaleFilter:
    """The map's scale from per-window samples and chaining (see the module docstring).

    ``drift_per_window``: relative standard deviation that chaining adds per window (VGGT's overlap
    alignment is good to a few percent); ``gate``: a sample further than this many standard deviations
    from the prediction is an outlier and only counted, unless the previous sample was outside on the same
    side: then chaining drifts faster than ``drift_per_window`` says, and the filter follows with the
    innovation clipped to the gate (bounded steps, never a lost lock).
    """

    def __init__(self, drift_per_window: float = 0.02, gate: float = 3.0, history: int = 20):
        self.drift_per_window, self.gate = drift_per_window, gate
        self.variance: Optional[float] = None      # of log(scale) of the map; None until metric
        self.used = self.rejected = self.clipped = 0
        self._outside = 0                           # side of the gate the last sample fell on (0: inside)
        self.last_sample: Optional[ScaleSample] = None
        self.last_correction = 0.0                  # applied / chained - 1 of the last window
        self._ratios: Deque[float] = deque(maxlen=history)   # sample / chained of recent samples

    @property
    def metric(self) -> bool:
        return self.variance is not None

    @property
    def relative_sigma(self) -> float:
        """The map scale's current relative standard deviation (inf before the first sample)."""
        return math.inf if self.variance is None else math.sqrt(self.variance)

    @property
    def disagreement(self) -> float:
        """Relative spread (MAD * 1.4826 / median) of recent samples against chaining, NaN before two."""
        if len(self._ratios) < 2:
            return math.nan
        median, deviation = _median_and_deviation(np.array(self._ratios))
        return deviation / median

    def update(self, chained: float, sample: Optional[ScaleSample]) -> ScaleDecision:
        """``chained``: the window's map-from-window scale from the overlap alignment (map units per model unit);
        ``sample``: the window's metres per model unit, or None."""
        if sample is None:
            if self.variance is not None:
                self.variance += self.drift_per_window ** 2
            return self._decide(chained, chained, 1.0, False, "")
        self.last_sample = sample
        self._ratios.append(sample.metres_per_unit / chained)
        if self.variance is None:   # the first sample: the map becomes metric
            self.variance, self.used = sample.sigma ** 2, self.used + 1
            return self._decide(chained, sample.metres_per_unit, sample.metres_per_unit / chained, True, "")
        predicted = self.variance + self.drift_per_window ** 2
        innovation = math.log(sample.metres_per_unit / chained)
        total = predicted + sample.sigma ** 2
        bound = self.gate * math.sqrt(total)
        side = (innovation > bound) - (innovation < -bound)     # +1 / -1 outside the gate, 0 inside
        persistent, self._outside = side != 0 and side == self._outside, side
        problem = ""
        if side and not persistent:   # a lone outlier: counted, not used
            self.variance, self.rejected = predicted, self.rejected + 1
            return self._decide(chained, chained, 1.0, False,
                                f"{sample.source} scale disagrees with the map by {100 * math.expm1(innovation):+.1f} "
                                f"% (gate {100 * math.expm1(bound):.1f} %): kept the map's scale")
        if persistent:   # chaining drifts faster than expected: follow, by at most the gate per window
            problem = (f"{sample.source} scale disagrees with the map by {100 * math.expm1(innovation):+.1f} % again: "
                       f"following it by at most {100 * math.expm1(bound):.1f} % per window (raise scale_drift if "
                       "this persists)")
            innovation, self.clipped = side * bound, self.clipped + 1
        gain = predicted / total
        self.variance, self.used = (1 - gain) * predicted, self.used + 1
        return self._decide(chained, chained * math.exp(gain * innovation), 1.0, True, problem)

    def _decide(self, chained: float, scale: float, rescale_map: float, used: bool, problem: str) -> ScaleDecision:
        self.last_correction = scale / (chained * rescale_map) - 1
        return ScaleDecision(scale=scale, rescale_map=rescale_map, used=used, problem=problem)

    def status(self, source: str) -> Dict[str, str]:
        """The filter's state for /diagnostics (``scale_*`` keys)."""
        sample = self.last_sample
        return {**scale_mode(source, self.metric),
                "scale_m_per_unit": f"{sample.metres_per_unit:.5g}" if sample else "",
                "scale_spread": f"{sample.spread:.3g}" if sample else "",
                "scale_samples": str(sample.samples) if sample else "0",
                "scale_windows_used": str(self.used), "scale_windows_rejected": str(self.rejected),
                "scale_windows_clipped": str(self.clipped),
                "scale_sigma": f"{self.relative_sigma:.3g}", "scale_correction": f"{self.last_correction:+.4f}",
                "scale_disagreement": f"{self.disagreement:.3g}"}
