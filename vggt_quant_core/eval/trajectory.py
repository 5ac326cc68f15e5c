"""Trajectory errors of a long run: absolute (ATE, after aligning the estimate to the ground truth) and
relative over a fixed number of frames (RPE), as in the TUM RGB-D and KITTI benchmarks.

Metric estimates are aligned with SE(3) (their scale is part of what is measured); up-to-scale ones with
Sim(3), whose scale is then reported. Poses are camera-to-world [N, 4, 4] (or centres [N, 3] for ATE).
"""

from typing import Dict

import numpy as np
import torch

from ..geometry import umeyama_sim3
from .metrics import rotation_angle_degrees


def absolute_trajectory_error(estimated: np.ndarray, truth: np.ndarray, metric: bool) -> Dict[str, float]:
    """RMSE (and max) of camera centres [N, 3] after the best SE(3) (``metric``) or Sim(3) alignment of the
    estimate onto the truth, with the Sim(3) scale either way (1 = a correct metric scale)."""
    source = torch.from_numpy(np.asarray(estimated, np.float64))
    target = torch.from_numpy(np.asarray(truth, np.float64))
    similarity = umeyama_sim3(source, target)
    fit = umeyama_sim3(source, target, with_scale=False) if metric else similarity
    error = np.linalg.norm(fit.apply(source).numpy() - truth, axis=1)
    return {"ate_rmse": float(np.sqrt((error ** 2).mean())), "ate_max": float(error.max()),
            "alignment": "SE(3)" if metric else "Sim(3)", "sim3_scale": float(similarity.scale)}


def relative_pose_error(estimated: np.ndarray, truth: np.ndarray, delta: int, scale: float = 1.0) -> Dict[str, float]:
    """Errors of the motion over ``delta`` frames: for every i, (T_i^-1 T_{i+delta}) of the estimate (its
    translation times ``scale``) against the truth's. Returns the RMSE translation error (truth units), the
    same as a percentage of the true distance travelled over those frames, and the mean rotation error (deg)."""
    if len(estimated) <= delta:
        return {"rpe_frames": delta, "rpe_pairs": 0}
    est = np.linalg.inv(estimated[:-delta]) @ estimated[delta:]
    gt = np.linalg.inv(truth[:-delta]) @ truth[delta:]
    translation = np.linalg.norm(scale * est[:, :3, 3] - gt[:, :3, 3], axis=1)
    travelled = np.linalg.norm(truth[delta:, :3, 3] - truth[:-delta, :3, 3], axis=1)
    rotation = rotation_angle_degrees(torch.from_numpy(est[:, :3, :3].transpose(0, 2, 1) @ gt[:, :3, :3])).numpy()
    return {"rpe_frames": delta, "rpe_pairs": len(est),
            "rpe_translation_rmse": float(np.sqrt((translation ** 2).mean())),
            "rpe_translation_percent": float(100 * translation.mean() / max(travelled.mean(), 1e-12)),
            "rpe_rotation_deg": float(rotation.mean())}
