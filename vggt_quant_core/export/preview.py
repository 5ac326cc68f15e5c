"""A picture of a reconstruction: point clouds seen from an overview camera, with camera trajectories.

Pure numpy + Pillow (no OpenGL): points are splatted as 3x3-pixel squares with a z-buffer (the nearest
point of a pixel wins); trajectories are polylines with a small frustum per camera.
"""

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..data.trajectories import camera_centres, look_at

BACKGROUND = (250, 250, 250)


@dataclass
class Trajectory:
    label: str
    extrinsics: np.ndarray       # [S, 3, 4] camera-from-world, in the picture's world frame
    colour: Tuple[int, int, int]


@dataclass
class Panel:
    title: str
    points: np.ndarray           # [N, 3] world points
    colours: np.ndarray          # [N, 3] uint8


def overview_camera(points: np.ndarray, extrinsics: np.ndarray, width: int, height: int,
                    up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> Tuple[np.ndarray, np.ndarray]:
    """Extrinsic [3, 4] and intrinsic [3, 3] of a camera looking at the median of ``points`` [N, 3] from
    beyond and above the capture cameras (``extrinsics`` [S, 3, 4]), with a field of view that holds
    every capture camera and 95 % of the points."""
    target = np.median(points, axis=0)
    centres = camera_centres(extrinsics)
    spread = np.percentile(np.linalg.norm(points - target, axis=1), 90)
    away = centres.mean(0) - target
    away -= (away @ up) * up
    if np.linalg.norm(away) < 0.1 * spread:  # cameras around the target: step back against their view
        away = -extrinsics[:, 2, :3].mean(0)
        away -= (away @ up) * up
    distance = np.linalg.norm(away)
    eye = target + away / max(distance, 1e-9) * (distance + 0.3 * spread) + up * spread
    extrinsic = look_at(eye, target, up)

    def tangents(world):
        camera = (world - eye) @ extrinsic[:, :3].T
        camera = camera[camera[:, 2] > 1e-3]
        return np.abs(camera[:, :2] / camera[:, 2:3])

    from_points, from_cameras = tangents(points), tangents(centres)
    tan_x = max(np.percentile(from_points[:, 0], 95), from_cameras[:, 0].max(initial=0)) * 1.1
    tan_y = max(np.percentile(from_points[:, 1], 95), from_cameras[:, 1].max(initial=0)) * 1.1
    focal = min(width / 2 / max(tan_x, 1e-3), height / 2 / max(tan_y, 1e-3))
    intrinsic = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    return extrinsic, intrinsic


def _project(points: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray):
    """Pixel coordinates [N, 2] and camera depth [N] of world points [N, 3]."""
    camera = points @ extrinsic[:, :3].T + extrinsic[:, 3]
    depth = camera[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = camera[:, :2] / depth[:, None] * np.diag(intrinsic)[:2] + intrinsic[:2, 2]
    return pixels, depth


def splat(points: np.ndarray, colours: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray, width: int,
          height: int) -> np.ndarray:
    """[H, W, 3] uint8 image of points [N, 3] with colours [N, 3], 3x3-pixel splats, nearest wins."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    pixels, depth = _project(points, extrinsic, intrinsic)
    ok = np.isfinite(pixels).all(1) & (depth > 1e-3)
    corner = np.floor(pixels[ok]).astype(np.int64)
    depth, colours = depth[ok], colours[ok]
    offsets = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1]), -1).reshape(-1, 2)
    u = (corner[None, :, 0] + offsets[:, None, 0]).reshape(-1)
    v = (corner[None, :, 1] + offsets[:, None, 1]).reshape(-1)
    depth, colours = np.tile(depth, len(offsets)), np.tile(colours, (len(offsets), 1))
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, depth, colours = u[inside], v[inside], depth[inside], colours[inside]
    order = np.argsort(depth, kind="stable")
    _, nearest = np.unique((v * width + u)[order], return_index=True)
    chosen = order[nearest]
    image[v[chosen], u[chosen]] = colours[chosen]
    return image


def _draw_trajectory(draw: ImageDraw.ImageDraw, trajectory: Trajectory, extrinsic: np.ndarray,
                     intrinsic: np.ndarray, frustum_size: float) -> int:
    """Draw the camera path and frustums; returns how many camera centres fall inside the image."""
    centres = camera_centres(trajectory.extrinsics)
    pixels, depth = _project(centres, extrinsic, intrinsic)
    visible = np.isfinite(pixels).all(1) & (depth > 1e-3)
    width, height = draw.im.size
    inside = int((visible & (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0)
                  & (pixels[:, 1] < height)).sum())
    path = [tuple(p) for p, ok in zip(pixels.tolist(), visible) if ok]
    if len(path) > 1:
        draw.line(path, fill=trajectory.colour, width=3)
    for camera, centre, apex, ok in zip(trajectory.extrinsics, centres, pixels.tolist(), visible):
        if not ok:
            continue
        # Frustum: the apex and four image corners at ``frustum_size`` along the optical axis.
        corners = np.array([[-1, -0.75, 1], [1, -0.75, 1], [1, 0.75, 1], [-1, 0.75, 1]]) * frustum_size
        world = corners @ camera[:, :3] + centre  # camera-to-world: R^T x + C
        corner_pixels, corner_depth = _project(world, extrinsic, intrinsic)
        if not (corner_depth > 1e-3).all() or not np.isfinite(corner_pixels).all():
            continue
        ring = [tuple(p) for p in corner_pixels.tolist()]
        draw.line(ring + ring[:1], fill=trajectory.colour, width=1)
        for p in ring:
            draw.line([tuple(apex), p], fill=trajectory.colour, width=1)
    return inside


def render_preview(panels: Sequence[Panel], trajectories: Sequence[Trajectory],
                   footer: Sequence[Tuple[str, np.ndarray]], panel_size: Tuple[int, int] = (480, 360)) -> np.ndarray:
    """One image: ``panels`` side by side (each cloud from the same overview camera, all
    ``trajectories`` drawn on each, with a legend), over a row of ``footer`` images (title, [h, w, 3]
    uint8), scaled to the same total width. The last panel and the first trajectory (the ground truth)
    frame the view, so a wild estimate cannot zoom it out. Returns [H, W, 3] uint8."""
    width, height = panel_size
    reference = panels[-1].points[np.isfinite(panels[-1].points).all(1)]
    extrinsic, intrinsic = overview_camera(reference, trajectories[0].extrinsics, width, height)
    spread = np.percentile(np.linalg.norm(reference - np.median(reference, 0), axis=1), 90)
    tiles = []
    for panel in panels:
        image = Image.fromarray(splat(panel.points, panel.colours, extrinsic, intrinsic, width, height))
        draw = ImageDraw.Draw(image)
        labels = []
        for trajectory in trajectories:
            inside = _draw_trajectory(draw, trajectory, extrinsic, intrinsic, 0.06 * spread)
            count = len(trajectory.extrinsics)
            labels.append(trajectory.label + ("" if inside == count else f" ({inside} of {count} cameras in view)"))
        draw.rectangle([0, 0, width - 1, 18], fill=(255, 255, 255))
        draw.text((6, 3), panel.title, fill=(0, 0, 0))
        for row, (trajectory, label) in enumerate(zip(trajectories, labels)):
            y = height - 16 * (len(trajectories) - row) - 4
            draw.rectangle([6, y + 3, 22, y + 9], fill=trajectory.colour)
            draw.text((28, y), label, fill=(0, 0, 0))
        draw.rectangle([0, 0, width - 1, height - 1], outline=(180, 180, 180))
        tiles.append(np.asarray(image))
    top = np.concatenate(tiles, axis=1)
    if not footer:
        return top
    tile_width = top.shape[1] // len(footer)
    row = []
    for title, picture in footer:
        scaled = Image.fromarray(picture).resize((tile_width, round(picture.shape[0] * tile_width / picture.shape[1])),
                                                 Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(scaled)
        draw.rectangle([0, 0, tile_width - 1, 16], fill=(255, 255, 255))
        draw.text((6, 2), title, fill=(0, 0, 0))
        row.append(np.asarray(scaled))
    bottom = np.concatenate(row, axis=1)
    padded = np.full((bottom.shape[0], top.shape[1], 3), 255, dtype=np.uint8)
    padded[:, :bottom.shape[1]] = bottom
    return np.concatenate([top, padded], axis=0)
