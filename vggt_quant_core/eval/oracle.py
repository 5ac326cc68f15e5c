"""A model double that knows the answer: for images of a generated sequence it returns their true depth and
cameras in VGGT's conventions, so what follows the model (chaining windows, the metric scale) is measured alone.

Each input image is recognised among the sequence's frames (nearest in pixel space); the cameras come back
relative to the window's first image (VGGT's world frame) and multiplied, with the depth, by a scale of the
call's own (``scales``, cycled), as VGGT's per-window normalisation does. ``drift`` makes the scale grow by
that fraction per time step within a window (image k of the window is the truth scaled by (1 + drift)^k
about the first camera), so chaining windows drifts in scale as a real model's chain does.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..data.scenes import SceneSequence
from ..geometry import extri_intri_to_pose_encoding, unproject_depth_map_to_point_map


class TrueGeometryModel:
    """``predict`` maps images [S, 3, H, W] in [0, 1] to VGGT's prediction dict with the true geometry.

    images [C, T, H, W, 3] uint8, extrinsics [C, T, 3, 4] camera-from-world, depth [C, T, H, W] metres,
    intrinsics [3, 3] of every camera; ``windows`` lists per call the (camera, step) of each image."""

    def __init__(self, images: np.ndarray, extrinsics: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray,
                 scales: Sequence[float] = (0.7, 1.3, 0.9, 1.1), drift: float = 0.0):
        self.images, self.extrinsics, self.depth = images, np.asarray(extrinsics, np.float64), depth
        self.intrinsics, self.scales, self.drift = np.asarray(intrinsics, np.float64), list(scales), drift
        self.calls = 0
        self.windows: List[List[Tuple[int, int]]] = []
        flat = images.reshape(-1, *images.shape[2:])
        self._library = torch.from_numpy(flat).permute(0, 3, 1, 2).float().div(255).flatten(1)

    @classmethod
    def of(cls, sequence: SceneSequence, scales: Sequence[float] = (0.7, 1.3, 0.9, 1.1), drift: float = 0.0
           ) -> "TrueGeometryModel":
        cameras = sequence.cameras
        return cls(np.stack([c.images for c in cameras]), np.stack([c.extrinsics for c in cameras]),
                   np.stack([c.depth for c in cameras]), cameras[0].intrinsics[0], scales, drift)

    def predict(self, images: torch.Tensor, keys=None) -> Dict[str, torch.Tensor]:
        """``keys`` (frame keys, as a real estimator takes them) are not needed: frames are recognised."""
        call, self.calls = self.calls, self.calls + 1
        steps = self.images.shape[1]
        found = torch.cdist(images.float().flatten(1), self._library).argmin(dim=1).tolist()
        ids = [divmod(int(i), steps) for i in found]
        self.windows.append(ids)
        extrinsics = np.stack([np.vstack([self.extrinsics[c, t], [0, 0, 0, 1]]) for c, t in ids])
        relative = extrinsics @ np.linalg.inv(extrinsics[0])     # camera-from-first-camera
        rank = {t: k for k, t in enumerate(sorted({t for _, t in ids}))}    # time step within the window
        scale = self.scales[call % len(self.scales)] * (1 + self.drift) ** np.array([rank[t] for _, t in ids])
        relative[:, :3, 3] *= scale[:, None]
        true_depth = torch.from_numpy(np.stack([self.depth[c, t] for c, t in ids])).float()
        depth = true_depth * torch.from_numpy(scale).float()[:, None, None]
        extri = torch.from_numpy(relative[:, :3]).float()
        intri = torch.from_numpy(np.repeat(self.intrinsics[None], len(ids), 0)).float()
        pose_enc = extri_intri_to_pose_encoding(extri[None], intri[None], tuple(depth.shape[-2:]))
        conf = 1 + 4 / (1 + true_depth)   # in (1, 5), higher when near, like VGGT's: percentiles have work to do
        return {"pose_enc": pose_enc, "depth": depth[None, ..., None], "depth_conf": conf[None],
                "world_points": unproject_depth_map_to_point_map(depth, extri, intri)[None],
                "world_points_conf": conf[None], "images": images[None]}
