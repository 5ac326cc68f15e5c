"""Procedural textured scenes with exact ground truth, rendered by vectorised ray casting (torch, CPU).

A scene is a room in a z-up world (floor z = 0): floor, four walls (thin boxes, so walls of an open
hall end and show the sky above them), an optional ceiling, and boxes (turned about z) and spheres
standing on the floor. Surfaces carry solid (world-space) textures, so a point looks the same from
every view: checker, stripes, tiles, waves (``CLASSIC_TEXTURES``), each with fine grain, or the
non-periodic multi-scale noise and photographs of ``textures`` (``RICH_TEXTURES``, what training uses).
Light is a sun (open halls) or a ceiling lamp (rooms with a ceiling), with hard shadows, plus
ambient light; colours, textures and lights are drawn per seed.

Rendering gives RGB, depth (camera z; 0 where no surface is hit, i.e. sky), camera-from-world
extrinsics (OpenCV) and intrinsics with VGGT's pixel convention (integer pixel coordinates,
principal point at (W/2, H/2)), so ground-truth depth unprojects exactly with
``geometry.unproject_depth_map_to_point_map``.

Why not an OpenGL or path-tracing library: rasterisers (pyrender, moderngl) need an OpenGL context
(EGL/OSMesa system libraries, which pip cannot install), and a path tracer (mitsuba) is slower per
frame than this ray caster and far larger to install. Seeds below ``HELD_OUT_SEED_BASE`` are for
training and calibration; seeds from it on are held out for evaluation and the demo.
"""

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch

from .textures import noise_texture, photo_texture
from .trajectories import TRAJECTORIES, camera_centres, stereo_partner

HELD_OUT_SEED_BASE = 1_000_000
CLASSIC_TEXTURES = ("checker", "stripes", "tiles", "waves")
RICH_TEXTURES = ("noise", "photo")
TEXTURE_SETS = {"classic": CLASSIC_TEXTURES, "rich": RICH_TEXTURES}
PHOTO_SCALE = 2.5  # a photograph spans this many times the material's pattern scale
SCENE_KINDS = ("room", "hall")
_EPS = 1e-4
_MAX_RAYS_PER_CHUNK = 1 << 20  # bounds memory: about 0.5 GB of temporaries at most


@dataclass
class Material:
    colour: np.ndarray   # [3] in [0, 1]
    accent: np.ndarray   # [3] second colour of the pattern
    texture: str         # one of CLASSIC_TEXTURES or RICH_TEXTURES
    scale: float         # metres per period of the pattern
    waves: np.ndarray    # [4, 4]: unit direction (3) and phase (1) of four plane waves (``waves`` texture)
    pattern_seed: int = 0  # the noise lattice and the photograph with its offset (rich textures)


@dataclass
class Box:
    centre: np.ndarray     # [3]
    half_size: np.ndarray  # [3], in the box's own frame
    yaw: float             # rotation about world z, radians
    material: int


@dataclass
class Sphere:
    centre: np.ndarray  # [3]
    radius: float
    material: int


@dataclass
class Scene:
    """Primitives in a z-up world. ``half`` is the room's half extent in x and y (walls' inner faces)."""

    half: np.ndarray                                 # [2]
    materials: List[Material] = field(default_factory=list)
    planes: List[Tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list)  # point, unit normal, material
    boxes: List[Box] = field(default_factory=list)
    spheres: List[Sphere] = field(default_factory=list)
    sun: Optional[np.ndarray] = None                 # [3] unit direction towards the sun, or None
    lamp: Optional[np.ndarray] = None                # [3] position of a point lamp, or None
    light_colour: np.ndarray = field(default_factory=lambda: np.ones(3))
    ambient: float = 0.3
    # [2, 3]: sky colour at the horizon, then at the zenith.
    sky: np.ndarray = field(default_factory=lambda: np.array([[0.85, 0.9, 0.95], [0.45, 0.65, 0.95]]))


