"""Prediction heads: camera, DPT (depth / points) and track."""

from .activations import activate_head, activate_pose
from .camera_head import CameraHead
from .dpt_head import DPTHead
from .track_head import TrackHead

__all__ = ["CameraHead", "DPTHead", "TrackHead", "activate_head", "activate_pose"]
