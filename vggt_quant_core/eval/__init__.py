"""Evaluation: accuracy against ground truth (pose AUC, depth AbsRel / delta, point Accuracy / Completeness /
NC), output fidelity, accuracy and speed of quantized models."""

from .metrics import (POSE_AUC_THRESHOLDS, align_points, depth_metrics, point_cloud_metrics, point_map_metrics,
                      point_map_normals, pose_auc, pose_metrics, relative_pose_errors)

__all__ = ["POSE_AUC_THRESHOLDS", "align_points", "depth_metrics", "point_cloud_metrics", "point_map_metrics",
           "point_map_normals", "pose_auc", "pose_metrics", "relative_pose_errors"]
