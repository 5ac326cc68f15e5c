"""Accuracy metrics with the definitions of the papers VGGT and its quantized variants report.

Camera pose (VGGT's CO3Dv2 evaluation, ``evaluation/test_co3d.py``): for every frame pair i < j the
relative pose ``E_i E_j^-1`` (camera-from-world extrinsics) of prediction and ground truth; the
rotation error is the angle of ``R_gt^T R_pred`` of the two relative rotations, the translation error
the angle between the two relative translations taken as undirected lines (in [0, 90] degrees; a
zero-length translation counts as 90, as the official normalisation by norm + eps gives). Angles
are computed with atan2 in float64 (the official acos form loses precision near 0). AUC@T is the
mean over k = 1..T of the fraction of pairs with ``max(rotation error, translation error)`` below k
degrees (the last bin includes T): ``np.histogram`` with 1-degree bins, cumulated, averaged.

Depth (monocular protocol): per frame, over pixels with valid ground truth, the prediction is scaled
by ``median(gt) / median(pred)``; AbsRel = mean |s pred - gt| / gt and delta<1.25 = fraction of
pixels with max(s pred / gt, gt / (s pred)) < 1.25; both averaged over frames. Non-finite or
non-positive predictions count as failures (AbsRel contribution 1, delta fails).

Points (the Spann3R / CUT3R 7-Scenes protocol, without its final ICP): the predicted point map is
aligned to the ground truth by a Sim(3) (Umeyama, pixel correspondences); Accuracy = distances
from each predicted point to its nearest ground-truth point, Completeness = from each ground-truth
point to its nearest predicted point, mean and median, in ground-truth units (metres); Normal
Consistency = |n_pred . n_gt| between a point's normal and its nearest neighbour's, accuracy side
and completeness side averaged (mean of the two means, mean of the two medians). Normals come from
the pixel grid of each point map (cross product of central differences). Point maps larger than
``MAX_POINTS`` valid pixels are scored on a seeded random subset of pixels, the same for prediction
and ground truth (the Sim(3) uses all valid pixels).
"""

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.spatial import cKDTree

from ..geometry import Sim3, closed_form_inverse_se3, umeyama_sim3

POSE_AUC_THRESHOLDS = (30, 15, 5, 3)
# Nearest-neighbour queries cost up to ~50 us per point on 2 cores when the clouds are far apart (an
# untrained model's): point maps are scored on a fixed-size random subset of their valid pixels.
MAX_POINTS = 20_000
DIRECTION_CANDIDATES = 4000  # start directions of the constant-direction reference's search


def rotation_angle_degrees(rotations: torch.Tensor) -> torch.Tensor:
    """Rotation angles (degrees) [N] of rotation matrices [N, 3, 3], by atan2(sin, cos): well conditioned near 0
    (acos of a cosine near 1 is not)."""
    rotations = torch.as_tensor(rotations)
    skew = rotations - rotations.transpose(1, 2)
    sin = torch.stack([skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]], -1).norm(dim=-1) / 2
    cos = (rotations.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))


def _relative_poses(extrinsics: torch.Tensor) -> torch.Tensor:
    """E_i E_j^-1 [P, 4, 4] (camera j's frame -> camera i's) of every pair i < j of extrinsics [S, 3|4, 4]."""
    first, second = torch.triu_indices(len(extrinsics), len(extrinsics), offset=1)
    homogeneous = torch.eye(4, dtype=torch.float64).repeat(len(extrinsics), 1, 1)
    homogeneous[:, :3] = extrinsics[:, :3]
    return homogeneous[first] @ closed_form_inverse_se3(homogeneous[second])


