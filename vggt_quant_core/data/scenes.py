"""Procedural textured scenes with exact ground truth, rendered by vectorised ray casting.

A scene is a room (floor and walls) with boxes and spheres on the floor. Cameras follow an orbit
around the room centre. Rendering gives RGB, depth (camera z, 0 where no surface is hit),
camera-from-world extrinsics (OpenCV) and intrinsics, with the same pixel convention as VGGT
(integer pixel coordinates, principal point at (W/2, H/2)), so ground-truth depth unprojects
exactly with ``geometry.unproject_depth_map_to_point_map``.
"""

import math
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
import torch

_EPS = 1e-4


@dataclass
class Scene:
    """Primitives in a z-up world. Each has an RGB albedo and a texture scale (metres per checker)."""

    planes: List[Tuple[np.ndarray, np.ndarray, np.ndarray, float]] = field(default_factory=list)  # point, normal
    boxes: List[Tuple[np.ndarray, np.ndarray, np.ndarray, float]] = field(default_factory=list)   # min, max
    spheres: List[Tuple[np.ndarray, float, np.ndarray, float]] = field(default_factory=list)      # centre, radius
    light: np.ndarray = field(default_factory=lambda: np.array([0.4, -0.3, 0.85]))


def random_room(seed: int, num_objects: int = 6) -> Scene:
    """A 6 x 6 m room with ``num_objects`` boxes and spheres; deterministic per seed."""
    rng = np.random.default_rng(seed)
    scene = Scene(light=np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0]))

    def colour():
        return rng.uniform(0.15, 0.95, size=3)

    half = 3.0
    scene.planes.append((np.zeros(3), np.array([0.0, 0.0, 1.0]), colour(), rng.uniform(0.25, 0.6)))
    for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
        normal = np.zeros(3)
        normal[axis] = -sign
        point = np.zeros(3)
        point[axis] = sign * half
        scene.planes.append((point, normal, colour(), rng.uniform(0.3, 1.0)))
    for _ in range(num_objects):
        centre = np.array([rng.uniform(-1.6, 1.6), rng.uniform(-1.6, 1.6)])
        size = rng.uniform(0.25, 0.8)
        if rng.random() < 0.5:
            height = rng.uniform(0.3, 1.4)
            lo = np.array([centre[0] - size / 2, centre[1] - size / 2, 0.0])
            scene.boxes.append((lo, lo + np.array([size, size, height]), colour(), rng.uniform(0.08, 0.3)))
        else:
            scene.spheres.append((np.array([centre[0], centre[1], size / 2]), size / 2, colour(),
                                  rng.uniform(0.05, 0.2)))
    return scene


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Camera-from-world [3, 4] (OpenCV axes) of a camera at ``eye`` looking at ``target``."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    return np.concatenate([rotation, (-rotation @ eye)[:, None]], axis=1)


def orbit_cameras(num_frames: int, seed: int, radius: float = 2.4, height: float = 1.3,
                  arc_degrees: float = 70.0, jitter: float = 0.03) -> np.ndarray:
    """Extrinsics [S, 3, 4] along an arc around the room centre, looking at it, with small jitter."""
    rng = np.random.default_rng(seed + 7919)
    start = rng.uniform(0, 2 * math.pi)
    angles = start + np.radians(arc_degrees) * np.linspace(0, 1, num_frames)
    target = np.array([0.0, 0.0, 0.45])
    extrinsics = []
    for angle in angles:
        eye = np.array([radius * math.cos(angle), radius * math.sin(angle), height]) + rng.normal(0, jitter, 3)
        extrinsics.append(look_at(eye, target + rng.normal(0, jitter, 3)))
    return np.stack(extrinsics)


def intrinsics_for(width: int, height: int, fov_x_degrees: float = 65.0) -> np.ndarray:
    focal = (width / 2) / math.tan(math.radians(fov_x_degrees) / 2)
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def _texture(points: torch.Tensor, albedo: torch.Tensor, scale: float) -> torch.Tensor:
    """Checker pattern modulated by smooth waves, so every surface has trackable texture."""
    cells = torch.floor(points / scale).sum(-1)
    checker = 0.55 + 0.45 * torch.remainder(cells, 2)
    waves = 0.85 + 0.15 * torch.sin(points[..., 0] * 7.3 / scale) * torch.cos(points[..., 1] * 5.1 / scale)
    return albedo * (checker * waves)[..., None]


