"""PAniC-3D's ``front.pkl``: a pickled dict of ``verts``, ``faces``, ``colors``, read with
the restricted unpickler; x is mirrored in the file, so it is negated and every
triangle reversed to keep normals outward."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import PANIC_BOX, PortraitMesh, _require
from .safe_pickle import load_pickle_safely


def read_panic_pickle(path) -> PortraitMesh:
    path = Path(path)
    data = load_pickle_safely(path)
    _require(
        isinstance(data, dict) and "verts" in data and "faces" in data,
        f"{path.name}: expected a PAniC-3D dict with 'verts' and 'faces'; found "
        f"{type(data).__name__} {sorted(data) if isinstance(data, dict) else ''}.",
    )
    verts = np.asarray(data["verts"], dtype=np.float64)
    faces = np.asarray(data["faces"])
    _require(
        verts.ndim == 2 and verts.shape[1] == 3 and len(verts),
        f"{path.name}: 'verts' has shape {verts.shape}, expected (V, 3).",
    )
    _require(
        faces.ndim == 2 and faces.shape[1] == 3 and np.issubdtype(faces.dtype, np.integer),
        f"{path.name}: 'faces' has shape {faces.shape} {faces.dtype}, expected (F, 3) integers.",
    )
    _require(np.isfinite(verts).all(), f"{path.name}: vertices contain NaN or infinity.")
    _require(
        faces.size == 0 or (faces.min() >= 0 and faces.max() < len(verts)),
        f"{path.name}: faces point past the {len(verts)} vertices; the file is corrupted.",
    )
    colors = data.get("colors")
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float64)
        if colors.shape != verts.shape:
            raise AniRenderError(
                f"{path.name}: 'colors' has shape {colors.shape}, expected {verts.shape}."
            )
        colors = np.clip(np.nan_to_num(colors), 0.0, 1.0)
    # Un-mirror x. A mirror flips the winding, but PAniC's marching cubes ran with
    # skimage's gradient_direction="descent" on a field that is high inside, which winds
    # triangles inward: the two flips cancel. Rather than trust either, orient the
    # triangles by the outward normals stored next to them (or, without those, so the
    # closed surface has positive volume).
    mirror = np.array([-1.0, 1.0, 1.0])
    verts = verts * mirror
    faces = faces.astype(np.int64)
    if _winding_is_inward(verts, faces, data.get("normals"), mirror):
        faces = faces[:, ::-1].copy()
    return PortraitMesh(verts, faces, "PAniC-3D", colors, box=(np.zeros(3), PANIC_BOX))


def _winding_is_inward(verts, faces, normals, mirror) -> bool:
    if len(faces) == 0:
        return False
    tri = verts[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = None if normals is None else np.asarray(normals, dtype=np.float64)
    if normals is not None and normals.shape == verts.shape and np.isfinite(normals).all():
        stored = (normals * mirror)[faces].sum(1)
        return float(np.einsum("ij,ij->i", face_n, stored).sum()) < 0
    return float(np.einsum("ij,ij->i", tri[:, 0], face_n).sum()) < 0
