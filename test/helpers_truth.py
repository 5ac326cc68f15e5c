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


class FisheyeRig:
    """The ``rig`` cameras seen through an equidistant (fisheye) lens with the same K and distortion ``lens``:
    ``fisheye`` images [T, H, W, 3] made with OpenCV (``cv2.fisheye.undistortPoints`` gives each fisheye pixel's
    ray; the room is rendered along it), the pinhole ground truth ``truth`` (a ``Rig``) of the same cameras, and
    ``double()``: a model double that answers as a perfect pinhole depth network would.

    The double recognises each image among the fisheye images and the true pinhole images (nearest in pixel
    space) and returns the true cameras and, per pixel, the true distance of what that pixel shows, placed on the
    pinhole ray of the pixel (the only ray a pinhole model knows). A pinhole image so gets its true geometry back;
    a fisheye image gets the true distances along bent rays: the error of using a fisheye image as a pinhole one,
    and nothing else. Its ``windows`` list (0: fisheye, 1: pinhole, step) per image of each call."""

    def __init__(self, steps: int, width: int, height: int, lens: Sequence[float], fov_x_degrees: float = 75.0):
        import cv2

        from vggt_quant_core.data.scenes import render

        sequence = generate_sequence(0, steps, width, height, trajectory="orbit", kind="room",
                                     fov_x_degrees=fov_x_degrees)
        self.truth, self.lens = Rig.of(sequence), tuple(lens)
        k = self.truth.intrinsics
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        pixels = np.stack([u.ravel(), v.ravel()], -1)[:, None]
        rays = cv2.fisheye.undistortPoints(pixels, k, np.array(lens)).reshape(height, width, 2)   # pinhole x, y
        # a pinhole canvas wide enough for every fisheye ray
        pad = int(np.ceil(max(np.abs(rays[..., 0]).max() * k[0, 0] - width / 2,
                              np.abs(rays[..., 1]).max() * k[1, 1] - height / 2))) + 2
        wide = k.copy()
        wide[:2, 2] += pad
        images, depth = render(sequence.scene, self.truth.extrinsics[0], np.repeat(wide[None], steps, 0),
                               width + 2 * pad, height + 2 * pad)
        map_x = (rays[..., 0] * wide[0, 0] + wide[0, 2]).astype(np.float32)
        map_y = (rays[..., 1] * wide[1, 1] + wide[1, 2]).astype(np.float32)
        self.fisheye = np.stack([cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR) for image in images])
        z = np.stack([cv2.remap(d, map_x, map_y, cv2.INTER_NEAREST) for d in depth])
        distance = z * np.sqrt(1 + (rays ** 2).sum(-1))
        pinhole_rays = np.sqrt(1 + ((u - k[0, 2]) / k[0, 0]) ** 2 + ((v - k[1, 2]) / k[1, 1]) ** 2)
        self._seen_depth = np.stack([distance / pinhole_rays, self.truth.depth[0]]).astype(np.float32)

    def double(self) -> TrueGeometryModel:
        """A new double (see the class docstring), at 1 model unit per metre."""
        return TrueGeometryModel(np.stack([self.fisheye, self.truth.images[0]]),
                                 np.repeat(self.truth.extrinsics[:1], 2, 0), self._seen_depth, self.truth.intrinsics,
                                 scales=(1.0,))
