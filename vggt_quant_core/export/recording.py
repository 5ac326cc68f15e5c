"""A generated scene on disk as a robot would record it: PNG frames and/or a rosbag2 recording, with its
ground truth (``ground_truth.npz``) and a description (``scene.json``); and the ground truth read back."""

import json
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image

from ..data import RenderedSequence, SceneSequence
from ..data.bags import write_bag
from ..fileio import atomic_path, write_text_atomic

GROUND_TRUTH_CONVENTION = ("<cam>_extrinsics [S, 3, 4]: camera-from-world (OpenCV: x right, y down, z forward), "
                           "world z up, floor z = 0, metres; <cam>_intrinsics [S, 3, 3]: pixels, principal point "
                           "(W/2, H/2); <cam>_depth [S, H, W]: camera z in metres, 0 = no surface (sky); "
                           "timestamps_ns [S]: header stamps of the bag messages")


def write_scene(out: Path, sequence: SceneSequence, images: bool = True, bag: bool = True, storage: str = "mcap",
                camera_info: bool = True, odometry: bool = False, depth: bool = False) -> Dict[str, Path]:
    """Write ``<cam>/frame_XXX.png`` (``images``), the rosbag2 directory ``bag/`` (``bag``; with the true
    odometry and depth topics of ``data.bags.write_bag`` when asked), ``ground_truth.npz`` and ``scene.json``
    into ``out``; returns the paths written."""
    written = {}
    if images:
        for camera in sequence.cameras:
            for index, image in enumerate(camera.images):
                with atomic_path(out / camera.name / f"frame_{index:03d}.png") as tmp:
                    Image.fromarray(image).save(tmp, format="PNG")
            written[camera.name] = out / camera.name
    if bag:
        written["bag"] = write_bag(out / "bag", sequence, storage=storage, camera_info=camera_info,
                                   odometry=odometry, depth=depth)
    arrays = {"timestamps_ns": sequence.timestamps_ns}
    for camera in sequence.cameras:
        arrays.update({f"{camera.name}_depth": camera.depth, f"{camera.name}_extrinsics": camera.extrinsics,
                       f"{camera.name}_intrinsics": camera.intrinsics})
    written["ground_truth"] = out / "ground_truth.npz"
    with atomic_path(written["ground_truth"]) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    meta = {"seed": sequence.seed, "trajectory": sequence.trajectory, "kind": sequence.kind,
            "cameras": [c.name for c in sequence.cameras], "baseline_m": sequence.baseline,
            "frames": sequence.cameras[0].num_frames, "width": int(sequence.cameras[0].images.shape[2]),
            "height": int(sequence.cameras[0].images.shape[1]), "convention": GROUND_TRUTH_CONVENTION}
    written["scene"] = out / "scene.json"
    write_text_atomic(written["scene"], json.dumps(meta, indent=1))
    return written


def read_ground_truth(path: Path, images: np.ndarray, camera: str = "cam0") -> RenderedSequence:
    """One camera's ground truth from ``ground_truth.npz``, with the given frames [S, H, W, 3]."""
    try:
        with np.load(path) as data:
            truth = RenderedSequence(name=camera, images=images, depth=data[f"{camera}_depth"],
                                     extrinsics=data[f"{camera}_extrinsics"], intrinsics=data[f"{camera}_intrinsics"])
    except KeyError as exc:
        raise ValueError(f"{path}: no ground truth for camera {camera!r}") from exc
    if truth.depth.shape != images.shape[:3]:
        raise ValueError(f"{path}: ground truth is {truth.depth.shape}, the frames are {images.shape[:3]}")
    return truth
