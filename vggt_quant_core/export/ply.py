"""Binary PLY point clouds (x, y, z float32 + red, green, blue uchar), as MeshLab/CloudCompare/Open3D read."""

import numpy as np

from ..fileio import PathLike, atomic_path

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: PathLike, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write points [N, 3] and uint8 colours [N, 3] atomically."""
    xyz, rgb = np.asarray(xyz), np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"expected xyz [N, 3] and rgb [N, 3], got {xyz.shape} and {rgb.shape}")
    vertices = np.empty(len(xyz), dtype=_VERTEX)
    for i, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb[:, i]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(xyz)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(header.encode("ascii"))
            handle.write(vertices.tobytes())


def read_ply(path: PathLike):
    """Read back what ``write_ply`` writes: (xyz [N, 3] float32, rgb [N, 3] uint8)."""
    with open(path, "rb") as handle:
        data = handle.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if header[1] != "format binary_little_endian 1.0":
        raise ValueError(f"{path}: unsupported PLY format {header[1]!r}")
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    vertices = np.frombuffer(data, dtype=_VERTEX, count=count, offset=end)
    xyz = np.stack([vertices[a] for a in "xyz"], axis=1)
    rgb = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1)
    return xyz, rgb
