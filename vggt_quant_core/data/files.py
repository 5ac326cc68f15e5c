"""Finding image files: directories, globs and file lists, in natural order."""

import glob
import re
from pathlib import Path
from typing import List, Sequence

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def natural_key(path: Path):
    """frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def find_images(specs: Sequence[str]) -> List[Path]:
    """Each spec is a directory (its images, not recursive), a glob pattern or a file; the result
    keeps spec order, each spec sorted naturally, without duplicates."""
    found: List[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            matches = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
            if not matches:
                raise ValueError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this directory")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(spec):
            matches = [Path(p) for p in glob.glob(str(path)) if Path(p).is_file()]
            if not matches:
                raise ValueError(f"{spec}: the pattern matches no files")
        else:
            raise ValueError(f"{spec}: no such file, directory or pattern")
        found.extend(p for p in sorted(matches, key=natural_key) if p not in found)
    return found