def _material(rng: np.random.Generator, scale_range: Tuple[float, float], textures: str) -> Material:
    colour = rng.uniform(0.2, 0.95, 3)
    accent = np.clip(colour * rng.uniform(0.3, 0.7) + rng.uniform(0, 0.25, 3), 0, 1)
    directions = rng.normal(size=(4, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    material = Material(colour=colour, accent=accent, texture=str(rng.choice(TEXTURE_SETS[textures])),
                        scale=float(rng.uniform(*scale_range)),
                        waves=np.concatenate([directions, rng.uniform(0, 2 * math.pi, (4, 1))], 1))
    if textures != "classic":  # classic scenes keep the random stream (and pictures) they always had
        material.pattern_seed = int(rng.integers(1 << 30))
    return material


def random_scene(rng: np.random.Generator, half: np.ndarray, kind: str,
                 keep_clear: Optional[np.ndarray] = None, num_objects: Optional[int] = None,
                 textures: str = "classic") -> Scene:
    """A room of half extents ``half`` [2]; ``kind`` ``room`` (ceiling, lamp) or ``hall`` (open, sun);
    surfaces from the texture set ``textures`` (a key of ``TEXTURE_SETS``).

    Objects keep 0.35 m away (in x, y) from every point of ``keep_clear`` [K, 2] (the cameras), so no
    camera starts inside an object.
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"scene kind must be one of {SCENE_KINDS}, got {kind!r}")
    if textures not in TEXTURE_SETS:
        raise ValueError(f"textures must be one of {sorted(TEXTURE_SETS)}, got {textures!r}")
    scene = Scene(half=np.asarray(half, dtype=float), ambient=float(rng.uniform(0.2, 0.4)),
                  light_colour=rng.uniform(0.85, 1.0, 3) * rng.uniform(0.9, 1.3))

    def add_material(scale_range):
        scene.materials.append(_material(rng, scale_range, textures))
        return len(scene.materials) - 1

    scene.planes.append((np.zeros(3), np.array([0.0, 0.0, 1.0]), add_material((0.3, 0.8))))  # floor
    wall_height = rng.uniform(2.4, 3.0) if kind == "room" else rng.uniform(0.6, 1.6)
    thickness = 0.1
    for axis in (0, 1):
        for sign in (-1, 1):
            centre = np.zeros(3)
            centre[axis] = sign * (scene.half[axis] + thickness / 2)
            centre[2] = wall_height / 2
            size = np.array([scene.half[0] + thickness, scene.half[1] + thickness, wall_height / 2])
            size[axis] = thickness / 2
            scene.boxes.append(Box(centre, size, 0.0, add_material((0.4, 1.2))))
    if kind == "room":
        scene.planes.append((np.array([0.0, 0.0, wall_height]), np.array([0.0, 0.0, -1.0]), add_material((0.5, 1.5))))
        scene.lamp = np.array([*rng.uniform(-0.5, 0.5, 2) * scene.half, wall_height - 0.05])
    else:
        elevation, azimuth = math.radians(rng.uniform(35, 75)), rng.uniform(0, 2 * math.pi)
        scene.sun = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                              math.sin(elevation)])
        scene.sky = np.array([rng.uniform(0.75, 0.95, 3), rng.uniform([0.3, 0.5, 0.8], [0.6, 0.75, 1.0])])

    count = int(rng.integers(5, 12)) if num_objects is None else num_objects
    placed = 0
    for _ in range(50 * max(count, 1)):
        if placed == count:
            break
        # Half the objects near the middle (what orbits look at), the rest anywhere in the room.
        spread = 0.45 if placed % 2 == 0 else 0.85
        xy = rng.uniform(-1, 1, 2) * (scene.half - 0.3) * spread
        if rng.random() < 0.55:
            footprint = rng.uniform(0.1, 0.45, 2)
            height = rng.uniform(0.15, 0.75) if rng.random() < 0.8 else rng.uniform(0.8, 1.6)
            radius = float(np.linalg.norm(footprint))
            candidate = Box(np.array([*xy, height]), np.array([*footprint, height]),
                            float(rng.uniform(0, math.pi)), -1)
        else:
            radius = float(rng.uniform(0.12, 0.45))
            candidate = Sphere(np.array([*xy, radius]), radius, -1)
        if keep_clear is not None and len(keep_clear) and np.linalg.norm(keep_clear - xy, axis=1).min() < radius + 0.35:
            continue
        candidate.material = add_material((0.08, 0.35))
        (scene.boxes if isinstance(candidate, Box) else scene.spheres).append(candidate)
        placed += 1
    return scene


def surface_distance(scene: Scene, points: np.ndarray) -> np.ndarray:
    """Unsigned distance [N] from points [N, 3] to the nearest surface of the scene (an exact distance
    field, independent of the ray caster; tests use it to check rendered depth and reconstructions)."""
    distance = np.full(len(points), np.inf)
    for point, normal, _ in scene.planes:
        distance = np.minimum(distance, np.abs((points - point) @ normal))
    for box in scene.boxes:
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        local = (points - box.centre) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        outside = np.maximum(np.abs(local) - box.half_size, 0)
        inside = (box.half_size - np.abs(local)).min(axis=1)
        distance = np.minimum(distance, np.where(outside.max(axis=1) > 0, np.linalg.norm(outside, axis=1), inside))
    for sphere in scene.spheres:
        distance = np.minimum(distance, np.abs(np.linalg.norm(points - sphere.centre, axis=1) - sphere.radius))
    return distance


def intrinsics_for(width: int, height: int, fov_x_degrees: float = 65.0) -> np.ndarray:
    """[3, 3] pinhole intrinsics, square pixels, principal point at (W/2, H/2) as VGGT."""
    focal = (width / 2) / math.tan(math.radians(fov_x_degrees) / 2)
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def _yaw_matrix(yaw: float, dtype) -> torch.Tensor:
    """Box-to-world rotation about z [3, 3]."""
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def _distance(primitive, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Distance t [N] along rays [N, 3] to the first hit with t > 1e-4 of one primitive (inf: none)."""
    dtype = dirs.dtype
    if isinstance(primitive, Box):
        # Slab test in the box's frame: local = R^T (x - centre).
        rotation = _yaw_matrix(primitive.yaw, dtype)
        local_origin = (origins - torch.tensor(primitive.centre, dtype=dtype)) @ rotation
        local_dirs = dirs @ rotation
        inverse = 1 / torch.where(local_dirs.abs() < 1e-12, torch.full_like(local_dirs, 1e-12), local_dirs)
        half = torch.tensor(primitive.half_size, dtype=dtype)
        t1, t2 = (-half - local_origin) * inverse, (half - local_origin) * inverse
        t_near = torch.minimum(t1, t2).amax(-1)
        t_far = torch.maximum(t1, t2).amin(-1)
        return torch.where((t_far >= t_near) & (t_near > _EPS), t_near, math.inf)
    if isinstance(primitive, Sphere):
        offset = origins - torch.tensor(primitive.centre, dtype=dtype)
        a = (dirs * dirs).sum(-1)
        b = 2 * (dirs * offset).sum(-1)
        disc = b * b - 4 * a * ((offset * offset).sum(-1) - primitive.radius ** 2)
        t = (-b - torch.sqrt(disc.clamp(min=0))) / (2 * a)
        return torch.where((disc >= 0) & (t > _EPS), t, math.inf)
    point, normal, _ = primitive
    n = torch.tensor(normal, dtype=dtype)
    denom = dirs @ n
    t = (torch.tensor(point, dtype=dtype) - origins) @ n / torch.where(denom.abs() < 1e-12, 1e-12, denom)
    return torch.where(t > _EPS, t, math.inf)


def _normal(primitive, points: torch.Tensor) -> torch.Tensor:
    """Outward unit normals [M, 3] of one primitive at points [M, 3] on its surface."""
    dtype = points.dtype
    if isinstance(primitive, Box):
        rotation = _yaw_matrix(primitive.yaw, dtype)
        local = (points - torch.tensor(primitive.centre, dtype=dtype)) @ rotation
        # The face hit is the one the point is relatively closest to: largest |local| / half size.
        axis = (local.abs() / torch.tensor(primitive.half_size, dtype=dtype)).argmax(-1)
        local_normal = torch.nn.functional.one_hot(axis, 3).to(dtype) * torch.sign(local.gather(-1, axis[:, None]))
        return local_normal @ rotation.T
    if isinstance(primitive, Sphere):
        return (points - torch.tensor(primitive.centre, dtype=dtype)) / primitive.radius
    return torch.tensor(primitive[1], dtype=dtype).expand_as(points)


def intersect(scene: Scene, origins: torch.Tensor, dirs: torch.Tensor, max_t: Optional[torch.Tensor] = None
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest hit of rays ``origins + t * dirs`` ([N, 3] each) with 1e-4 < t < ``max_t`` (default inf).

    Returns t [N] (inf, or ``max_t``: no hit), the surface normal [N, 3] (not yet facing the ray) and the
    material index [N] (-1: no hit).
    """
    primitives = [*scene.planes, *scene.boxes, *scene.spheres]
    best = torch.full(dirs.shape[:1], math.inf, dtype=dirs.dtype) if max_t is None else max_t.clone()
    nearest = torch.full(dirs.shape[:1], -1, dtype=torch.long)
    for index, primitive in enumerate(primitives):
        t = _distance(primitive, origins, dirs)
        closer = t < best
        best = torch.where(closer, t, best)
        nearest = torch.where(closer, index, nearest)
    # Normals and materials only for the rays that hit, one primitive at a time.
    normals = torch.zeros_like(dirs)
    materials = torch.full(dirs.shape[:1], -1, dtype=torch.long)
    for index in nearest.unique().tolist():
        if index < 0:
            continue
        mask = nearest == index
        primitive = primitives[index]
        normals[mask] = _normal(primitive, origins[mask] + dirs[mask] * best[mask, None])
        materials[mask] = primitive[2] if isinstance(primitive, tuple) else primitive.material
    return best, normals, materials


def _texture(material: Material, points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Albedo [M, 3] of a solid texture at world points [M, 3] with surface normals [M, 3]."""
    dtype = points.dtype
    p = points / material.scale
    if material.texture == "photo":
        tint = 0.6 + 0.4 * torch.tensor(material.colour / material.colour.mean(), dtype=dtype).clamp(0, 1.6)
        return (photo_texture(points, normals, material.scale * PHOTO_SCALE, material.pattern_seed)
                * tint).clamp(0, 1)
    if material.texture == "noise":
        mix = noise_texture(points, material.scale, material.pattern_seed)
    elif material.texture == "checker":
        mix = torch.remainder(torch.floor(p).sum(-1), 2)
    elif material.texture == "stripes":
        axis = torch.tensor(material.waves[0, :3], dtype=dtype)
        mix = (torch.sin(2 * math.pi * (p @ axis)) > 0).to(dtype)
    elif material.texture == "tiles":
        # Grout lines along the two in-surface axes (the normal's dominant axis is left out).
        fraction = p - torch.floor(p)
        grout = (fraction < 0.08) & (normals.abs() < 0.7)
        mix = grout.any(-1).to(dtype)
    else:
        waves = torch.tensor(material.waves, dtype=dtype)
        mix = 0.5 + 0.5 * torch.sin(2 * math.pi * p @ waves[:, :3].T + waves[:, 3]).mean(-1) * 1.6
    colour, accent = torch.tensor(material.colour, dtype=dtype), torch.tensor(material.accent, dtype=dtype)
    albedo = colour + (accent - colour) * mix.clamp(0, 1)[:, None]
    grain = 0.88 + 0.12 * torch.sin(37.0 * p[:, 0] + 11.0 * p[:, 2]) * torch.cos(29.0 * p[:, 1] - 7.0 * p[:, 2])
    return albedo * grain[:, None]


def _shade(scene: Scene, origins: torch.Tensor, dirs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Colour [N, 3] in [0, 1] and hit distance t [N] (inf for sky) of rays [N, 3]."""
    t, normals, materials = intersect(scene, origins, dirs)
    hit = materials >= 0
    unit = dirs / dirs.norm(dim=-1, keepdim=True)
    blend = (unit[:, 2:3] * 2).clamp(0, 1)
    sky = torch.tensor(scene.sky, dtype=dirs.dtype)
    colour = sky[0] + (sky[1] - sky[0]) * blend
    if not hit.any():
        return colour, t
    points = origins[hit] + dirs[hit] * t[hit, None]
    n = normals[hit]
    n = torch.where(((n * dirs[hit]).sum(-1) > 0)[:, None], -n, n)  # face the camera
    if scene.sun is not None:
        to_light = torch.tensor(scene.sun, dtype=dirs.dtype).expand_as(points)
        falloff, max_t = torch.ones(len(points), dtype=dirs.dtype), None
    else:
        to_light = torch.tensor(scene.lamp, dtype=dirs.dtype) - points
        distance = to_light.norm(dim=-1)
        to_light = to_light / distance[:, None]
        falloff, max_t = (2.5 / (1.0 + 0.25 * distance ** 2)), distance
    lit = (n * to_light).sum(-1).clamp(min=0)
    shadow_t, _, _ = intersect(scene, points + 1e-3 * n, to_light, max_t)
    unshadowed = (torch.isinf(shadow_t) if max_t is None else shadow_t >= max_t).to(dirs.dtype)
    light = scene.ambient + (1 - scene.ambient) * lit * falloff * unshadowed
    albedo = torch.zeros_like(points)
    for index in materials[hit].unique().tolist():
        mask = materials[hit] == index
        albedo[mask] = _texture(scene.materials[index], points[mask], n[mask])
    light_colour = torch.tensor(scene.light_colour, dtype=dirs.dtype)
    colour[hit] = albedo * light[:, None] * light_colour
    return colour, t


def render(scene: Scene, extrinsics: np.ndarray, intrinsics: np.ndarray, width: int, height: int
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Render views with camera-from-world ``extrinsics`` [S, 3, 4] and ``intrinsics`` [S, 3, 3].

    Returns RGB uint8 [S, H, W, 3] and depth float32 [S, H, W] (camera z; 0 where nothing is hit).
    """
    dtype = torch.float32  # half the time of float64; depth error < 1e-3 m (see tests)
    rotation = torch.tensor(extrinsics[:, :, :3], dtype=dtype)
    centres = torch.tensor(camera_centres(extrinsics), dtype=dtype)
    k = torch.tensor(intrinsics, dtype=dtype)
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    rays_cam = torch.stack([(u - k[:, None, None, 0, 2]) / k[:, None, None, 0, 0],
                            (v - k[:, None, None, 1, 2]) / k[:, None, None, 1, 1],
                            torch.ones(len(k), height, width, dtype=dtype)], -1)
    # World directions R^T x_cam; their camera z is 1, so the hit distance t is the depth.
    dirs = torch.einsum("sji,shwj->shwi", rotation, rays_cam).reshape(-1, 3)
    origins = centres[:, None, None, :].expand(-1, height, width, -1).reshape(-1, 3)
    colour, depth = torch.empty_like(dirs), torch.empty(len(dirs), dtype=dtype)
    for start in range(0, len(dirs), _MAX_RAYS_PER_CHUNK):
        chunk = slice(start, start + _MAX_RAYS_PER_CHUNK)
        colour[chunk], depth[chunk] = _shade(scene, origins[chunk], dirs[chunk])
    rgb = (colour.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, height, width, 3)
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)).reshape(-1, height, width)
    return rgb.numpy(), depth.float().numpy()


@dataclass
class RenderedSequence:
    """One camera's frames."""

    name: str               # camera name, e.g. ``cam0``
    images: np.ndarray      # [S, H, W, 3] uint8
    depth: np.ndarray       # [S, H, W] float32, metres along the camera z; 0 = no surface (sky)
    extrinsics: np.ndarray  # [S, 3, 4] float32, camera-from-world (OpenCV)
    intrinsics: np.ndarray  # [S, 3, 3] float32, pixels

    @property
    def num_frames(self) -> int:
        return len(self.images)


@dataclass
class SceneSequence:
    """A rendered sequence: one or two rigidly mounted cameras (``cameras[1]`` is ``baseline`` metres to
    the right of ``cameras[0]``), sharing timestamps."""

    seed: int
    trajectory: str
    kind: str
    scene: Scene
    cameras: List[RenderedSequence]
    timestamps_ns: np.ndarray  # [S] int64
    baseline: float = 0.0


def generate_sequence(seed: int, num_frames: int = 10, width: int = 112, height: int = 112,
                      trajectory: str = "any", cameras: int = 1, kind: str = "any",
                      fov_x_degrees: Optional[float] = None, fps: float = 10.0,
                      start_ns: int = 1_700_000_000_000_000_000, textures: str = "classic") -> SceneSequence:
    """A deterministic sequence per ``seed`` (and arguments): random room, trajectory and lighting.

    ``trajectory``: one of ``trajectories.TRAJECTORIES`` or ``any`` (drawn from the seed); ``kind``: one
    of ``SCENE_KINDS`` or ``any``; ``cameras``: 1, or 2 for a stereo rig (baseline 8-15 cm); the
    horizontal field of view is drawn in [50, 75] degrees unless given. Frames are ``1/fps`` apart.
    ``textures``: ``classic`` (periodic patterns) or ``rich`` (noise and photographs, see ``textures``).
    """
    if num_frames < 1 or width < 2 or height < 2:
        raise ValueError(f"need at least 1 frame of 2x2 pixels, got {num_frames} frames of {width}x{height}")
    if cameras not in (1, 2):
        raise ValueError(f"cameras must be 1 or 2, got {cameras}")
    if trajectory != "any" and trajectory not in TRAJECTORIES:
        raise ValueError(f"trajectory must be 'any' or one of {sorted(TRAJECTORIES)}, got {trajectory!r}")
    if kind != "any" and kind not in SCENE_KINDS:
        raise ValueError(f"kind must be 'any' or one of {SCENE_KINDS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    drawn_trajectory, drawn_kind = rng.choice(sorted(TRAJECTORIES)), rng.choice(SCENE_KINDS)
    trajectory = str(drawn_trajectory) if trajectory == "any" else trajectory
    kind = str(drawn_kind) if kind == "any" else kind
    half = rng.uniform(2.2, 3.5, 2)
    fov = rng.uniform(50, 75) if fov_x_degrees is None else fov_x_degrees
    extrinsics = TRAJECTORIES[trajectory](rng, num_frames, half, float(rng.uniform(0.005, 0.02)))
    rigs = [extrinsics]
    baseline = float(rng.uniform(0.08, 0.15)) if cameras == 2 else 0.0
    if cameras == 2:
        rigs.append(stereo_partner(extrinsics, baseline))
    keep_clear = np.concatenate([camera_centres(e)[:, :2] for e in rigs])
    scene = random_scene(rng, half, kind, keep_clear=keep_clear, textures=textures)
    intrinsics = np.repeat(intrinsics_for(width, height, fov)[None], num_frames, 0)
    views = []
    for index, rig in enumerate(rigs):
        images, depth = render(scene, rig, intrinsics, width, height)
        views.append(RenderedSequence(name=f"cam{index}", images=images, depth=depth,
                                      extrinsics=rig.astype(np.float32), intrinsics=intrinsics.astype(np.float32)))
    timestamps = start_ns + np.round(np.arange(num_frames) * 1e9 / fps).astype(np.int64)
    return SceneSequence(seed=seed, trajectory=trajectory, kind=kind, scene=scene, cameras=views,
                         timestamps_ns=timestamps, baseline=baseline)
