"""Image loading/preprocessing and procedural scenes with ground truth (no model code)."""

from .preprocess import (load_and_preprocess_images, load_rgb, model_input_size, preprocess_image,
                         preprocessed_intrinsics, stack_padded)
from .scenes import RenderedSequence, render_orbit_sequence

__all__ = ["RenderedSequence", "load_and_preprocess_images", "load_rgb", "model_input_size",
           "preprocess_image", "preprocessed_intrinsics", "render_orbit_sequence", "stack_padded"]
