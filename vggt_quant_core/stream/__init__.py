"""Streaming reconstruction without ROS: overlapping windows of keyframes, Sim(3) chaining into one map,
metric scale, a capped voxel map, and reuse of per-frame model work across windows.

    from vggt_quant_core.stream import Frame, StreamReconstructor, StreamSettings, load_estimator

    settings = StreamSettings.defaults()
    recon = StreamReconstructor(settings, load_estimator(preset=settings.preset))
    for index, (stamp_ns, rgb) in enumerate(images):
        recon.push(Frame(camera=0, stamp_ns=stamp_ns, rgb=rgb, index=index))
    recon.finish()
    recon.save("outputs/run")   # points.ply, trajectory.txt (TUM), cameras.json, depth/, summary.json

The ROS ``reconstruct`` node and ``vggt-quant reconstruct`` are both built on ``StreamReconstructor``.
"""

from .estimator import Estimator, estimator_from_model, load_estimator
from .reconstructor import FrameRejected, StreamCounts, StreamReconstructor
from .settings import ConfigurationError, StreamSettings, default_parameter_file, read_parameter_file
from .window_processor import WindowResult
from .windowing import Frame, FrameSet

__all__ = ["ConfigurationError", "Estimator", "Frame", "FrameRejected", "FrameSet", "StreamCounts",
           "StreamReconstructor", "StreamSettings", "WindowResult", "default_parameter_file", "estimator_from_model",
           "load_estimator", "read_parameter_file"]
