"""One consistent map from windows that VGGT reconstructs each in its own frame.

VGGT expresses a window in the camera frame of its first image, at a scale of its own. Each new
window shares images (keyframes) with the previous one; the same pixels of a shared image are
corresponding points, so a confidence-weighted Sim(3) (``umeyama_sim3``) maps the new window onto
the map. The first window defines the map: its first camera is the origin, axes rotated by
``world_rotation`` (optical -> x forward, y left, z up by default), scale = its model units (until a metric
scale source rescales it: ``rescale``, ``Alignment.with_scale``).

``VoxelMap`` accumulates the aligned clouds with a cap on the number of voxels. No ROS here.
"""

import dataclasses
from dataclasses import dataclass
from typing import Dict, Hashable, Sequence, Tuple

import numpy as np
import torch

from vggt_quant_core.data.trajectories import camera_centres
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
    index = np.floor(xyz * (1.0 / voxel_size)).astype(np.int64) + _KEY_OFFSET
    inside = (index.view(np.uint64) < (1 << _KEY_BITS)).all(axis=1)   # negatives wrap to huge values
    index = index[inside]
    return (index[:, 0] << (2 * _KEY_BITS)) | (index[:, 1] << _KEY_BITS) | index[:, 2], inside


_XYZ, _RGB, _COUNT, _CONF, _TICK = slice(0, 3), slice(3, 6), 6, 7, 8   # columns of the per-voxel rows


