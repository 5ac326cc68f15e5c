"""What the ``reconstruct`` node reports on ``/diagnostics``: its counters and timings, and the status built
from them."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from vggt_quant_core.kernels.cpu_isa import cpu_label

from vggt_quant_core.stream import Estimator

DIAGNOSTIC_NAME = "vggt_quant_ros: reconstruct"
THROTTLE_S = 5.0   # one warning per kind of problem at most this often


@dataclass
class Stats:
    """Counters and timings shown in /diagnostics (guarded by the node's stats lock)."""

    frames_received: List[int] = field(default_factory=list)
    rejected_frames: int = 0
    keyframes: int = 0
    windows_emitted: int = 0
    windows_processed: int = 0
    dropped_windows: int = 0
    failed_windows: int = 0
    discarded_windows: int = 0   # waiting or being inferred when ~/reset came (not a problem)
    resets: int = 0
    rectified: Dict[int, str] = field(default_factory=dict)   # camera -> model of the cameras being undistorted
    timings_ms: Dict[str, float] = field(default_factory=dict)   # last window: stage -> wall ms
    cpu_ms: Dict[str, float] = field(default_factory=dict)       # last window: stage -> worker CPU ms
    window_latency_ms: float = 0.0
    alignment_rmse: float = 0.0
    alignment_scale: float = 1.0
    map_points: int = 0
    scale: Dict[str, str] = field(default_factory=dict)         # ``scale_*`` values (``metric_scale``)
    last_problem: str = ""
    processed_at_last_report: int = 0
    problems_at_last_report: int = 0

    def copy(self) -> "Stats":
        return dataclasses.replace(self, frames_received=list(self.frames_received), timings_ms=dict(self.timings_ms),
                                   cpu_ms=dict(self.cpu_ms), scale=dict(self.scale))

    @property
    def problems(self) -> int:
        return self.rejected_frames + self.dropped_windows + self.failed_windows


class Throttle:
    """Counts occurrences per key; ``due`` says when a key may be logged again, and how many repeats the line
    stands for (not thread-safe: the caller holds a lock). Keys whose last element is in ``once`` are logged
    the first time only."""

    def __init__(self, period_s: float = THROTTLE_S, once: Tuple[Hashable, ...] = ()):
        self._period_s, self._once = period_s, once
        self._seen: Dict[Tuple, List[float]] = {}   # key -> [last log time, occurrences since]

    def due(self, key: Tuple, now: float) -> Optional[int]:
        if key[-1] in self._once and key in self._seen:
            return None
        last = self._seen.setdefault(key, [-math.inf, 0])
        last[1] += 1
        if now - last[0] < self._period_s:
            return None
        repeats, last[0], last[1] = int(last[1]) - 1, now, 0
        return repeats


def stall_warning(names: List[str], topics: List[str], camera: int, stats: Stats, silent_s: float) -> str:
    """The line logged when ``camera`` falls silent (or never sent anything)."""
    never = stats.frames_received[camera] == 0
    return (f"{names[camera]} ({topics[camera]}): "
            + ("no image received yet; check the topic name and that the publisher is running"
               if never else f"no image for {silent_s:.1f} s")
            + ("; windows wait until every camera sends again" if len(topics) > 1 else ""))


def diagnostic_status(stats: Stats, names: List[str], silent: Dict[int, float], fatal: Optional[str],
                      estimator: Optional[Estimator], queued: int, elapsed_s: float) -> DiagnosticStatus:
    """The node's status from a copy of ``stats`` taken at this report (``processed_at_last_report`` and
    ``problems_at_last_report`` still those of the previous one); ``silent``: camera -> seconds without images."""
    if fatal is not None:
        level, message = DiagnosticStatus.ERROR, fatal
    elif silent:
        level = DiagnosticStatus.WARN
        message = "no images from " + ", ".join(f"{names[c]} for {s:.1f} s" for c, s in silent.items())
    elif stats.problems > stats.problems_at_last_report:
        level, message = DiagnosticStatus.WARN, stats.last_problem
    elif estimator is None:
        level, message = DiagnosticStatus.OK, "loading the model"
    else:
        level, message = DiagnosticStatus.OK, "running"
    values = {
        "state": "error" if fatal is not None else "loading" if estimator is None else "running",
        "model": estimator.description if estimator else "",
        "backend": estimator.backend if estimator else "",
        "bits": str(estimator.bits) if estimator else "",
        "cpu": cpu_label(),  # model and kernel ISA: timings from different machines must not be compared as one
        **stats.scale,
        "frames_received": str(sum(stats.frames_received)),
        **{f"frames_received/{name}": str(n) for name, n in zip(names, stats.frames_received)},
        "rejected_frames": str(stats.rejected_frames),
        "keyframes": str(stats.keyframes),
        "windows_emitted": str(stats.windows_emitted),
        "windows_processed": str(stats.windows_processed),
        "dropped_windows": str(stats.dropped_windows),
        "failed_windows": str(stats.failed_windows),
        "discarded_windows": str(stats.discarded_windows),
        "resets": str(stats.resets),
        "queued_windows": str(queued),
        "window_rate_hz": f"{(stats.windows_processed - stats.processed_at_last_report) / elapsed_s:.3f}",
        "window_latency_ms": f"{stats.window_latency_ms:.1f}",
        **{f"{stage}_ms": f"{ms:.1f}" for stage, ms in stats.timings_ms.items()},
        "alignment_rmse": f"{stats.alignment_rmse:.4g}",
        "alignment_scale": f"{stats.alignment_scale:.4g}",
        "map_points": str(stats.map_points),
        "stalled_cameras": ",".join(names[c] for c in silent),
        "rectified": ", ".join(f"{names[camera]} ({model})" for camera, model in stats.rectified.items()),
        "last_problem": stats.last_problem,
    }
    return DiagnosticStatus(level=level, name=DIAGNOSTIC_NAME, message=message,
                            hardware_id=estimator.backend if estimator else "",
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
