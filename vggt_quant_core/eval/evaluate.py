"""Scoring reconstructions of generated scenes against their ground truth, next to a trivial baseline."""

import logging
import math
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch

from ..data import RenderedSequence, SceneSequence, generate_sequence
from ..data.trajectories import camera_centres
from ..geometry import Sim3, unproject_depth_map_to_point_map
from ..inference import predictions_to_reconstruction, run_vggt
from ..model import VGGT
from .metrics import (constant_direction_translation_errors, depth_metrics, point_map_metrics, pose_metrics,
                      relative_pose_errors)

log = logging.getLogger(__name__)

BASELINE = "baseline_identity_poses_constant_depth"
# The metrics reported in tables (the papers' headline numbers), in table order.
HEADLINE_METRICS = ("auc@30", "auc@15", "auc@5", "auc@3", "abs_rel", "delta<1.25", "accuracy", "completeness",
                    "normal_consistency")
# Mean errors of the frame pairs (degrees), shown under the headline metrics.
PAIR_ERRORS = ("rotation_error_deg_mean", "translation_error_deg_mean")
# The translation error of one relative translation direction for every pair (the best one in hindsight).
CONSTANT_DIRECTION = "reference_constant_translation_direction"
BASELINE_DESCRIPTION = ("every camera at the identity pose, every pixel at the same depth (after median scaling: "
                        "the frame's median ground-truth depth), points from that depth with the true intrinsics")


@dataclass
class Scored:
    """Metrics of one sequence, with what pooling over sequences and drawing need."""

    metrics: Dict[str, float]         # depth and point metrics (pose AUC is pooled over pairs, see summarise)
    rotation_errors: np.ndarray       # [P] degrees, all frame pairs
    translation_errors: np.ndarray    # [P] degrees
    alignment: Optional[Sim3]         # prediction -> ground truth, None if the prediction is degenerate


def ground_truth_points(truth: RenderedSequence) -> np.ndarray:
    """World points [S, H, W, 3] of the ground-truth depth (meaningful where depth > 0)."""
    return unproject_depth_map_to_point_map(torch.from_numpy(truth.depth).double(), torch.from_numpy(truth.extrinsics),
                                            torch.from_numpy(truth.intrinsics)).numpy()


def score(pred_extrinsics: np.ndarray, pred_depth: np.ndarray, pred_points: np.ndarray,
          truth: RenderedSequence, posed: Optional[np.ndarray] = None,
          with_depth: Optional[np.ndarray] = None) -> Scored:
    """Score a prediction of ``truth``'s frames: extrinsics [S, 3, 4] (any world frame and scale), depth
    [S, H, W] and world points [S, H, W, 3] at the ground truth's resolution. A prediction of some frames
    only names them: ``posed`` [P] (frame indices) for extrinsics [P, 3, 4], ``with_depth`` [D] for depth
    [D, H, W] and points [D, H, W, 3]."""
    every = np.arange(truth.num_frames)
    posed = every if posed is None else np.asarray(posed)
    with_depth = every if with_depth is None else np.asarray(with_depth)
    gt_depth = truth.depth[with_depth]
    if pred_depth.shape != gt_depth.shape:
        raise ValueError(f"prediction is {pred_depth.shape[1:]} pixels, ground truth {gt_depth.shape[1:]}: "
                         "render the scenes at the model's input size")
    rotation, translation = relative_pose_errors(pred_extrinsics, truth.extrinsics[posed])
    points, alignment = point_map_metrics(pred_points, ground_truth_points(truth)[with_depth], gt_depth > 0)
    return Scored({**depth_metrics(pred_depth, gt_depth), **points}, rotation, translation, alignment)


def align_extrinsics(extrinsics: np.ndarray, alignment: Sim3) -> np.ndarray:
    """Camera-from-world extrinsics [S, 3, 4] of cameras carried along by the world similarity
    ``alignment`` (y = s R x + t): centres move like points, orientations turn by R, no scale."""
    rotation = alignment.rotation.numpy()
    centres = alignment.apply(torch.from_numpy(camera_centres(np.asarray(extrinsics, dtype=np.float64)))).numpy()
    turned = extrinsics[:, :, :3] @ rotation.T
    return np.concatenate([turned, -np.einsum("sij,sj->si", turned, centres)[:, :, None]], axis=2)


def trivial_prediction(truth: RenderedSequence):
    """The baseline's (extrinsics [S, 3, 4], depth [S, H, W], points [S, H, W, 3]); see BASELINE_DESCRIPTION."""
    frames = truth.num_frames
    extrinsics = np.tile(np.eye(3, 4), (frames, 1, 1))
    depth = np.ones(truth.depth.shape)
    points = unproject_depth_map_to_point_map(torch.from_numpy(depth), torch.from_numpy(extrinsics),
                                              torch.from_numpy(truth.intrinsics)).numpy()
    return extrinsics, depth, points


