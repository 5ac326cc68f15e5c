"""Window chaining and the voxel map, against the ground truth of a rendered room (no ROS needed)."""

import numpy as np
import pytest
import torch

from helpers_truth import GroundTruthModel, rig
from vggt_quant_core.data.scenes import surface_distance
from vggt_quant_core.geometry import quat_to_mat
from vggt_quant_core.inference import predictions_to_reconstruction
from vggt_quant_core.stream.mapping import (FLU_FROM_OPTICAL, AlignmentError, VoxelMap, VoxelSums, WindowMapper,
                                            voxel_downsample)

WIDTH, HEIGHT, STEPS = 112, 84, 10


@pytest.fixture(scope="module")
def truth():
    return rig(STEPS, WIDTH, HEIGHT)


def _window(model, truth, steps, pixel_stride=2):
    images = torch.from_numpy(truth.images[0, steps]).permute(0, 3, 1, 2).float() / 255
    return predictions_to_reconstruction(model.predict(images), pixel_stride=pixel_stride)


def _world_to_map(truth, scale):
    """The map the mapper must build: first camera at the origin, FLU axes, the first window's scale."""
    first = np.vstack([truth.extrinsics[0, 0], [0, 0, 0, 1]])
    return lambda x: scale * (x @ first[:3, :3].T + first[:3, 3]) @ FLU_FROM_OPTICAL.T


def _map_to_world(truth, scale):
    first = np.vstack([truth.extrinsics[0, 0], [0, 0, 0, 1]])
    return lambda y: ((y @ FLU_FROM_OPTICAL) / scale - first[:3, 3]) @ first[:3, :3]


def test_windows_at_different_scales_chain_into_the_ground_truth_map(truth):
    model = GroundTruthModel(truth, scales=(0.7, 1.3, 0.9, 1.1))
    mapper = WindowMapper(voxel_size=0.02, max_voxels=10**6)
    to_map, to_world = _world_to_map(truth, 0.7), _map_to_world(truth, 0.7)
    for window, start in enumerate((0, 2, 4, 6)):
        steps = list(range(start, start + 4))
        update = mapper.integrate([(t, 0) for t in steps], _window(model, truth, steps), conf_percentile=0)
        expected_centres = to_map(np.stack([truth.centre(0, t) for t in steps]))
        assert np.allclose(update.positions, expected_centres, atol=1e-4)
        rotations = quat_to_mat(torch.from_numpy(update.quaternions)).numpy()
        first_rotation = truth.extrinsics[0, 0, :, :3]
        for rotation, t in zip(rotations, steps):  # camera-to-map = FLU . first-from-world . world-from-camera
            assert np.allclose(rotation, FLU_FROM_OPTICAL @ first_rotation @ truth.extrinsics[0, t, :, :3].T,
                               atol=1e-5)
        assert update.shared_images == (0 if window == 0 else 2) and update.rmse < 1e-4
        assert update.scale == pytest.approx(0.7 / model.scales[window], rel=1e-5)
        # the window's cloud lies on the room's surfaces (centroids of voxels of points on them)
        distance = surface_distance(truth.scene, to_world(update.xyz.astype(np.float64)))
        assert np.percentile(distance, 99) < 1e-3 and distance.max() < 0.02 / 0.7 * np.sqrt(3)
    xyz, rgb, conf = mapper.map.arrays()
    assert len(xyz) == len(mapper.map) > 1000 and rgb.dtype == np.uint8
    assert np.percentile(surface_distance(truth.scene, to_world(xyz.astype(np.float64))), 99) < 1e-3


def test_a_window_without_shared_images_is_refused_and_the_chain_survives(truth):
    model = GroundTruthModel(truth, scales=(1.0, 2.0, 0.5))
    mapper = WindowMapper(voxel_size=0.05, max_voxels=10**6)
    mapper.integrate([(t, 0) for t in range(4)], _window(model, truth, list(range(4))))
    with pytest.raises(AlignmentError, match="shares no image"):
        mapper.integrate([(t, 0) for t in range(5, 9)], _window(model, truth, list(range(5, 9))))
    recon = _window(model, truth, [2, 3, 8, 9])
    recon.points[0, :, ::2] = np.nan  # non-finite points in a shared image are left out, not fatal
    update = mapper.integrate([(t, 0) for t in (2, 3, 8, 9)], recon, conf_percentile=0)
    assert np.allclose(update.positions[2:], _world_to_map(truth, 1.0)(np.stack([truth.centre(0, 8),
                                                                                 truth.centre(0, 9)])), atol=1e-4)


def test_nothing_confident_is_an_alignment_error(truth):
    recon = _window(GroundTruthModel(truth), truth, [0, 1])
    with pytest.raises(AlignmentError, match="no finite point passes"):
        WindowMapper(0.05, 1000).integrate([0, 1], recon, conf_min=10.0)  # the double's confidence is 3


def test_voxel_downsample_gives_centroids_mean_colours_and_max_confidence():
    xyz = np.array([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07], [1.05, 0.0, 0.0]])
    rgb = np.array([[10, 20, 30], [30, 40, 50], [7, 7, 7]], np.uint8)
    points, colours, conf = voxel_downsample(xyz, rgb, np.array([1.0, 5.0, 2.0], np.float32), voxel_size=0.1)
    assert np.allclose(points, [[0.02, 0.03, 0.04], [1.05, 0.0, 0.0]])
    assert colours.tolist() == [[20, 30, 40], [7, 7, 7]] and conf.tolist() == [5.0, 2.0]


def test_voxel_map_merges_repeats_and_evicts_the_least_recently_seen():
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10), [0], indexing="ij"), -1).reshape(-1, 3) + 0.5
    rgb, conf = np.zeros((100, 3), np.uint8), np.ones(100, np.float32)
    voxels = VoxelMap(voxel_size=1.0, max_voxels=250)

    def add(points):
        voxels.add(VoxelSums.of(points, rgb, conf, 1.0))

    add(grid)
    add(grid + [0.1, 0, 0])         # the same 100 voxels: merged, centroid moves
    assert len(voxels) == 100 and np.allclose(np.sort(voxels.arrays()[0][:, 0])[:1], 0.55)
    add(grid + [0, 0, 1])           # 100 new voxels
    add(grid + [0, 0, 2])           # 100 more: 300 > 250, the oldest 50 go
    xyz = voxels.arrays()[0]
    assert len(voxels) == 250 and (xyz[:, 2] > 1).sum() == 200 and (xyz[:, 2] < 1).sum() == 50
