"""Procedural scenes: ground truth consistent with VGGT's camera conventions."""

import numpy as np
import torch

from vggt_quant_core.data import render_orbit_sequence
from vggt_quant_core.data.scenes import Scene, look_at, random_room, render
from vggt_quant_core.geometry import unproject_depth_map_to_point_map


def test_deterministic_per_seed_and_different_across_seeds():
    a, b = render_orbit_sequence(3, 64, 48, seed=5), render_orbit_sequence(3, 64, 48, seed=5)
    c = render_orbit_sequence(3, 64, 48, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (3, 48, 64, 3) and a.depth.shape == (3, 48, 64)


def test_depth_unprojects_onto_the_scene_surfaces():
    """Every ground-truth pixel unprojects (VGGT convention) to a point on the floor, a wall, a box or
    a sphere of the scene."""
    seq = render_orbit_sequence(2, 80, 60, seed=3)
    scene = random_room(3)
    points = unproject_depth_map_to_point_map(torch.from_numpy(seq.depth).double(),
                                              torch.from_numpy(seq.extrinsics), torch.from_numpy(seq.intrinsics))
    points = points[torch.from_numpy(seq.depth) > 0].numpy()
    distance = np.full(len(points), np.inf)
    for point, normal, _, _ in scene.planes:
        distance = np.minimum(distance, np.abs((points - point) @ normal))
    for lo, hi, _, _ in scene.boxes:
        outside = np.maximum(np.maximum(lo - points, points - hi), 0)
        inside = np.minimum(points - lo, hi - points).min(axis=1)
        distance = np.minimum(distance, np.where(outside.max(axis=1) > 0, np.linalg.norm(outside, axis=1),
                                                 inside))
    for centre, radius, _, _ in scene.spheres:
        distance = np.minimum(distance, np.abs(np.linalg.norm(points - centre, axis=1) - radius))
    assert np.percentile(distance, 99.9) < 1e-3


def test_look_at_is_opencv_camera_from_world():
    extrinsic = look_at(np.array([0.0, -2.0, 1.0]), np.array([0.0, 0.0, 1.0]))
    rotation, translation = extrinsic[:, :3], extrinsic[:, 3]
    assert np.allclose(rotation @ rotation.T, np.eye(3))
    assert np.allclose(rotation @ np.array([0.0, 0.0, 1.0]) + translation, [0, 0, 2])  # target ahead on +z
    assert np.allclose(rotation @ np.array([0.0, -2.0, 2.0]) + translation, [0, -1, 0])  # world up = image up


def test_renders_sky_as_zero_depth():
    floor_only = Scene(planes=random_room(0).planes[:1])
    extrinsic = look_at(np.array([0.0, 0.0, 1.0]), np.array([5.0, 0.0, 1.0]))  # horizon mid-image
    image, depth = render(floor_only, extrinsic, np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]), 32, 24)
    assert (depth[:12] == 0).all() and (depth[13:] > 0).all()
    assert (image[:12] == image[0, 0]).all()
    # floor depth from the camera height: z = 1 m * f / (v - cy)
    assert np.allclose(depth[13:, 16], 20.0 / (np.arange(13, 24) - 12), rtol=1e-5)
