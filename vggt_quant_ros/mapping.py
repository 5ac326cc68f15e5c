"""One consistent map from windows that VGGT reconstructs each in its own frame.

VGGT expresses a window in the camera frame of its first image, at a scale of its own. Each new
window shares images (keyframes) with the previous one; the same pixels of a shared image are
corresponding points, so a confidence-weighted Sim(3) (``umeyama_sim3``) maps the new window onto
the map. The first window defines the map: its first camera is the origin, axes rotated by
``world_rotation`` (optical -> x forward, y left, z up by default), scale = its model units.

``VoxelMap`` accumulates the aligned clouds with a cap on the number of voxels. No ROS here.
"""

from dataclasses import dataclass
from typing import Dict, Hashable, Sequence, Tuple

import numpy as np
import torch

from vggt_quant_core.geometry import mat_to_quat, umeyama_sim3
from vggt_quant_core.inference import Reconstruction, confidence_mask

# x_flu = z_optical, y_flu = -x_optical, z_flu = -y_optical (REP 103 body axes from camera axes)
FLU_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
WORLD_ROTATIONS = {"flu": FLU_FROM_OPTICAL, "optical": np.eye(3)}

_KEY_BITS = 21                    # per axis: voxel indices in [-2^20, 2^20)
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


class AlignmentError(ValueError):
    """A window could not be placed in the map; the message says why."""


def voxel_keys(xyz: np.ndarray, voxel_size: float) -> Tuple[np.ndarray, np.ndarray]:
    """int64 voxel keys of [N, 3] points, and the mask of points inside the representable range."""
    index = np.floor(xyz / voxel_size).astype(np.int64) + _KEY_OFFSET
    inside = ((index >= 0) & (index < (1 << _KEY_BITS))).all(axis=1)
    index = index[inside]
    return (index[:, 0] << (2 * _KEY_BITS)) | (index[:, 1] << _KEY_BITS) | index[:, 2], inside


def _voxel_sums(xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray, voxel_size: float):
    """Per occupied voxel: sorted keys [M], position sums [M, 3] f64, colour sums [M, 3] f64, counts [M],
    max confidence [M]."""
    keys, inside = voxel_keys(xyz, voxel_size)
    xyz, rgb, conf = xyz[inside], rgb[inside], conf[inside]
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)

    def per_voxel(values):
        return np.stack([np.bincount(inverse, weights=values[:, i], minlength=len(unique)) for i in range(3)], 1)

    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    max_conf = np.maximum.reduceat(conf[order], starts) if len(unique) else conf[:0]
    return unique, per_voxel(xyz), per_voxel(rgb), counts, max_conf


