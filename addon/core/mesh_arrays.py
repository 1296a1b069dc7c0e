"""Vertex positions of mesh objects as numpy arrays: the one reader the add-on shares.

Positions are float64 (N, 3). With a depsgraph they are the *evaluated* mesh (armature,
shape keys, modifiers at their viewport settings, as the viewport shows it); without
one, the object's own mesh data as modelled. They come in world space, or in the space
``to_space @ world`` for a given 4x4 (``to_space`` = the armature's inverse world
matrix gives armature space). ``foreach_get`` reads them in one call.
"""

from __future__ import annotations

import numpy as np


def vertex_positions(obj, depsgraph=None, to_space: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) float64 positions of ``obj``'s vertices (see the module docstring)."""
    if depsgraph is not None:
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            local = _read_co(mesh)
        finally:
            evaluated.to_mesh_clear()
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    else:
        local = _read_co(obj.data)
        matrix = np.array(obj.matrix_world, dtype=np.float64)
    if to_space is not None:
        matrix = np.asarray(to_space, dtype=np.float64) @ matrix
    return local @ matrix[:3, :3].T + matrix[:3, 3]


def world_bounds(meshes, depsgraph=None) -> tuple[np.ndarray, np.ndarray] | None:
    """World-space (min, max) corners around the vertices of ``meshes``; None if empty."""
    points = [vertex_positions(obj, depsgraph) for obj in meshes]
    points = [p for p in points if len(p)]
    if not points:
        return None
    return np.min([p.min(0) for p in points], 0), np.max([p.max(0) for p in points], 0)


def _read_co(mesh) -> np.ndarray:
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)
