"""Training data: a disk cache of rendered scenes, windows sampled from it, and VGGT's GT normalisation.

The cache holds ``scenes_per_shard`` sequences per ``shard_XXXXX.npz`` (uncompressed): RGB uint8
[N, F, H, W, 3], depth float16 [N, F, H, W] (metres, 0 = sky), extrinsics [N, F, 3, 4] (camera-from-world)
and intrinsics [N, F, 3, 3] float32, seeds [N]. Shards are written atomically, so an interrupted build
resumes at the first missing shard. Rendering costs far more than a training step reads, which is why
scenes are rendered once and windows drawn from them many times.

A window is some frames of one cached sequence (``WindowSampler``): consecutive ones at a stride, or a random
subset drawn across the sequence, in time order or reversed. A trajectory sweeps the same extent whatever its
frame count, so the 20 cached frames are twice as dense as a 10-frame evaluation sequence of the same path.
"""

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

from ..data import HELD_OUT_SEED_BASE, generate_sequence
from ..data.scenes import TEXTURE_SETS
from ..fileio import atomic_path, write_text_atomic
from ..geometry import closed_form_inverse_se3, depth_to_camera_points

log = logging.getLogger(__name__)

# Rays that pass over the low walls of an open hall meet the endless floor kilometres away (12 % of the
# scenes; float16 turns the farthest into inf): such depth would dominate VGGT's mean-distance
# normalisation, so it counts as no ground truth, like the sky. Rooms are at most 7 m across.
MAX_TRAINING_DEPTH_M = 50.0


@dataclass(frozen=True)
class CacheSpec:
    """What a cache holds; stored as ``cache.json`` so a cache of other scenes is never mixed in."""

    scenes: int = 2400
    first_seed: int = 0
    frames: int = 20
    width: int = 112
    height: int = 84
    scenes_per_shard: int = 100
    textures: str = "rich"          # scenes.TEXTURE_SETS: non-periodic textures make frames matchable

    def __post_init__(self):
        if self.first_seed < 0 or self.first_seed + self.scenes > HELD_OUT_SEED_BASE:
            raise ValueError(f"training scenes must use seeds below {HELD_OUT_SEED_BASE} (held out from there on)")
        if self.scenes < 1 or self.frames < 2 or self.scenes_per_shard < 1:
            raise ValueError("a cache needs at least 1 scene of 2 frames")
        if self.textures not in TEXTURE_SETS:
            raise ValueError(f"textures must be one of {sorted(TEXTURE_SETS)}, got {self.textures!r}")

    @property
    def shards(self) -> int:
        return -(-self.scenes // self.scenes_per_shard)

    def shard_seeds(self, shard: int) -> range:
        start = self.first_seed + shard * self.scenes_per_shard
        return range(start, min(start + self.scenes_per_shard, self.first_seed + self.scenes))


def _render_shard(directory: Path, spec: CacheSpec, shard: int) -> float:
    """Render one shard of ``spec`` into ``directory`` (atomically); returns the seconds it took."""
    started = time.perf_counter()
    sequences = [generate_sequence(seed, spec.frames, spec.width, spec.height, textures=spec.textures).cameras[0]
                 for seed in spec.shard_seeds(shard)]
    arrays = {"images": np.stack([s.images for s in sequences]),
              "depth": np.stack([s.depth for s in sequences]).astype(np.float16),
              "extrinsics": np.stack([s.extrinsics for s in sequences]),
              "intrinsics": np.stack([s.intrinsics for s in sequences]),
              "seeds": np.array(list(spec.shard_seeds(shard)))}
    with atomic_path(directory / f"shard_{shard:05d}.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return time.perf_counter() - started


def _render_shard_in_worker(directory: Path, spec: CacheSpec, shard: int) -> float:
    torch.set_num_threads(1)  # one renderer per core
    return _render_shard(directory, spec, shard)


def build_scene_cache(directory: Path, spec: CacheSpec, log_fn: Callable[[str], None] = log.info,
                      workers: int = 1) -> None:
    """Render the scenes of ``spec`` into ``directory`` (resumes an interrupted build); ``workers`` > 1
    renders that many shards at once in separate processes (one core each)."""
    directory = Path(directory)
    marker = directory / "cache.json"
    if marker.exists():
        if json.loads(marker.read_text()) != asdict(spec):
            raise ValueError(f"{directory} holds a scene cache with other settings; use another directory")
    else:
        write_text_atomic(marker, json.dumps(asdict(spec)))
    missing = [shard for shard in range(spec.shards) if not (directory / f"shard_{shard:05d}.npz").exists()]
    if workers <= 1:
        for shard in missing:
            seconds = _render_shard(directory, spec, shard)
            log_fn(f"scene cache: shard {shard + 1}/{spec.shards} in {seconds:.0f} s")
        return
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_render_shard_in_worker, directory, spec, shard): shard for shard in missing}
        for future in as_completed(futures):
            log_fn(f"scene cache: shard {futures[future] + 1}/{spec.shards} in {future.result():.0f} s")


def load_scene_cache(directory: Path) -> Dict[str, np.ndarray]:
    """All shards of a complete cache in memory (depth stays float16: half the memory)."""
    directory = Path(directory)
    spec = CacheSpec(**json.loads((directory / "cache.json").read_text()))
    paths = [directory / f"shard_{shard:05d}.npz" for shard in range(spec.shards)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"{directory}: scene cache incomplete, {len(missing)} shard(s) missing (build it first)")
    shards = [dict(np.load(p)) for p in paths]
    return {key: np.concatenate([s[key] for s in shards]) for key in shards[0]}