def relative_pose_errors(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rotation and translation angle errors (degrees) [P] over all P = S (S - 1) / 2 frame pairs i < j.

    pred_extrinsics, gt_extrinsics: [S, 3, 4] (or [S, 4, 4]) camera-from-world. Float64 throughout.
    """
    pred, gt = torch.as_tensor(pred_extrinsics).double(), torch.as_tensor(gt_extrinsics).double()
    if pred.shape != gt.shape or pred.dim() != 3 or pred.shape[0] < 2:
        raise ValueError(f"need [S, 3, 4] extrinsics for S >= 2 frames, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    rel_pred, rel_gt = _relative_poses(pred), _relative_poses(gt)
    rotation = rotation_angle_degrees(rel_gt[:, :3, :3].transpose(1, 2) @ rel_pred[:, :3, :3])
    translation = undirected_angle_degrees(rel_pred[:, :3, 3], rel_gt[:, :3, 3])
    # Non-finite predictions are as wrong as can be.
    return (torch.nan_to_num(rotation, nan=180.0).numpy(), torch.nan_to_num(translation, nan=90.0).numpy())


def undirected_angle_degrees(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Angles [N] in [0, 90] degrees between the lines of vectors [N, 3] (a zero vector counts as 90)."""
    angle = torch.rad2deg(torch.atan2(torch.linalg.cross(first, second).norm(dim=-1), (first * second).sum(-1).abs()))
    degenerate = (first.norm(dim=-1) == 0) | (second.norm(dim=-1) == 0)
    return torch.where(degenerate, torch.full_like(angle, 90.0), angle)


def constant_direction_translation_errors(gt_extrinsics: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """The translation errors (degrees) [P] of a predictor that gives every frame pair of these sequences
    (each [S, 3, 4]) one and the same relative translation direction, the one with the least mean error
    for them (a search over ``DIRECTION_CANDIDATES`` directions, refined by Nelder-Mead), and that axis
    [3]. The reference a model beats only by telling pairs apart."""
    translations = torch.cat([_relative_poses(torch.as_tensor(e).double())[:, :3, 3] for e in gt_extrinsics])

    def axis_at(angles):
        polar, azimuth = angles
        return torch.tensor([math.sin(polar) * math.cos(azimuth), math.sin(polar) * math.sin(azimuth),
                             math.cos(polar)], dtype=torch.float64)

    def mean_error(angles):
        return float(undirected_angle_degrees(axis_at(angles).expand_as(translations), translations).mean())

    # A Fibonacci lattice on the upper hemisphere (lines, so one half is enough).
    index = np.arange(DIRECTION_CANDIDATES) + 0.5
    polar, azimuth = np.arccos(index / DIRECTION_CANDIDATES), np.pi * (1 + 5 ** 0.5) * index
    candidates = torch.from_numpy(np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth),
                                            np.cos(polar)], 1))
    units = translations / translations.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    cosines = (units @ candidates.T).abs().clamp(max=1)
    errors = torch.rad2deg(torch.acos(cosines)).mean(0)
    start = int(errors.argmin())
    best = minimize(mean_error, [polar[start], azimuth[start]], method="Nelder-Mead",
                    options={"xatol": 1e-5, "fatol": 1e-6}).x
    axis = axis_at(best)
    return undirected_angle_degrees(axis.expand_as(translations), translations).numpy(), axis.numpy()


def pose_auc(rotation_errors: np.ndarray, translation_errors: np.ndarray, max_threshold: int) -> float:
    """AUC@``max_threshold`` (in [0, 1]) of per-pair errors in degrees, as VGGT's CO3D evaluation."""
    worst = np.maximum(np.asarray(rotation_errors), np.asarray(translation_errors))
    if worst.size == 0:
        raise ValueError("no frame pairs to evaluate")
    counts, _ = np.histogram(worst, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(counts) / worst.size))


def pose_metrics(rotation_errors: np.ndarray, translation_errors: np.ndarray) -> Dict[str, float]:
    """``auc@30``, ``auc@15``, ``auc@5``, ``auc@3`` and the mean errors of pooled frame pairs."""
    metrics = {f"auc@{t}": pose_auc(rotation_errors, translation_errors, t) for t in POSE_AUC_THRESHOLDS}
    metrics["rotation_error_deg_mean"] = float(np.mean(rotation_errors))
    metrics["translation_error_deg_mean"] = float(np.mean(translation_errors))
    return metrics


def depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray) -> Dict[str, float]:
    """``abs_rel`` and ``delta<1.25`` of depth [S, H, W] after per-frame median scaling; ground truth
    <= 0 or non-finite is invalid. Frames without valid ground truth are skipped."""
    pred_depth, gt_depth = np.asarray(pred_depth, dtype=np.float64), np.asarray(gt_depth, dtype=np.float64)
    if pred_depth.shape != gt_depth.shape or pred_depth.ndim != 3:
        raise ValueError(f"need depth [S, H, W] twice, got {pred_depth.shape} and {gt_depth.shape}")
    abs_rel, delta = [], []
    for pred, gt in zip(pred_depth, gt_depth):
        valid = np.isfinite(gt) & (gt > 0)
        if not valid.any():
            continue
        pred, gt = pred[valid], gt[valid]
        usable = np.isfinite(pred) & (pred > 0)
        scaled = np.zeros_like(pred)
        if usable.any():
            scaled[usable] = pred[usable] * np.median(gt) / np.median(pred[usable])
        abs_rel.append(float(np.mean(np.where(usable, np.abs(scaled - gt) / gt, 1.0))))
        with np.errstate(divide="ignore"):
            ratio = np.where(usable, np.maximum(scaled / gt, gt / scaled), np.inf)
        delta.append(float(np.mean(ratio < 1.25)))
    if not abs_rel:
        raise ValueError("no frame has valid ground-truth depth")
    return {"abs_rel": float(np.mean(abs_rel)), "delta<1.25": float(np.mean(delta))}


