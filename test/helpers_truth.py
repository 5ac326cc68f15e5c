"""Ground truth for tests of the mapping and the node (importable as ``helpers_truth``): a camera rig
moving through a procedural room, and a model double that answers with the rig's true depth and poses
in VGGT's conventions (``data.scenes.surface_distance`` measures points against the room)."""

import threading
from functools import lru_cache
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.scenes import Scene, SceneSequence
from vggt_quant_core.geometry import extri_intri_to_pose_encoding, unproject_depth_map_to_point_map


class Rig:
    """Cameras moving along an orbit in the room of ``generate_sequence(seed)``; camera 1 (if any) is the
    generator's stereo partner to the right of camera 0. Ground truth per camera: images [T, H, W, 3],
    depth [T, H, W], extrinsics [T, 3, 4] (camera-from-world, OpenCV), one intrinsic matrix [3, 3]."""

    def __init__(self, steps: int, width: int, height: int, cameras: int = 1, seed: int = 0):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small renders: threads only add contention on a busy 2-core machine
        try:
            sequence = generate_sequence(seed, steps, width, height, trajectory="orbit", cameras=cameras, kind="room")
        finally:
            torch.set_num_threads(threads)
        self._take(sequence)

    @classmethod
    def of(cls, sequence: SceneSequence) -> "Rig":
        """The rig of a sequence generated elsewhere (e.g. the one a demo records)."""
        rig = cls.__new__(cls)
        rig._take(sequence)
        return rig

    def _take(self, sequence: SceneSequence) -> None:
        self.scene: Scene = sequence.scene
        self.intrinsics = sequence.cameras[0].intrinsics[0].astype(np.float64)
        self.extrinsics = np.stack([c.extrinsics for c in sequence.cameras]).astype(np.float64)   # [C, T, 3, 4]
        self.images = np.stack([c.images for c in sequence.cameras])                           # [C, T, H, W, 3]
        self.depth = np.stack([c.depth for c in sequence.cameras])                             # [C, T, H, W]

    def centre(self, camera: int, step: int) -> np.ndarray:
        e = self.extrinsics[camera, step]
        return -e[:, :3].T @ e[:, 3]


@lru_cache(maxsize=4)
def rig(steps: int, width: int, height: int, cameras: int = 1) -> Rig:
    return Rig(steps, width, height, cameras)


class GroundTruthModel:
    """Stands in for VGGT: recognises each input image among the rig's frames and returns its true depth
    and camera, relative to the window's first image (VGGT's convention) and multiplied by a scale of
    its own per call (``scales``, cycled), as VGGT's per-window normalisation does.

    ``gate``: if given, each call waits for it (tests hold inference); ``entered`` is set on entry.
    ``corrupt``: call indices whose poses come back NaN.
    """

    def __init__(self, rig: Rig, scales: Sequence[float] = (0.7, 1.3, 0.9, 1.1), gate: Optional[threading.Event] = None,
                 corrupt: Sequence[int] = ()):
        self.rig, self.scales, self.gate, self.corrupt = rig, list(scales), gate, set(corrupt)
        self.calls = 0
        self.entered = threading.Event()
        self.windows: List[List[tuple]] = []     # per call: (camera, step) of each image
        images = rig.images.reshape(-1, *rig.images.shape[2:])
        self._library = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).flatten(1)

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test never released the model"
        call, self.calls = self.calls, self.calls + 1
        steps = self.rig.images.shape[1]
        found = [int(torch.cdist(image.flatten()[None], self._library).argmin()) for image in images]
        ids = [divmod(i, steps) for i in found]
        self.windows.append(ids)
        extrinsics = np.stack([np.vstack([self.rig.extrinsics[c, t], [0, 0, 0, 1]]) for c, t in ids])
        relative = extrinsics @ np.linalg.inv(extrinsics[0])     # camera-from-first-camera
        scale = self.scales[call % len(self.scales)]
        relative[:, :3, 3] *= scale
        true_depth = torch.from_numpy(np.stack([self.rig.depth[c, t] for c, t in ids])).float()
        depth = true_depth * scale
        extri = torch.from_numpy(relative[:, :3]).float()
        intri = torch.from_numpy(np.repeat(self.rig.intrinsics[None], len(ids), 0)).float()
        height, width = depth.shape[-2:]
        pose_enc = extri_intri_to_pose_encoding(extri[None], intri[None], (height, width))
        if call in self.corrupt:
            pose_enc[:] = float("nan")
        conf = 1 + 4 / (1 + true_depth)   # in (1, 5), higher when near, like VGGT's: percentiles have work to do
        return {"pose_enc": pose_enc, "depth": depth[None, ..., None], "depth_conf": conf[None],
                "world_points": unproject_depth_map_to_point_map(depth, extri, intri)[None],
                "world_points_conf": conf[None], "images": images[None]}
