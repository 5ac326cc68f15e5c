"""Camera trajectories typical of robots and handheld capture, inside a room centred on the origin.

Every trajectory returns camera-from-world extrinsics [S, 3, 4] (OpenCV axes: x right, y down,
z forward) in a z-up world whose floor is z = 0. Paths stay inside the room's walls (``half``: the
room's half extents in x and y) with a margin, so no camera sits in or behind a wall.

* ``orbit``: an arc around the room centre, looking at it (object-centric capture, as CO3D).
* ``forward``: a robot driving straight ahead at wheel-robot height, looking where it goes.
* ``turn``: a robot driving along a circular arc, its heading tangent to the arc.
* ``handheld``: a smooth random walk of a hand-held camera looking at a point that drifts.

All of them add small jitter of position and aim (hand shake, vibration).
"""

import math
from typing import Callable, Dict

import numpy as np

WORLD_UP = np.array([0.0, 0.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """Camera-from-world [3, 4] (OpenCV axes) of a camera at ``eye`` looking at ``target``, with image
    up towards ``up``."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    return np.concatenate([rotation, (-rotation @ eye)[:, None]], axis=1)


def _aim(rng: np.random.Generator, eyes: np.ndarray, targets: np.ndarray, jitter: float) -> np.ndarray:
    """Extrinsics [S, 3, 4] for eyes/targets [S, 3], both perturbed by Gaussian jitter (metres)."""
    eyes = eyes + rng.normal(0, jitter, eyes.shape)
    targets = targets + rng.normal(0, 2 * jitter, targets.shape)  # aim noise: about 1 degree at 2 m
    return np.stack([look_at(e, t) for e, t in zip(eyes, targets)])


def orbit(rng: np.random.Generator, num_frames: int, half: np.ndarray, jitter: float) -> np.ndarray:
    radius = rng.uniform(0.55, 0.8) * half.min()
    start = rng.uniform(0, 2 * math.pi)
    angles = start + math.radians(rng.uniform(40, 110)) * rng.choice([-1, 1]) * np.linspace(0, 1, num_frames)
    height = rng.uniform(0.9, 1.8)
    eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.full(num_frames, height)], 1)
    target = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.2, 0.7)])
    return _aim(rng, eyes, np.repeat(target[None], num_frames, 0), jitter)


def forward(rng: np.random.Generator, num_frames: int, half: np.ndarray, jitter: float) -> np.ndarray:
    heading = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading), 0.0])
    # Start on the side of the room the robot drives away from, so the path stays inside.
    start = -direction[:2] * (half - 0.6) * rng.uniform(0.6, 0.9) + rng.uniform(-0.5, 0.5, 2) * (half - 0.6)
    length = rng.uniform(1.0, 2.0)
    steps = np.linspace(0, length, num_frames)[:, None]
    height = rng.uniform(0.25, 0.8)
    eyes = np.concatenate([start + steps * direction[:2], np.full((num_frames, 1), height)], 1)
    eyes[:, :2] = np.clip(eyes[:, :2], -(half - 0.4), half - 0.4)
    pitch_drop = rng.uniform(0.1, 0.4)  # look slightly down, at the floor ahead
    targets = eyes + 3.0 * direction - np.array([0.0, 0.0, pitch_drop])
    return _aim(rng, eyes, targets, jitter)


def turn(rng: np.random.Generator, num_frames: int, half: np.ndarray, jitter: float) -> np.ndarray:
    radius = rng.uniform(0.35, 0.65) * half.min()
    start = rng.uniform(0, 2 * math.pi)
    sign = rng.choice([-1, 1])
    angles = start + sign * math.radians(rng.uniform(35, 90)) * np.linspace(0, 1, num_frames)
    height = rng.uniform(0.25, 0.8)
    eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.full(num_frames, height)], 1)
    tangents = sign * np.stack([-np.sin(angles), np.cos(angles), np.zeros(num_frames)], 1)
    outward = np.stack([np.cos(angles), np.sin(angles), np.zeros(num_frames)], 1)
    # Heading tangent to the arc, turned a little outwards so the camera sees the room, not the centre.
    targets = eyes + 3.0 * tangents + rng.uniform(0.5, 1.5) * outward - np.array([0.0, 0.0, 0.2])
    return _aim(rng, eyes, targets, jitter)


def handheld(rng: np.random.Generator, num_frames: int, half: np.ndarray, jitter: float) -> np.ndarray:
    time = np.linspace(0, 1, num_frames)[:, None]
    base_angle = rng.uniform(0, 2 * math.pi)
    base = np.array([math.cos(base_angle), math.sin(base_angle)]) * half * rng.uniform(0.4, 0.7)
    # A sideways sweep of 0.3-0.8 m plus a smooth wobble (two low-frequency sinusoids per axis).
    sweep_angle = rng.uniform(0, 2 * math.pi)
    sweep = rng.uniform(0.3, 0.8) * np.array([math.cos(sweep_angle), math.sin(sweep_angle), 0.0])
    frequencies = rng.uniform(0.3, 1.2, (2, 3))
    phases = rng.uniform(0, 2 * math.pi, (2, 3))
    amplitudes = rng.uniform(0.1, 0.25, (2, 3)) * np.array([1.0, 1.0, 0.4])
    walk = sum(amplitudes[k] * np.sin(2 * math.pi * frequencies[k] * time + phases[k]) for k in range(2))
    eyes = np.concatenate([base, [rng.uniform(1.2, 1.7)]]) + time * sweep + walk - walk[:1]
    eyes[:, :2] = np.clip(eyes[:, :2], -(half - 0.4), half - 0.4)
    target = np.array([*(rng.uniform(-0.6, 0.6, 2)), rng.uniform(0.2, 0.8)])
    drift = rng.uniform(-0.4, 0.4, 3) * np.array([1.0, 1.0, 0.3])
    return _aim(rng, eyes, target + time * drift, jitter)


TRAJECTORIES: Dict[str, Callable[[np.random.Generator, int, np.ndarray, float], np.ndarray]] = {
    "orbit": orbit, "forward": forward, "turn": turn, "handheld": handheld}


def camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    """World positions [S, 3] of cameras with camera-from-world extrinsics [S, 3, 4]: -R^T t."""
    return -np.einsum("sji,sj->si", extrinsics[:, :, :3], extrinsics[:, :, 3])


def stereo_partner(extrinsics: np.ndarray, baseline: float) -> np.ndarray:
    """Extrinsics [S, 3, 4] of a second camera rigidly mounted ``baseline`` metres to the right (+x in
    the camera frame) of each camera, with the same orientation (a rectified stereo rig)."""
    partner = extrinsics.copy()
    partner[:, 0, 3] -= baseline  # x_partner = x_cam - baseline
    return partner