def _merge_by_key(keys: np.ndarray, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rows with equal keys merged: sorted unique keys, and per key the sums of the columns before ``_CONF`` and
    the maxima of the others."""
    if len(keys) == 0:
        return keys, np.zeros((0, rows.shape[1]))
    order = np.argsort(keys, kind="stable")    # one sort groups the voxels; reduceat reduces each group
    keys, rows = keys[order], rows[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    merged = np.empty((len(starts), rows.shape[1]))
    merged[:, :_CONF] = np.add.reduceat(rows[:, :_CONF], starts, axis=0)
    merged[:, _CONF:] = np.maximum.reduceat(rows[:, _CONF:], starts, axis=0)
    return keys[starts], merged


@dataclass
class VoxelSums:
    """Points grouped by voxel: sorted keys [M] and float64 rows [M, 8] = position sums (3), colour sums (3),
    point count, max confidence."""

    keys: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray, voxel_size: float) -> "VoxelSums":
        keys, inside = voxel_keys(xyz, voxel_size)
        values = np.concatenate([xyz, rgb, np.ones((len(xyz), 1)), conf[:, None]], axis=1, dtype=np.float64)
        return cls(*_merge_by_key(keys, values[inside]))

    def centroids(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One point per voxel: centroid [M, 3] float32, mean colour [M, 3] uint8, max confidence [M] float32."""
        return _centroids(self.rows)


def _centroids(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = (rows[:, :_COUNT] / rows[:, _COUNT, None]).astype(np.float32)   # one pass for position and colour
    return mean[:, _XYZ], (mean[:, _RGB] + 0.5).astype(np.uint8), rows[:, _CONF].astype(np.float32)


def voxel_downsample(xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray, voxel_size: float
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point per occupied voxel: the centroid [M, 3] float32, mean colour [M, 3] uint8, max confidence [M]."""
    return VoxelSums.of(xyz, rgb, conf, voxel_size).centroids()


class VoxelMap:
    """Accumulated cloud: sorted voxel keys and per voxel a row of running position and colour sums, point
    count, max confidence and the window that last touched it. Beyond ``max_voxels`` the least recently
    touched voxels are dropped, so memory stays bounded (80 bytes per voxel)."""

    def __init__(self, voxel_size: float, max_voxels: int):
        self.voxel_size, self.max_voxels = voxel_size, max_voxels
        self._keys = np.zeros(0, np.int64)
        self._rows = np.zeros((0, 9))    # VoxelSums columns + the tick of the last window that touched it
        self._ticks = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, sums: VoxelSums) -> None:
        """Merge the voxel sums of new points (map frame, same voxel size)."""
        self._ticks += 1
        position = np.searchsorted(self._keys, sums.keys)
        found = position < len(self._keys)
        found[found] = self._keys[position[found]] == sums.keys[found]
        hit = position[found]
        self._rows[hit, :_CONF] += sums.rows[found, :_CONF]
        self._rows[hit, _CONF] = np.maximum(self._rows[hit, _CONF], sums.rows[found, _CONF])
        self._rows[hit, _TICK] = self._ticks
        new = ~found
        fresh = np.empty((int(new.sum()), 9))
        fresh[:, :_TICK] = sums.rows[new]
        fresh[:, _TICK] = self._ticks
        self._keys = np.insert(self._keys, position[new], sums.keys[new])   # two copies of the map, not seven
        self._rows = np.insert(self._rows, position[new], fresh, axis=0)
        if len(self._keys) > self.max_voxels:
            oldest = np.argsort(self._rows[:, _TICK], kind="stable")[:len(self._keys) - self.max_voxels]
            keep = np.ones(len(self._keys), bool)
            keep[oldest] = False
            self._keys, self._rows = self._keys[keep], self._rows[keep]

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centroids [M, 3] float32, mean colours [M, 3] uint8, max confidences [M] float32."""
        return _centroids(self._rows)

    def rescale(self, factor: float) -> None:
        """Scale every point by ``factor`` about the origin; voxels that now share a cell merge (their sums add,
        the latest tick stays)."""
        rows = self._rows.copy()
        rows[:, _XYZ] *= factor
        keys, inside = voxel_keys(rows[:, _XYZ] / np.maximum(rows[:, _COUNT, None], 1), self.voxel_size)
        self._keys, self._rows = _merge_by_key(keys, rows[inside])


@dataclass
class WindowUpdate:
    """One window placed in the map (frame ``map``; units of the first window, or metres once a metric scale
    source has rescaled it)."""

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


@dataclass(frozen=True)
class Alignment:
    """Where a window goes in the map: x_map = scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray       # [3, 3]
    translation: np.ndarray    # [3]
    keep: np.ndarray           # [S, H, W] bool, the window's points that pass the confidence filter
    pivot: np.ndarray          # [3] mean centre of the shared cameras in window coordinates (first window: 0)
    shared_images: int
    rmse: float

    def with_scale(self, scale: float) -> "Alignment":
        """The same placement at another scale about the shared cameras' centre: the trajectory stays continuous
        (the shared part of the cloud moves by the scale change times its distance instead)."""
        translation = self.translation + (self.scale - scale) * self.rotation @ self.pivot
        return dataclasses.replace(self, scale=scale, translation=translation)


class WindowMapper:
    """Chains windows into the map and keeps the accumulated ``VoxelMap``.

    ``integrate`` takes one key per image (e.g. (stamp, camera)); images whose key appeared in the
    previous integrated window are the correspondences. Only that window's points are kept for
    alignment, so memory does not grow with the trajectory.
    """

    def __init__(self, voxel_size: float, max_voxels: int, world_rotation: np.ndarray = FLU_FROM_OPTICAL,
                 max_align_points: int = 10000):
        self.voxel_size = voxel_size
        self.world_rotation = np.asarray(world_rotation, dtype=np.float64)
        self.max_align_points = max_align_points
        self.map = VoxelMap(voxel_size, max_voxels)
        self._previous: Dict[Hashable, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # key -> points, keep, conf
        self._previous_sim: Tuple[float, np.ndarray, np.ndarray] = (1.0, self.world_rotation, np.zeros(3))

    @property
    def started(self) -> bool:
        return bool(self._previous)

    def integrate(self, keys: Sequence[Hashable], recon: Reconstruction, conf_percentile: float = 50.0,
                  conf_min: float = 1.0, accumulate: bool = True) -> WindowUpdate:
        """Place ``recon`` (S images, keys[i] for image i) in the map at the scale chaining gives; raises
        ``AlignmentError``. ``align`` then ``place`` do the same with a say on the scale in between."""
        return self.place(keys, recon, self.align(keys, recon, conf_percentile, conf_min), accumulate)

    def align(self, keys: Sequence[Hashable], recon: Reconstruction, conf_percentile: float = 50.0,
              conf_min: float = 1.0) -> Alignment:
        """The map-from-window similarity of ``recon`` from the images it shares with the previous window (the
        first window: identity scale at the origin, axes ``world_rotation``); raises ``AlignmentError``."""
        if len(keys) != recon.num_frames:
            raise ValueError(f"{len(keys)} keys for {recon.num_frames} images")
        keep = confidence_mask(recon.points_conf, conf_percentile, conf_min) & np.isfinite(recon.points).all(axis=-1)
        if not keep.any():
            raise AlignmentError("no finite point passes the confidence filter")
        return self._align(keys, recon, keep)

    def place(self, keys: Sequence[Hashable], recon: Reconstruction, alignment: Alignment,
              accumulate: bool = True) -> WindowUpdate:
        """Put ``recon`` into the map with ``alignment`` (from ``align``, possibly ``with_scale``)."""
        scale, rotation, translation, keep = alignment.scale, alignment.rotation, alignment.translation, alignment.keep
        # camera-to-window = inverse of the camera-from-window extrinsics: R^T, centre -R^T t
        cam_rotation = recon.extrinsics[:, :3, :3].astype(np.float64).transpose(0, 2, 1)
        centres = camera_centres(recon.extrinsics.astype(np.float64))
        quaternions = mat_to_quat(torch.from_numpy(rotation @ cam_rotation)).numpy()
        positions = scale * centres @ rotation.T + translation

        linear = (scale * rotation).T.astype(np.float32)
        xyz = recon.points[keep] @ linear + translation.astype(np.float32)
        sums = VoxelSums.of(xyz, recon.images[keep], recon.points_conf[keep], self.voxel_size)
        if accumulate:
            self.map.add(sums)
        # only the raw points and the similarity are kept: the next alignment maps the few it samples
        self._previous = {key: (recon.points[i], keep[i], recon.points_conf[i]) for i, key in enumerate(keys)}
        self._previous_sim = (scale, rotation, translation)
        cloud = sums.centroids()
        return WindowUpdate(scale=scale, rotation=rotation, translation=translation, positions=positions,
                            quaternions=quaternions, xyz=cloud[0], rgb=cloud[1], conf=cloud[2],
                            shared_images=alignment.shared_images, rmse=alignment.rmse)

    def rescale(self, factor: float) -> None:
        """Multiply every map coordinate by ``factor`` (about the map origin): the map and the previous
        window's placement, so the next window chains onto the rescaled map."""
        self.map.rescale(factor)
        scale, rotation, translation = self._previous_sim
        self._previous_sim = (factor * scale, rotation, factor * translation)

    def _align(self, keys, recon, keep):
        """Map-from-window Sim(3) of the window's points (``keep``: those that pass the filter)."""
        if not self._previous:
            return Alignment(1.0, self.world_rotation, np.zeros(3), keep, np.zeros(3), 0, 0.0)
        shared = [i for i, key in enumerate(keys) if key in self._previous]
        if not shared:
            raise AlignmentError("the window shares no image with the map (was the previous window lost?)")
        points, conf = recon.points, recon.points_conf
        # every step-th pixel of each shared image: an evenly spread subset is plenty for 7 parameters
        step = slice(None, None, -(-len(shared) * keep[0].size // self.max_align_points))
        sources, targets, weights = [], [], []
        for i in shared:
            old_points, old_keep, old_conf = self._previous[keys[i]]
            both = keep[i].reshape(-1)[step] & old_keep.reshape(-1)[step]
            sources.append(points[i].reshape(-1, 3)[step][both])
            targets.append(old_points.reshape(-1, 3)[step][both])
            weights.append(np.minimum(conf[i].reshape(-1)[step][both], old_conf.reshape(-1)[step][both]))
        source, target, weight = (np.concatenate(a).astype(np.float64) for a in (sources, targets, weights))
        old_scale, old_rotation, old_translation = self._previous_sim
        target = old_scale * target @ old_rotation.T + old_translation   # previous window -> map
        try:
            sim = umeyama_sim3(torch.from_numpy(source), torch.from_numpy(target), torch.from_numpy(weight))
        except ValueError as exc:
            raise AlignmentError(f"alignment on {len(shared)} shared image(s) failed: {exc}") from exc
        scale, rotation, translation = float(sim.scale), sim.rotation.numpy(), sim.translation.numpy()
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(rotation).all() and np.isfinite(translation).all()):
            raise AlignmentError(f"alignment gave a degenerate similarity (scale {scale})")
        residual = scale * source @ rotation.T + translation - target
        rmse = float(np.sqrt((weight * (residual ** 2).sum(1)).sum() / weight.sum()))
        pivot = camera_centres(recon.extrinsics[shared].astype(np.float64)).mean(0)
        return Alignment(scale, rotation, translation, keep, pivot, len(shared), rmse)
