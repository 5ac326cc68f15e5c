"""The ``reconstruct`` use case: a whole sequence from a ``FrameSource`` through a ``StreamReconstructor`` into an
output folder, with progress reports. ``vggt-quant reconstruct`` and the demo without ROS call it.

The folder is built beside its place and moved there only when the run is complete (``fileio.atomic_directory``):
a run that fails or is interrupted leaves no partial output under the name asked for.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..fileio import atomic_directory
from .estimator import Estimator
from .reconstructor import FrameRejected, StreamReconstructor, write_depth_views
from .settings import StreamSettings
from .sources import DepthSample, FrameSource, OdometrySample, StereoBaseline
from .window_processor import WindowResult
from .windowing import Frame

log = logging.getLogger("vggt_quant")
SUMMARY = "summary.json"


@dataclass
class RunReport:
    """What a run saw, for progress lines and the summary."""

    frames_read: int = 0
    frames_total: Optional[int] = None
    warnings: Dict[str, int] = field(default_factory=dict)   # kind -> count
    last_warning: str = ""
    seconds: float = 0.0


def check_output_folder(out: Path) -> None:
    """Refuse to replace a folder that is not empty and holds no earlier output of this use case."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SUMMARY).is_file())):
        raise ValueError(f"{out} exists and is not an earlier reconstruct output (no {SUMMARY}); choose another "
                         "--out or remove it")


def reconstruct_stream(source: FrameSource, settings: StreamSettings, estimator: Estimator, out: Path,
                       progress: Optional[Callable[[StreamReconstructor, RunReport], None]] = None,
                       on_window: Optional[Callable[[WindowResult], None]] = None,
                       extra_summary: Optional[Dict[str, Any]] = None) -> StreamReconstructor:
    """Reconstruct every frame of ``source`` (the tail after the last window too) and write ``out``:
    ``points.ply``, ``trajectory.txt``, ``cameras.json``, ``depth/`` of every window's newest frames and
    ``summary.json``. ``progress`` is called after each frame, ``on_window`` with each window's result. Raises
    ``ValueError`` when the source is unreadable or no window could be reconstructed."""
    check_output_folder(out)
    report = RunReport(frames_total=source.frames)

    def warn(camera: Optional[int], kind: str, text: str) -> None:
        report.warnings[kind] = report.warnings.get(kind, 0) + 1
        report.last_warning = ("" if camera is None else f"camera {camera}: ") + text
        if report.warnings[kind] == 1:   # the summary counts the rest
            log.warning("%s", report.last_warning)

    recon = StreamReconstructor(settings, estimator, warn=warn)
    started = time.perf_counter()
    with atomic_directory(out) as staged:
        staged.mkdir()

        def done(result: Optional[WindowResult]) -> None:
            if result is not None:
                write_depth_views(staged, result)
                if on_window is not None:
                    on_window(result)

        for item in source.items():
            if isinstance(item, Frame):
                report.frames_read += 1
                try:
                    done(recon.push(item))
                except FrameRejected as exc:
                    warn(exc.camera, exc.kind, f"frame {item.index} skipped: {exc}")
                if progress is not None:
                    report.seconds = time.perf_counter() - started
                    progress(recon, report)
            elif isinstance(item, DepthSample):
                recon.push_depth(item.stamp_ns, item.depth)
            elif isinstance(item, OdometrySample):
                recon.push_odometry(item.stamp_ns, item.position)
            elif isinstance(item, StereoBaseline) and settings.stereo_baseline_m <= 0:
                recon.stereo_baseline_m = item.metres   # camera 1's CameraInfo, unless the setting gives one
        done(recon.finish())
        report.seconds = time.perf_counter() - started
        counts = recon.counts
        if counts.processed == 0:
            reason = (f"{counts.keyframes} keyframe(s) from {report.frames_read} frame(s) (a window needs 2)"
                      if counts.windows == 0 else f"all {counts.windows} window(s) failed: {report.last_warning}")
            raise ValueError(f"nothing was reconstructed from {source.description}: {reason}")
        recon.write(staged, {"source": source.description, "frames_read": report.frames_read,
                             "warnings": report.warnings, "seconds": round(report.seconds, 3),
                             "model": estimator.description, "backend": estimator.backend, **(extra_summary or {})})
    return recon


def summary_lines(recon: StreamReconstructor, report_seconds: float, out: Path) -> List[str]:
    """The lines printed after a run."""
    counts, status = recon.counts, recon.processor.scale.status(recon.settings.scale_source)
    rate = counts.frames / report_seconds if report_seconds > 0 else 0.0
    return [f"reconstructed {counts.frames} frames ({counts.rejected} rejected) in {report_seconds:.1f} s "
            f"({rate:.1f} frames/s): {counts.keyframes} keyframes, {counts.processed} windows of "
            f"{recon.settings.window_size} every {recon.settings.window_stride} ({counts.failed} failed)",
            f"map: {len(recon.map)} points, {status['scale_mode']}; trajectory: {len(recon.trajectory)} poses",
            f"outputs in {out}/: points.ply, trajectory.txt (TUM), cameras.json, depth/, summary.json"]
