"""Write a reconstruction to a folder: what a person opens to look at the result."""

import io
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..fileio import PathLike, write_bytes_atomic, write_text_atomic
from ..geometry import closed_form_inverse_se3
from ..inference import Reconstruction, colored_points
from .colormap import colorize_depth
from .ply import write_ply

CAMERA_CONVENTION = ("extrinsic: camera-from-world [R|t] (OpenCV: x right, y down, z forward); "
                     "intrinsic: pixels of the model input image; world = first camera's frame")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _finite_range(values: np.ndarray):
    finite = values[np.isfinite(values)]
    return [float(finite.min()), float(finite.max())] if finite.size else None


def write_depth(out_dir: PathLike, index: int, depth: np.ndarray, conf: Optional[np.ndarray] = None) -> None:
    """Write ``depth/frame_XXX.npy`` (depth [H, W] float32 as is), ``.png`` (colourised) and, with ``conf``,
    ``_conf.npy`` into ``out_dir``, each atomically."""
    stem = Path(out_dir) / "depth" / f"frame_{index:03d}"
    write_bytes_atomic(f"{stem}.npy", _npy_bytes(depth))
    if conf is not None:
        write_bytes_atomic(f"{stem}_conf.npy", _npy_bytes(conf))
    write_bytes_atomic(f"{stem}.png", _png_bytes(colorize_depth(depth)))


def write_reconstruction(recon: Reconstruction, out_dir: PathLike, conf_percentile: float = 50.0,
                         conf_min: float = 1.0, sources: Optional[Sequence[str]] = None,
                         metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``points.ply``, ``depth/frame_XXX.{npy,png}`` (+ ``_conf.npy``), ``cameras.json`` and
    ``summary.json`` into ``out_dir``; every file is written atomically. Returns the summary."""
    out_dir = Path(out_dir)
    xyz, rgb = colored_points(recon, conf_percentile, conf_min)
    write_ply(out_dir / "points.ply", xyz, rgb)

    frames = []
    cam_to_world = closed_form_inverse_se3(torch.from_numpy(recon.extrinsics)).numpy()
    for i in range(recon.num_frames):
        write_depth(out_dir, i, recon.depth[i], recon.depth_conf[i])
        frames.append({
            "index": i,
            "source": None if sources is None else str(sources[i]),
            "width": int(recon.depth.shape[2]),
            "height": int(recon.depth.shape[1]),
            "extrinsic": recon.extrinsics[i].tolist(),
            "intrinsic": recon.intrinsics[i].tolist(),
            "cam_to_world": cam_to_world[i].tolist(),
        })
    write_text_atomic(out_dir / "cameras.json",
                      json.dumps({"convention": CAMERA_CONVENTION, "frames": frames}, indent=1))

    summary = {
        **(metadata or {}),
        "frames": recon.num_frames,
        "image_size_hw": [int(recon.depth.shape[1]), int(recon.depth.shape[2])],
        "points": int(len(xyz)),
        "points_total": int(recon.points[..., 0].size),
        "conf_percentile": conf_percentile,
        "conf_min": conf_min,
        "depth_range": _finite_range(recon.depth),
        "files": {"points": "points.ply", "cameras": "cameras.json", "depth": "depth/"},
    }
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=1))
    return summary