def point_map_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals [S, H, W, 3] of point maps [S, H, W, 3] from the cross product of central differences
    along the pixel grid; NaN on the border and wherever a neighbour is non-finite or degenerate."""
    points = np.asarray(points, dtype=np.float64)
    normals = np.full(points.shape, np.nan)
    along_u = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    along_v = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    cross = np.cross(along_u, along_v)
    length = np.linalg.norm(cross, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normals[:, 1:-1, 1:-1] = np.where(length > 1e-12, cross / length, np.nan)
    return normals


def align_points(pred_points: np.ndarray, gt_points: np.ndarray, valid: np.ndarray) -> Sim3:
    """Sim(3) taking predicted world points onto ground truth, from pixel correspondences.

    pred_points, gt_points [S, H, W, 3]; valid [S, H, W] (e.g. ground-truth depth > 0). Raises
    ValueError for a degenerate prediction (e.g. all points equal).
    """
    mask = np.asarray(valid) & np.isfinite(pred_points).all(-1) & np.isfinite(gt_points).all(-1)
    return umeyama_sim3(torch.from_numpy(np.asarray(pred_points, dtype=np.float64)[mask]),
                        torch.from_numpy(np.asarray(gt_points, dtype=np.float64)[mask]))


def point_cloud_metrics(pred: np.ndarray, gt: np.ndarray, pred_normals: Optional[np.ndarray] = None,
                        gt_normals: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Accuracy, Completeness (mean, median) and, with normals, Normal Consistency of aligned clouds.

    pred [N, 3], gt [M, 3] in the same frame and units; normals [N, 3] / [M, 3] (NaN rows are left out
    of NC only).
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.ndim != 2 or gt.ndim != 2 or pred.shape[1] != 3 or gt.shape[1] != 3 or not len(pred) or not len(gt):
        raise ValueError(f"need two non-empty [N, 3] clouds, got {pred.shape} and {gt.shape}")
    to_gt, nearest_gt = cKDTree(gt).query(pred, workers=-1)
    to_pred, nearest_pred = cKDTree(pred).query(gt, workers=-1)
    metrics = {"accuracy": float(np.mean(to_gt)), "accuracy_median": float(np.median(to_gt)),
               "completeness": float(np.mean(to_pred)), "completeness_median": float(np.median(to_pred))}
    if pred_normals is not None and gt_normals is not None:
        accuracy_side = np.abs(np.sum(pred_normals * gt_normals[nearest_gt], axis=-1))
        completeness_side = np.abs(np.sum(gt_normals * pred_normals[nearest_pred], axis=-1))
        sides = [side[np.isfinite(side)] for side in (accuracy_side, completeness_side)]
        metrics["normal_consistency"] = float(np.mean([s.mean() if s.size else math.nan for s in sides]))
        metrics["normal_consistency_median"] = float(np.mean([np.median(s) if s.size else math.nan for s in sides]))
    return metrics


def point_map_metrics(pred_points: np.ndarray, gt_points: np.ndarray, valid: np.ndarray,
                      max_points: int = MAX_POINTS) -> Tuple[Dict[str, float], Optional[Sim3]]:
    """Sim(3)-align point maps [S, H, W, 3] over ``valid`` pixels [S, H, W], then
    :func:`point_cloud_metrics` (normals from each map's pixel grid) on at most ``max_points`` of those
    pixels, the same seeded random subset for both maps. Returns the metrics and the alignment; a
    degenerate prediction gets NaN metrics and no alignment."""
    try:
        sim3 = align_points(pred_points, gt_points, valid)
    except ValueError:
        names = ("accuracy", "accuracy_median", "completeness", "completeness_median", "normal_consistency",
                 "normal_consistency_median")
        return dict.fromkeys(names, math.nan), None
    aligned = sim3.apply(torch.from_numpy(np.asarray(pred_points, dtype=np.float64))).numpy()
    # Normals of the aligned map: a similarity turns normals by its rotation only, so either order works.
    pred_normals, gt_normals = point_map_normals(aligned), point_map_normals(gt_points)
    pixels = np.flatnonzero(np.asarray(valid))
    if len(pixels) > max_points:
        pixels = np.sort(np.random.default_rng(0).choice(pixels, max_points, replace=False))
    pred, gt = aligned.reshape(-1, 3)[pixels], np.asarray(gt_points, dtype=np.float64).reshape(-1, 3)[pixels]
    keep = np.isfinite(pred).all(-1)
    return point_cloud_metrics(pred[keep], gt, pred_normals.reshape(-1, 3)[pixels][keep],
                               gt_normals.reshape(-1, 3)[pixels]), sim3