def voxel_downsample(xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray, voxel_size: float
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point per occupied voxel: the centroid [M, 3] float32, mean colour [M, 3] uint8, max confidence [M]."""
    _, xyz_sum, rgb_sum, counts, max_conf = _voxel_sums(xyz, rgb, conf, voxel_size)
    return ((xyz_sum / counts[:, None]).astype(np.float32),
            (rgb_sum / counts[:, None]).round().astype(np.uint8), max_conf.astype(np.float32))


class VoxelMap:
    """Accumulated cloud: per voxel the running position and colour sums, point count, max confidence and
    the window that last touched it. Beyond ``max_voxels`` the least recently touched voxels are dropped,
    so memory stays bounded (about 80 bytes per voxel)."""

    def __init__(self, voxel_size: float, max_voxels: int):
        self.voxel_size, self.max_voxels = voxel_size, max_voxels
        self._keys = np.zeros(0, np.int64)         # sorted
        self._xyz_sum = np.zeros((0, 3))
        self._rgb_sum = np.zeros((0, 3))
        self._count = np.zeros(0, np.int64)
        self._conf = np.zeros(0, np.float32)
        self._tick = np.zeros(0, np.int64)
        self._ticks = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray) -> None:
        """Merge [N, 3] points (map frame), [N, 3] uint8 colours and [N] confidences."""
        self._ticks += 1
        keys, xyz_sum, rgb_sum, count, conf_max = _voxel_sums(xyz, rgb, conf, self.voxel_size)
        position = np.searchsorted(self._keys, keys)
        found = position < len(self._keys)
        found[found] = self._keys[position[found]] == keys[found]
        hit = position[found]
        self._xyz_sum[hit] += xyz_sum[found]
        self._rgb_sum[hit] += rgb_sum[found]
        self._count[hit] += count[found]
        self._conf[hit] = np.maximum(self._conf[hit], conf_max[found])
        self._tick[hit] = self._ticks
        new, where = ~found, position[~found]
        self._keys = np.insert(self._keys, where, keys[new])
        self._xyz_sum = np.insert(self._xyz_sum, where, xyz_sum[new], axis=0)
        self._rgb_sum = np.insert(self._rgb_sum, where, rgb_sum[new], axis=0)
        self._count = np.insert(self._count, where, count[new])
        self._conf = np.insert(self._conf, where, conf_max[new])
        self._tick = np.insert(self._tick, where, self._ticks)
        if len(self._keys) > self.max_voxels:
            oldest = np.argsort(self._tick, kind="stable")[:len(self._keys) - self.max_voxels]
            keep = np.ones(len(self._keys), bool)
            keep[oldest] = False
            for name in ("_keys", "_xyz_sum", "_rgb_sum", "_count", "_conf", "_tick"):
                setattr(self, name, getattr(self, name)[keep])

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centroids [M, 3] float32, mean colours [M, 3] uint8, max confidences [M] float32."""
        count = self._count[:, None]
        return ((self._xyz_sum / count).astype(np.float32), (self._rgb_sum / count).round().astype(np.uint8),
                self._conf.copy())


@dataclass
class WindowUpdate:
    """One window placed in the map (frame ``map``; units of the first window)."""

    scale: float               # map-from-window similarity: x_map = scale * rotation @ x + translation
    rotation: np.ndarray       # [3, 3]
    translation: np.ndarray    # [3]
    positions: np.ndarray      # [S, 3] camera centres, one per image of the window
    quaternions: np.ndarray    # [S, 4] (x, y, z, w) camera orientations (optical axes) in the map
    xyz: np.ndarray            # [N, 3] float32 the window's confidence-filtered, voxel-downsampled cloud
    rgb: np.ndarray            # [N, 3] uint8
    conf: np.ndarray           # [N] float32
    shared_images: int         # images the alignment used (0 for the first window)
    rmse: float                # weighted RMS residual of the alignment, map units (0 for the first window)


class WindowMapper:
    """Chains windows into the map and keeps the accumulated ``VoxelMap``.

    ``integrate`` takes one key per image (e.g. (stamp, camera)); images whose key appeared in the
    previous integrated window are the correspondences. Only that window's points are kept for
    alignment, so memory does not grow with the trajectory.
    """

    def __init__(self, voxel_size: float, max_voxels: int, world_rotation: np.ndarray = FLU_FROM_OPTICAL,
                 max_align_points: int = 20000):
        self.voxel_size = voxel_size
        self.world_rotation = np.asarray(world_rotation, dtype=np.float64)
        self.max_align_points = max_align_points
        self.map = VoxelMap(voxel_size, max_voxels)
        self._previous: Dict[Hashable, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # key -> points, keep, conf

    @property
    def started(self) -> bool:
        return bool(self._previous)

    def integrate(self, keys: Sequence[Hashable], recon: Reconstruction, conf_percentile: float = 50.0,
                  conf_min: float = 1.0, accumulate: bool = True) -> WindowUpdate:
        """Place ``recon`` (S images, keys[i] for image i) in the map; raises ``AlignmentError``."""
        if len(keys) != recon.num_frames:
            raise ValueError(f"{len(keys)} keys for {recon.num_frames} images")
        finite = np.isfinite(recon.points).all(axis=-1)
        keep = confidence_mask(recon.points_conf, conf_percentile, conf_min) & finite
        if not keep.any():
            raise AlignmentError("no finite point passes the confidence filter")
        scale, rotation, translation, shared, rmse = self._align(keys, recon.points, keep, recon.points_conf)

        def to_map(points: np.ndarray) -> np.ndarray:
            return (scale * points.astype(np.float64) @ rotation.T + translation).astype(np.float32)

        # camera-to-window = inverse of the camera-from-window extrinsics: R^T, centre -R^T t
        cam_rotation = recon.extrinsics[:, :3, :3].astype(np.float64).transpose(0, 2, 1)
        centres = -(cam_rotation @ recon.extrinsics[:, :3, 3:].astype(np.float64))[..., 0]
        orientation = rotation @ cam_rotation
        quaternions = mat_to_quat(torch.from_numpy(orientation)).numpy()
        positions = scale * centres @ rotation.T + translation

        mapped = to_map(np.where(finite[..., None], recon.points, 0))
        xyz, rgb, conf = voxel_downsample(mapped[keep], recon.images[keep], recon.points_conf[keep], self.voxel_size)
        if accumulate:
            self.map.add(xyz, rgb, conf)
        self._previous = {key: (mapped[i], keep[i], recon.points_conf[i]) for i, key in enumerate(keys)}
        return WindowUpdate(scale=scale, rotation=rotation, translation=translation, positions=positions,
                            quaternions=quaternions, xyz=xyz, rgb=rgb, conf=conf, shared_images=shared, rmse=rmse)

    def _align(self, keys, points, keep, conf):
        """Map-from-window Sim(3) as (scale, rotation, translation, shared images, rmse)."""
        if not self._previous:
            return 1.0, self.world_rotation, np.zeros(3), 0, 0.0
        shared = [i for i, key in enumerate(keys) if key in self._previous]
        if not shared:
            raise AlignmentError("the window shares no image with the map (was the previous window lost?)")
        sources, targets, weights = [], [], []
        for i in shared:
            old_points, old_keep, old_conf = self._previous[keys[i]]
            both = keep[i] & old_keep
            sources.append(points[i][both])
            targets.append(old_points[both])
            weights.append(np.minimum(conf[i][both], old_conf[both]))
        source, target, weight = (np.concatenate(a).astype(np.float64) for a in (sources, targets, weights))
        if len(source) > self.max_align_points:  # evenly spread subset: enough for 7 parameters
            pick = np.linspace(0, len(source) - 1, self.max_align_points).astype(np.int64)
            source, target, weight = source[pick], target[pick], weight[pick]
        try:
            sim = umeyama_sim3(torch.from_numpy(source), torch.from_numpy(target), torch.from_numpy(weight))
        except ValueError as exc:
            raise AlignmentError(f"alignment on {len(shared)} shared image(s) failed: {exc}") from exc
        scale, rotation, translation = float(sim.scale), sim.rotation.numpy(), sim.translation.numpy()
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(rotation).all() and np.isfinite(translation).all()):
            raise AlignmentError(f"alignment gave a degenerate similarity (scale {scale})")
        residual = scale * source @ rotation.T + translation - target
        rmse = float(np.sqrt((weight * (residual ** 2).sum(1)).sum() / weight.sum()))
        return scale, rotation, translation, len(shared), rmse
