"""Calibration: sample pools, NFDS selection, Fisher weights, block-wise reconstruction."""

from .pipeline import METHODS, CalibrationSettings, calibrate
from .engine import BlockReconstructor, EngineConfig, fp_chain
from .fisher import estimate_fisher, normalize_fisher
from .nfds import STRATEGIES, sample_features, select_samples
from .pool import FolderSequence, InMemorySequence, PoolSpec, SamplePool, folder_sources

__all__ = ["BlockReconstructor", "CalibrationSettings", "EngineConfig", "FolderSequence", "InMemorySequence",
           "METHODS", "PoolSpec", "STRATEGIES", "SamplePool", "calibrate", "estimate_fisher", "folder_sources",
           "fp_chain", "normalize_fisher", "sample_features", "select_samples"]
