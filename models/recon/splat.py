"""Gaussian-splat PLY files (LGM and the like): centres and colours, no faces; imported
as a point cloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import PortraitMesh, _require
from .detect import _ply_header


def read_splat_ply(path) -> PortraitMesh:
    """A Gaussian-splat PLY as a point cloud: centres and their base (SH degree 0) colour."""
    path = Path(path)
    header = _ply_header(path)
    _require(
        header["format"] == "binary_little_endian",
        f"{path.name}: splat PLY in {header['format']} is not supported; expected "
        "binary_little_endian.",
    )
    types = {
        "float": "<f4",
        "float32": "<f4",
        "double": "<f8",
        "uchar": "u1",
        "uint8": "u1",
        "int": "<i4",
        "int32": "<i4",
        "uint": "<u4",
        "short": "<i2",
        "ushort": "<u2",
    }
    vertex = next((e for e in header["elements"] if e[0] == "vertex"), None)
    _require(vertex is not None, f"{path.name}: PLY has no vertex element.")
    _require(
        header["elements"][0][0] == "vertex",
        f"{path.name}: PLY vertex element must come first.",
    )
    try:
        dtype = np.dtype([(name, types[t[0]]) for t, name in vertex[2]])
    except KeyError as exc:
        raise AniRenderError(f"{path.name}: unsupported PLY property type {exc}.") from None
    raw = np.fromfile(path, dtype=dtype, count=-1, offset=header["offset"])
    _require(
        len(raw) >= vertex[1],
        f"{path.name}: PLY is truncated ({len(raw)} of {vertex[1]} points).",
    )
    raw = raw[: vertex[1]]
    verts = np.stack([raw["x"], raw["y"], raw["z"]], 1).astype(np.float64)
    colors = None
    if "f_dc_0" in raw.dtype.names:
        sh0 = 0.28209479177387814
        colors = np.clip(0.5 + sh0 * np.stack([raw[f"f_dc_{i}"] for i in range(3)], 1), 0, 1)
    elif "red" in raw.dtype.names:
        colors = np.stack([raw["red"], raw["green"], raw["blue"]], 1) / 255.0
    keep = np.isfinite(verts).all(1)
    verts = verts[keep]
    colors = colors[keep] if colors is not None else None
    return PortraitMesh(
        verts,
        np.zeros((0, 3), np.int64),
        "Gaussian splats",
        colors,
        notes=["Gaussian splats have no surface: imported as a point cloud."],
    )