def summarise(scored: Sequence[Scored]) -> Dict[str, float]:
    """Pose AUC over the frame pairs of all sequences pooled (as CO3D pools a category's sequences);
    other metrics averaged over sequences (NaN ones, from degenerate predictions, left out and counted)."""
    summary = pose_metrics(np.concatenate([s.rotation_errors for s in scored]),
                           np.concatenate([s.translation_errors for s in scored]))
    for name in scored[0].metrics:
        values = np.array([s.metrics[name] for s in scored])
        summary[name] = float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan
    summary["degenerate_sequences"] = int(sum(s.alignment is None for s in scored))
    return summary


def format_accuracy_table(report: dict) -> str:
    """The one-screen comparison: one row per headline metric and mean pair error, model next to baseline;
    then the translation error one constant direction would give, where the report has it."""
    lines = [f"{'metric':<27}{'model':>10}{'baseline':>10}"]
    for name in (*HEADLINE_METRICS, *PAIR_ERRORS):
        values = [report[key][name] for key in ("model", BASELINE)]
        lines.append(f"{name:<27}" + "".join("       nan" if math.isnan(v) else f"{v:>10.3f}" for v in values))
    if CONSTANT_DIRECTION in report:
        lines.append(f"(one constant translation direction for every pair: "
                     f"{report[CONSTANT_DIRECTION]['translation_error_deg_mean']:.1f} deg)")
    return "\n".join(lines)


def reconstruct_frames(model: VGGT, images: np.ndarray, precision: str = "auto"):
    """Run the model on RGB frames [S, H, W, 3] uint8 (sides multiples of the patch size, no resizing)
    and return the ``inference.Reconstruction`` (points from depth and predicted cameras)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    return predictions_to_reconstruction(run_vggt(model, tensor, precision=precision), point_source="depth")


def evaluate_model(model: VGGT, seeds: Sequence[int], num_frames: int, width: int, height: int,
                   trajectory: str = "any", precision: str = "auto", textures: str = "classic") -> dict:
    """Generate one sequence per seed, reconstruct it, and score model and baseline. Returns the report
    (JSON-ready): ``model`` and ``baseline`` summaries, and per-sequence metrics."""
    patch = model.config.patch_size
    if width % patch or height % patch:
        raise ValueError(f"--width and --height must be multiples of the patch size {patch}, got {width}x{height}")
    if num_frames < 2:
        raise ValueError("pose metrics need at least 2 frames per scene")
    render_seconds = [0.0]

    def rendered() -> Iterator[SceneSequence]:
        for seed in seeds:
            started = time.perf_counter()
            sequence = generate_sequence(seed, num_frames, width, height, trajectory=trajectory, textures=textures)
            render_seconds[0] += time.perf_counter() - started
            yield sequence

    report = evaluate_sequences(model, rendered(), precision)
    report["seconds"] = {"render": round(render_seconds[0], 3), **report["seconds"]}
    return report


def evaluate_sequences(model: VGGT, sequences: Iterable[SceneSequence], precision: str = "auto",
                       with_baseline: bool = True) -> dict:
    """Reconstruct each sequence's first camera (frames at a multiple of the patch size, at least 2) and score
    the model and (``with_baseline``) the baseline, as ``evaluate_model``; rendered sequences can be scored by
    several models this way."""
    model_scores: List[Scored] = []
    baseline_scores: List[Scored] = []
    true_extrinsics = []
    per_scene = []
    seconds = {"inference": 0.0, "metrics": 0.0}
    for index, sequence in enumerate(sequences):
        truth = sequence.cameras[0]
        started = time.perf_counter()
        recon = reconstruct_frames(model, truth.images, precision)
        inferred = time.perf_counter()
        model_scores.append(score(recon.extrinsics, recon.depth, recon.points, truth))
        if with_baseline:
            baseline_scores.append(score(*trivial_prediction(truth), truth))
            true_extrinsics.append(truth.extrinsics)
        seconds["inference"] += inferred - started
        seconds["metrics"] += time.perf_counter() - inferred
        per_scene.append({"seed": int(sequence.seed), "trajectory": sequence.trajectory, "kind": sequence.kind,
                          "model": summarise(model_scores[-1:])})
        if with_baseline:
            per_scene[-1]["baseline"] = summarise(baseline_scores[-1:])
        log.info("scene %d (seed %d, %s): %s", index + 1, sequence.seed, sequence.trajectory,
                 " | ".join(f"{name} AUC@30 {scores['auc@30']:.3f} AbsRel {scores['abs_rel']:.3f}"
                            for name, scores in per_scene[-1].items() if name in ("model", "baseline")))
    report = {"model": summarise(model_scores), "per_scene": per_scene,
              "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    if with_baseline:
        report[BASELINE] = summarise(baseline_scores)
        errors, axis = constant_direction_translation_errors(true_extrinsics)
        report[CONSTANT_DIRECTION] = {"translation_error_deg_mean": float(errors.mean()),
                                      "direction": [round(float(v), 4) for v in axis]}
    return report