SAMPLINGS = ("contiguous", "subset")


@dataclass(frozen=True)
class WindowSampler:
    """Draws the training windows of each step, reproducibly from (``seed``, step) alone, so that a
    resumed run sees exactly the windows an uninterrupted one would.

    ``sampling``:

    * ``contiguous``: ``frames`` consecutive cached frames ``stride`` apart (``strides``), either order.
    * ``subset``: ``frames`` distinct cached frames drawn at random from a stretch of the sequence, in
      time order or reversed (VGGT's training draws frame subsets across the whole sequence). The stretch
      is the whole sequence, or with ``curriculum_steps`` > 0 a fraction of it that grows linearly from
      ``curriculum_start`` to 1 over those steps (short baselines first). Evaluation sequences sweep a
      trajectory's whole extent whatever their frame count, so their pairs span up to the whole cached
      sequence: only this sampling trains on such pairs.

    The frame count is uniform in ``min_frames..max_frames`` (the same for every window of a batch).
    """

    batch: int = 1
    min_frames: int = 2
    max_frames: int = 10
    strides: Sequence[int] = (1, 2)
    seed: int = 0
    sampling: str = "contiguous"
    curriculum_steps: int = 0
    curriculum_start: float = 0.3

    def __post_init__(self):
        if not 2 <= self.min_frames <= self.max_frames or self.batch < 1 or min(self.strides) < 1:
            raise ValueError("need 2 <= min_frames <= max_frames, batch >= 1 and strides >= 1")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.curriculum_steps < 0 or not 0 < self.curriculum_start <= 1:
            raise ValueError("need curriculum_steps >= 0 and 0 < curriculum_start <= 1")

    def span_fraction(self, step: int) -> float:
        """The fraction of the cached sequence a ``subset`` window may stretch over at ``step``."""
        if self.curriculum_steps == 0:
            return 1.0
        return min(1.0, self.curriculum_start + (1 - self.curriculum_start) * step / self.curriculum_steps)

    def indices(self, step: int, scenes: int, frames: int) -> List[np.ndarray]:
        """For each window of the batch: [scene, frame, frame, ...] (same frame count in a batch)."""
        if self.max_frames > frames:
            raise ValueError(f"windows of up to {self.max_frames} frames do not fit in the cached {frames}")
        rng = np.random.default_rng([self.seed, step])
        count = int(rng.integers(self.min_frames, self.max_frames + 1))
        if self.sampling == "subset":
            stretch = max(count, int(round(self.span_fraction(step) * frames)))
        else:
            stride = int(rng.choice([s for s in self.strides if s * (count - 1) < frames] or [1]))
            stretch = stride * (count - 1) + 1
        windows = []
        for _ in range(self.batch):
            scene = int(rng.integers(scenes))
            start = int(rng.integers(frames - stretch + 1))
            if self.sampling == "subset":
                chosen = start + np.sort(rng.choice(stretch, size=count, replace=False))
            else:
                chosen = start + stride * np.arange(count)
            windows.append(np.concatenate([[scene], chosen[::-1] if rng.random() < 0.5 else chosen]))
        return windows


def normalize_window(images: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                     depth: torch.Tensor) -> Dict[str, torch.Tensor]:
    """VGGT's ground-truth normalisation of windows (the training code's
    ``normalize_camera_extrinsics_and_points_batch``).

    Inputs: images [B, S, 3, H, W] in [0, 1], extrinsics [B, S, 3, 4] (camera-from-world), intrinsics
    [B, S, 3, 3], depth [B, S, H, W] (0 = no ground truth; so is depth from ``MAX_TRAINING_DEPTH_M`` on). The
    first camera becomes the world origin
    (extrinsics E_i E_0^-1, points in camera 0's frame) and every length is divided by the mean distance
    of the valid points from it. Returns the ``vggt_loss`` target: those tensors plus ``world_points``
    [B, S, H, W, 3] and ``valid`` [B, S, H, W], and ``scale`` [B] (metres per unit).
    """
    valid = (depth > 0) & (depth < MAX_TRAINING_DEPTH_M)
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    relative = extrinsics @ closed_form_inverse_se3(extrinsics[:, :1])  # camera i from camera 0: [B, S, 3, 4]
    to_first = closed_form_inverse_se3(relative)                         # camera 0 from camera i: [B, S, 4, 4]
    camera_points = depth_to_camera_points(depth, intrinsics)            # [B, S, H, W, 3]
    points = torch.einsum("bsij,bshwj->bshwi", to_first[:, :, :3, :3], camera_points) \
        + to_first[:, :, None, None, :3, 3]
    distance = (points.norm(dim=-1) * valid).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp(min=1)
    scale = distance.clamp(min=1e-6)
    relative = torch.cat([relative[..., :3], relative[..., 3:] / scale[:, None, None, None]], dim=-1)
    return {"images": images, "extrinsics": relative, "intrinsics": intrinsics,
            "depth": depth / scale[:, None, None, None], "world_points": points / scale[:, None, None, None, None],
            "valid": valid, "scale": scale}


def window_batch(cache: Dict[str, np.ndarray], windows: List[np.ndarray]) -> Dict[str, torch.Tensor]:
    """The normalised target (``normalize_window``) of the cached windows ``[scene, frames...]``."""
    def gather(key):
        return torch.from_numpy(np.stack([cache[key][w[0]][w[1:]] for w in windows]))

    images = gather("images").permute(0, 1, 4, 2, 3).float() / 255
    return normalize_window(images, gather("extrinsics").float(), gather("intrinsics").float(),
                            gather("depth").float())