def render(scene: Scene, extrinsic: np.ndarray, intrinsic: np.ndarray, width: int, height: int
           ) -> Tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] and depth float32 [H, W] (camera z; 0 where nothing is hit)."""
    dtype = torch.float64
    rotation = torch.tensor(extrinsic[:, :3], dtype=dtype)
    origin = -rotation.T @ torch.tensor(extrinsic[:, 3], dtype=dtype)
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    k = torch.tensor(intrinsic, dtype=dtype)
    rays_cam = torch.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)], -1)
    dirs = rays_cam @ rotation  # world directions; their camera z is 1, so the hit distance t is depth
    best_t = torch.full((height, width), math.inf, dtype=dtype)
    normals = torch.zeros(height, width, 3, dtype=dtype)
    colours = torch.zeros(height, width, 3, dtype=dtype)

    def keep(t, normal, albedo, scale):
        nonlocal best_t
        closer = (t > _EPS) & (t < best_t)
        hits = origin + dirs * t[..., None]
        best_t = torch.where(closer, t, best_t)
        normals[closer] = normal.expand(height, width, 3)[closer]
        colours[closer] = _texture(hits, torch.tensor(albedo, dtype=dtype), scale)[closer]

    for point, normal, albedo, scale in scene.planes:
        n = torch.tensor(normal, dtype=dtype)
        denom = dirs @ n
        t = ((torch.tensor(point, dtype=dtype) - origin) @ n) / torch.where(denom.abs() < 1e-12, 1e-12, denom)
        keep(t, n, albedo, scale)
    for lo, hi, albedo, scale in scene.boxes:
        lo_t, hi_t = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
        safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
        t1, t2 = (lo_t - origin) / safe, (hi_t - origin) / safe
        t_near, axis = torch.minimum(t1, t2).max(-1)
        t_far = torch.maximum(t1, t2).min(-1).values
        t = torch.where((t_far >= t_near) & (t_near > _EPS), t_near, torch.full_like(t_near, math.inf))
        normal = -torch.sign(torch.gather(dirs, -1, axis[..., None])) * torch.nn.functional.one_hot(axis, 3)
        keep(t, normal.to(dtype), albedo, scale)
    for centre, radius, albedo, scale in scene.spheres:
        offset = origin - torch.tensor(centre, dtype=dtype)
        a = (dirs * dirs).sum(-1)
        b = 2 * (dirs @ offset)
        disc = b * b - 4 * a * (offset @ offset - radius ** 2)
        t = (-b - torch.sqrt(disc.clamp(min=0))) / (2 * a)
        t = torch.where(disc >= 0, t, torch.full_like(t, math.inf))
        hits = origin + dirs * t[..., None]
        keep(t, (hits - torch.tensor(centre, dtype=dtype)) / radius, albedo, scale)

    light = torch.tensor(scene.light / np.linalg.norm(scene.light), dtype=dtype)
    shading = 0.35 + 0.65 * (normals @ light).abs()
    hit = torch.isfinite(best_t)
    rgb = torch.where(hit[..., None], colours * shading[..., None], torch.tensor([0.6, 0.75, 0.9], dtype=dtype))
    depth = torch.where(hit, best_t, torch.zeros_like(best_t))
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), depth.float().numpy()


@dataclass
class RenderedSequence:
    images: np.ndarray      # [S, H, W, 3] uint8
    depth: np.ndarray       # [S, H, W] float32, 0 = no surface
    extrinsics: np.ndarray  # [S, 3, 4] camera-from-world (OpenCV)
    intrinsics: np.ndarray  # [S, 3, 3]


def render_orbit_sequence(num_frames: int = 8, width: int = 320, height: int = 240, seed: int = 0
                          ) -> RenderedSequence:
    """A deterministic sequence of ``num_frames`` views of ``random_room(seed)``."""
    scene = random_room(seed)
    extrinsics = orbit_cameras(num_frames, seed)
    intrinsic = intrinsics_for(width, height)
    frames = [render(scene, e, intrinsic, width, height) for e in extrinsics]
    return RenderedSequence(images=np.stack([f[0] for f in frames]), depth=np.stack([f[1] for f in frames]),
                            extrinsics=extrinsics.astype(np.float32),
                            intrinsics=np.repeat(intrinsic[None], num_frames, 0).astype(np.float32))
