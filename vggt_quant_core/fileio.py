"""File helpers shared by everything that writes results: atomic replacement, never half a file."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    If the body raises (or the process dies), ``path`` keeps its previous content, if any, and the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get normal permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` onto ``target``; an old ``target`` is removed only after."""
    old = None
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{target} exists and is not a directory")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a path (not yet created) with the same name as ``path`` in a scratch folder beside it; on success
    the directory made there replaces ``path`` (an old one is removed only once the new one is in place). If
    the body raises, or the process dies, ``path`` is as it was and nothing half-written carries its name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = scratch / path.name
        yield staged
        _replace_directory(staged, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
