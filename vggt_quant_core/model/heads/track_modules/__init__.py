"""Tracker of the VGGT track head (CoTracker/VGGSfM style)."""

from .predictor import BaseTrackerPredictor

__all__ = ["BaseTrackerPredictor"]
