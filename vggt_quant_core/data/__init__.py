"""Image loading/preprocessing, procedural scenes with ground truth, rosbag2 files (no model code)."""

from .preprocess import (load_and_preprocess_images, load_rgb, model_input_size, preprocess_image,
                         preprocessed_intrinsics, stack_padded)
from .scenes import HELD_OUT_SEED_BASE, RenderedSequence, SceneSequence, generate_sequence
from .trajectories import TRAJECTORIES

__all__ = ["HELD_OUT_SEED_BASE", "RenderedSequence", "SceneSequence", "TRAJECTORIES", "generate_sequence",
           "load_and_preprocess_images", "load_rgb", "model_input_size", "preprocess_image",
           "preprocessed_intrinsics", "stack_padded"]
