"""Output files: PLY round trip, depth colouring, atomic writes."""

import numpy as np
import pytest

from vggt_quant_core.export import colorize_depth, read_ply, turbo, write_ply
from vggt_quant_core.fileio import atomic_path


def test_ply_round_trip_and_header(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(100, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(100, 3), dtype=np.uint8)
    path = tmp_path / "cloud.ply"
    write_ply(path, xyz, rgb)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "element vertex 100" in header and "property uchar red" in header
    assert len(path.read_bytes()) == len(header) + len("end_header\n") + 100 * 15
    back_xyz, back_rgb = read_ply(path)
    assert np.array_equal(back_xyz, xyz) and np.array_equal(back_rgb, rgb)
    with pytest.raises(ValueError, match="expected xyz"):
        write_ply(path, xyz[:, :2], rgb)


def test_turbo_endpoints_and_depth_colouring():
    blue, green, red = turbo(np.array([0.1, 0.5, 0.9]))
    assert blue.argmax() == 2 and green.argmax() == 1 and red.argmax() == 0
    assert turbo(np.array([-1.0, 2.0])).tolist() == turbo(np.array([0.0, 1.0])).tolist()  # clipped
    near_far = colorize_depth(np.array([[1.0, 10.0], [0.0, np.nan]]))
    assert near_far[0, 0, 0] > near_far[0, 0, 2]   # near: red
    assert near_far[0, 1, 2] > near_far[0, 1, 0]   # far: blue
    assert (near_far[1] == 0).all()                # invalid: black


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_files_get_normal_permissions(tmp_path):
    import os
    target = tmp_path / "perm.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
