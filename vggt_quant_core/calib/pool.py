"""Calibration sample pools: windows of S frames from image sequences, referenced by id, loaded on demand.

A *source* is one time-ordered image sequence (a folder of images, frames in memory, or frames decoded
lazily from a rosbag by ``data.bags``). A *sample* is a window of ``window`` consecutive frames of one
source, taken every ``stride`` frames; its id ``"<source>:<first>-<last>"`` is all a pool stores.
``PoolSpec`` says where the sources come from and how windows are cut.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.bags import bag_sources
from ..data.files import IMAGE_SUFFIXES, natural_key
from ..data.preprocess import ImageSource, load_and_preprocess_images

log = logging.getLogger(__name__)


class SequenceSource(Protocol):
    """One time-ordered image sequence."""

    name: str

    def __len__(self) -> int: ...

    def frames(self, start: int, stop: int) -> List[ImageSource]: ...


class FolderSequence:
    """Images of one folder in natural order (frame_2 before frame_10)."""

    def __init__(self, folder: Path, name: Optional[str] = None) -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.paths = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                            key=natural_key)

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self, start: int, stop: int) -> List[ImageSource]:
        return self.paths[start:stop]


class InMemorySequence:
    """Frames given by a loader (uint8 HxWx3 arrays, PIL images or paths), e.g. decoded from a bag on demand."""

    def __init__(self, name: str, length: int, loader: Callable[[int], ImageSource]) -> None:
        self.name, self._length, self._loader = name, length, loader

    def __len__(self) -> int:
        return self._length

    def frames(self, start: int, stop: int) -> List[ImageSource]:
        return [self._loader(i) for i in range(start, stop)]


def folder_sources(roots: Sequence[Path]) -> List[FolderSequence]:
    """Each root is a folder of images (one sequence) or a folder of such folders (one sequence each)."""
    sources = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise ValueError(f"{root}: not a directory")
        direct = FolderSequence(root)
        if len(direct):
            sources.append(direct)
        sources += [s for s in (FolderSequence(d) for d in sorted(root.iterdir(), key=natural_key) if d.is_dir())
                    if len(s)]
    if not sources:
        raise ValueError(f"no images found in {', '.join(map(str, roots))}")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"sequence names must be unique, got {names}")
    return sources


@dataclass(frozen=True)
class Sample:
    source: str
    start: int
    frames: int

    @property
    def id(self) -> str:
        return f"{self.source}:{self.start}-{self.start + self.frames - 1}"


class SamplePool:
    """Candidate windows over some sources; stores ids, loads tensors on request."""

    def __init__(self, sources: Sequence[SequenceSource], samples: Sequence[Sample], image_size: int = 518,
                 mode: str = "crop") -> None:
        self.sources: Dict[str, SequenceSource] = {s.name: s for s in sources}
        self.samples = list(samples)
        self.image_size, self.mode = image_size, mode

    @classmethod
    def from_sources(cls, sources: Sequence[SequenceSource], window: int, stride: int,
                     pool_size: Optional[int] = None, seed: int = 0, image_size: int = 518,
                     mode: str = "crop") -> "SamplePool":
        """All windows of ``window`` frames every ``stride`` frames; a seeded random subset of
        ``pool_size`` of them when there are more."""
        if window < 2 or stride < 1:
            raise ValueError(f"window must be >= 2 and stride >= 1, got {window} and {stride}")
        samples = [Sample(s.name, start, window) for s in sources
                   for start in range(0, len(s) - window + 1, stride)]
        if not samples:
            longest = max((len(s) for s in sources), default=0)
            raise ValueError(f"no window of {window} frames fits: the longest sequence has {longest} frames")
        if pool_size is not None and len(samples) > pool_size:
            keep = np.sort(np.random.default_rng(seed).choice(len(samples), pool_size, replace=False))
            samples = [samples[i] for i in keep]
        log.info("pool: %d windows of %d frames (stride %d) from %d sequences", len(samples), window, stride,
                 len(sources))
        return cls(sources, samples, image_size, mode)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> List[str]:
        return [s.id for s in self.samples]

    def index(self, sample_id: str) -> int:
        return self.ids.index(sample_id)

    def load(self, index: int) -> torch.Tensor:
        """Window ``index`` as [S, 3, H, W] in [0, 1], preprocessed as the model expects."""
        sample = self.samples[index]
        source = self.sources[sample.source]
        frames = source.frames(sample.start, sample.start + sample.frames)
        return load_and_preprocess_images(frames, mode=self.mode, target_size=self.image_size)

    def subset(self, indices: Sequence[int]) -> "SamplePool":
        return SamplePool(list(self.sources.values()), [self.samples[i] for i in indices], self.image_size, self.mode)


@dataclass(frozen=True)
class PoolSpec:
    """The candidate windows of a calibration: image folders or rosbags, cut into windows."""

    folders: Tuple[Path, ...] = ()   # each a folder of images or of sequence folders (see folder_sources)
    bags: Tuple[Union[str, Path], ...] = ()   # rosbag2 directories, .mcap/.db3 files, ROS 1 .bag files
    topics: Tuple[str, ...] = ()     # image topics of the bags (empty: every one)
    max_gap_s: float = 1.0           # bags: windows never span a longer time without a frame
    window: int = 10                 # frames per window
    stride: int = 5                  # frames between window starts
    size: Optional[int] = 400        # candidate windows kept (a seeded random subset); None: all
    seed: int = 0

    def __post_init__(self):
        if bool(self.folders) == bool(self.bags):
            raise ValueError("give image folders or bags as the calibration pool (one of the two)")
        if self.topics and not self.bags:
            raise ValueError("topics select image topics of bags, and no bag is given")

    def sources(self) -> Tuple[List[SequenceSource], Dict[str, List[str]]]:
        """The sequences, and what they were for the checkpoint's header (folders, or bags and topics)."""
        if self.folders:
            return folder_sources(self.folders), {"pool": [str(p) for p in self.folders]}
        sources, found = bag_sources(self.bags, list(self.topics) or None, self.max_gap_s)
        for bag, topics in found.items():
            log.info("%s: %s", bag, ", ".join(f"{topic} ({count} frames)" for topic, count in topics.items()))
        return sources, {"bags": [str(b) for b in self.bags], "topics": sorted({s.stream.topic for s in sources})}


def split_count(total: int, parts: int) -> List[int]:
    """``total`` split into ``parts`` near-equal integers (larger first)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def drop_count(n: int, fraction: float) -> int:
    """How many of n samples a noise fraction removes: floor(fraction * n), never all."""
    if not 0 <= fraction < 1:
        raise ValueError(f"noise fraction must be in [0, 1), got {fraction}")
    return min(int(math.floor(fraction * n)), n - 1)
