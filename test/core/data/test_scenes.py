"""Procedural scenes: ground truth consistent with VGGT's camera conventions."""

import math

import numpy as np
import pytest
import torch

from vggt_quant_core.data import TRAJECTORIES, generate_sequence
from vggt_quant_core.data.scenes import Box, Scene, Sphere, intersect, render, surface_distance
from vggt_quant_core.data.trajectories import camera_centres, look_at
from vggt_quant_core.geometry import unproject_depth_map_to_point_map


def test_deterministic_per_seed_and_different_across_seeds():
    a, b = generate_sequence(5, 3, 64, 48), generate_sequence(5, 3, 64, 48)
    c = generate_sequence(6, 3, 64, 48)
    assert np.array_equal(a.cameras[0].images, b.cameras[0].images)
    assert np.array_equal(a.cameras[0].depth, b.cameras[0].depth)
    assert np.array_equal(a.cameras[0].extrinsics, b.cameras[0].extrinsics)
    assert not np.array_equal(a.cameras[0].images, c.cameras[0].images)
    assert a.cameras[0].images.shape == (3, 48, 64, 3) and a.cameras[0].depth.shape == (3, 48, 64)
    assert a.cameras[0].images.dtype == np.uint8 and a.cameras[0].depth.dtype == np.float32


@pytest.mark.parametrize("trajectory", sorted(TRAJECTORIES))
def test_depth_unprojects_onto_the_scene_surfaces(trajectory):
    """Every ground-truth pixel unprojects (VGGT convention) onto a floor, wall, ceiling, box or sphere."""
    seq = generate_sequence(3, 3, 80, 60, trajectory=trajectory)
    cam = seq.cameras[0]
    points = unproject_depth_map_to_point_map(torch.from_numpy(cam.depth).double(),
                                              torch.from_numpy(cam.extrinsics), torch.from_numpy(cam.intrinsics))
    valid = torch.from_numpy(cam.depth) > 0
    assert valid.float().mean() > 0.5
    assert np.percentile(surface_distance(seq.scene, points[valid].numpy()), 99.9) < 1e-3


@pytest.mark.parametrize("trajectory", sorted(TRAJECTORIES))
def test_cameras_stay_inside_the_room_and_move(trajectory):
    for seed in range(4):
        seq = generate_sequence(seed, 8, 8, 8, trajectory=trajectory)
        centres = camera_centres(seq.cameras[0].extrinsics.astype(np.float64))
        assert (np.abs(centres[:, :2]) < seq.scene.half - 0.3).all()
        assert (centres[:, 2] > 0.1).all()
        assert np.linalg.norm(centres[-1] - centres[0]) > 0.2  # translation, so pose AUC is well defined
        for sphere in seq.scene.spheres:
            assert (np.linalg.norm(centres - sphere.centre, axis=1) > sphere.radius).all()
        for box in seq.scene.boxes:
            c, s = math.cos(box.yaw), math.sin(box.yaw)
            local = (centres - box.centre) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            assert (np.abs(local) > box.half_size).any(axis=1).all()  # no camera inside a box or wall
        rotation = seq.cameras[0].extrinsics[:, :, :3].astype(np.float64)
        assert np.allclose(rotation @ rotation.transpose(0, 2, 1), np.eye(3), atol=1e-6)
        assert np.allclose(np.linalg.det(rotation), 1.0)


def test_stereo_rig_is_a_fixed_baseline_to_the_right():
    seq = generate_sequence(11, 4, 40, 30, cameras=2)
    left, right = seq.cameras
    assert [c.name for c in seq.cameras] == ["cam0", "cam1"] and 0.05 < seq.baseline < 0.2
    np.testing.assert_allclose(right.extrinsics[:, :, :3], left.extrinsics[:, :, :3])
    offset = camera_centres(right.extrinsics.astype(np.float64)) - camera_centres(left.extrinsics.astype(np.float64))
    right_axis = left.extrinsics[:, 0, :3]  # camera x axis in world coordinates
    np.testing.assert_allclose(offset, seq.baseline * right_axis, atol=1e-5)
    assert not np.array_equal(left.images, right.images)
    assert np.diff(seq.timestamps_ns).min() == np.diff(seq.timestamps_ns).max() == 100_000_000


@pytest.mark.parametrize("kwargs,message", [
    ({"trajectory": "spiral"}, "trajectory must be 'any' or one of"), ({"cameras": 3}, "cameras must be 1 or 2"),
    ({"kind": "cave"}, "kind must be 'any' or one of"), ({"num_frames": 0}, "need at least 1 frame"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_sequence(**{"seed": 0, "num_frames": 2, "width": 8, "height": 8, **kwargs})


def test_look_at_is_opencv_camera_from_world():
    extrinsic = look_at(np.array([0.0, -2.0, 1.0]), np.array([0.0, 0.0, 1.0]))
    rotation, translation = extrinsic[:, :3], extrinsic[:, 3]
    assert np.allclose(rotation @ rotation.T, np.eye(3))
    assert np.allclose(rotation @ np.array([0.0, 0.0, 1.0]) + translation, [0, 0, 2])  # target ahead on +z
    assert np.allclose(rotation @ np.array([0.0, -2.0, 2.0]) + translation, [0, -1, 0])  # world up = image up


def test_renders_sky_as_zero_depth_and_floor_depth_exactly():
    floor_only = Scene(half=np.array([3.0, 3.0]), planes=[(np.zeros(3), np.array([0.0, 0.0, 1.0]), 0)],
                       sun=np.array([0.0, 0.0, 1.0]))
    floor_only.materials = generate_sequence(0, 1, 2, 2).scene.materials[:1]
    extrinsic = look_at(np.array([0.0, 0.0, 1.0]), np.array([5.0, 0.0, 1.0]))  # horizon mid-image
    k = np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]])
    image, depth = render(floor_only, extrinsic[None], k[None], 32, 24)
    image, depth = image[0], depth[0]
    assert (depth[:12] == 0).all() and (depth[13:] > 0).all()
    assert (image[0, :, 0] < image[11, :, 0]).all()  # sky: paler at the horizon than above
    # floor depth from the camera height: z = 1 m * f / (v - cy)
    assert np.allclose(depth[13:, 16], 20.0 / (np.arange(13, 24) - 12), rtol=1e-5)


def test_ray_hits_turned_box_and_sphere_at_the_right_distance():
    box = Box(np.array([3.0, 0.0, 0.5]), np.array([0.5, 0.5, 0.5]), math.radians(45), 0)
    sphere = Sphere(np.array([0.0, 4.0, 0.5]), 0.5, 1)
    scene = Scene(half=np.array([9.0, 9.0]), boxes=[box], spheres=[sphere])
    origins = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.5]], dtype=torch.float64)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    t, normals, materials = intersect(scene, origins, dirs)
    # A 45-degree-turned unit box presents its corner: the near hit is at 3 - sqrt(2)/2.
    assert t[0].item() == pytest.approx(3 - math.sqrt(0.5)) and materials[0] == 0
    assert t[1].item() == pytest.approx(3.5) and materials[1] == 1
    np.testing.assert_allclose(normals[1].numpy(), [0, -1, 0], atol=1e-12)
    assert math.isinf(t[2].item()) and materials[2] == -1
