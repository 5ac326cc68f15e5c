"""Ground truth for tests of the mapping and the node (importable as ``helpers_truth``): a camera rig
moving through a procedural room, and a model double that answers with the rig's true depth and poses
in VGGT's conventions (``data.scenes.surface_distance`` measures points against the room)."""

import threading
from functools import lru_cache
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.data.scenes import Scene, SceneSequence
from vggt_quant_core.eval.oracle import TrueGeometryModel


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


class GroundTruthModel(TrueGeometryModel):
    """``eval.oracle.TrueGeometryModel`` over a ``Rig``, with what tests need to steer it.

    ``gate``: if given, each call waits for it (tests hold inference); ``entered`` is set on entry.
    ``corrupt``: call indices whose poses come back NaN; ``drift``: see ``TrueGeometryModel``.
    """

    def __init__(self, rig: Rig, scales: Sequence[float] = (0.7, 1.3, 0.9, 1.1), gate: Optional[threading.Event] = None,
                 corrupt: Sequence[int] = (), drift: float = 0.0):
        super().__init__(rig.images, rig.extrinsics, rig.depth, rig.intrinsics, scales, drift)
        self.rig, self.gate, self.corrupt = rig, gate, set(corrupt)
        self.entered = threading.Event()

    def predict(self, images: torch.Tensor, keys=None) -> Dict[str, torch.Tensor]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test never released the model"
        call = self.calls
        predictions = super().predict(images, keys)
        if call in self.corrupt:
            predictions["pose_enc"][:] = float("nan")
        return predictions
