"""Surfaces from portrait volumes, and the mesh clean-up every import shares (no bpy).

Marching cubes is skimage's; everything here works on plain (V,3) / (F,3) arrays.
Triangles wind counter-clockwise seen from outside (normals point out of the head).
"""

from __future__ import annotations

import numpy as np

from ...errors import AniRenderError
from .data import PortraitVolume


def volume_to_surface(volume: PortraitVolume, level=None, step_size=1):
    """Marching cubes at ``level`` (default: the format's level) -> verts (world), faces,
    colours or None. Triangles face outward for a field that is high inside the head."""
    from skimage.measure import marching_cubes

    level = volume.level if level is None else float(level)
    density = volume.density
    low, high = float(density.min()), float(density.max())
    if not low < level < high:
        inner = density[density > -999] if (density <= -999).any() else density
        suggestion = float(np.percentile(inner, 99.0)) * 0.5 + float(inner.min()) * 0.5
        raise AniRenderError(
            f"{volume.source} volume has no surface at level {level:g}: its values range from "
            f"{low:g} to {high:g}. Try a level inside that range, e.g. {suggestion:.3g} "
            "(Iso-level in the import options, --level on the command line)."
        )
    # 'ascent' orients triangles so that their normals point down the field: outward.
    verts, faces, _normals, _values = marching_cubes(
        density, level=level, step_size=int(step_size), gradient_direction="ascent"
    )
    colors = None
    if volume.colors is not None:
        colors = sample_trilinear(volume.colors, verts)
    world = volume.index_to_world(verts.astype(np.float64))
    if np.prod(np.sign(volume.spacing)) < 0:  # a mirrored grid flips winding
        faces = faces[:, ::-1]
    if volume.color_at is not None and colors is None:
        colors = np.asarray(volume.color_at(world), dtype=np.float64)
    return world, faces.astype(np.int64), colors


def sample_trilinear(grid: np.ndarray, index_points: np.ndarray) -> np.ndarray:
    """Trilinear samples of a (X,Y,Z,C) grid at fractional voxel indices (N,3)."""
    from scipy.ndimage import map_coordinates

    coords = index_points.T
    return np.stack(
        [
            map_coordinates(grid[..., c], coords, order=1, mode="nearest")
            for c in range(grid.shape[-1])
        ],
        axis=1,
    ).astype(np.float64)


def keep_largest_piece(verts, faces, colors=None):
    """Drop floaters: keep the connected piece with the most triangles."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return verts, faces, colors
    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    if count == 1:
        return verts, faces, colors
    face_labels = labels[faces[:, 0]]
    biggest = np.bincount(face_labels).argmax()
    return _subset(verts, faces[face_labels == biggest], colors)


def _subset(verts, faces, colors):
    used = np.unique(faces)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces], (colors[used] if colors is not None else None)


def vertex_normals(verts, faces):
    """Area-weighted vertex normals, unit length."""
    normals = np.zeros_like(verts, dtype=np.float64)
    if len(faces) == 0:
        return normals
    tri = verts[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, 1e-20)


def signed_volume(verts, faces):
    """Positive when triangles face outward (for a closed surface)."""
    tri = verts[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def smooth_taubin(verts, faces, iterations=0, lam=0.5, mu=-0.53):
    """Taubin smoothing: removes voxel stair-steps without shrinking the head."""
    from scipy.sparse import coo_matrix, diags

    if iterations <= 0 or len(faces) == 0:
        return verts
    n = len(verts)
    rows = np.concatenate(
        [faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]]
    )
    cols = np.concatenate(
        [faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]]
    )
    adjacency = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(1)).ravel()
    average = diags(1.0 / np.maximum(degree, 1)) @ adjacency
    out = verts.astype(np.float64).copy()
    for _ in range(int(iterations)):
        out = out + lam * (average @ out - out)
        out = out + mu * (average @ out - out)
    return out


def decimate_to_budget(verts, faces, colors, face_budget):
    """Vertex clustering on a grid whose cell is searched so the triangle count fits the
    budget. Coarse but robust; used by both the CLI and the Blender import."""
    if not face_budget or len(faces) <= face_budget:
        return verts, faces, colors
    extent = float(np.ptp(verts, axis=0).max())
    low, high = extent / 4096, extent / 4  # cell sizes: too fine .. certainly coarse enough
    best = None
    for _ in range(24):
        cell = (low * high) ** 0.5
        result = _cluster(verts, faces, colors, cell)
        if len(result[1]) > face_budget:
            low = cell
        else:
            high, best = cell, result
        if high / low < 1.02:
            break
    if best is None:
        best = _cluster(verts, faces, colors, high)
    return best


def _cluster(verts, faces, colors, cell):
    keys = np.floor((verts - verts.min(0)) / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.ravel()
    new_verts = np.zeros((len(counts), 3))
    np.add.at(new_verts, cluster, verts)
    new_verts /= counts[:, None]
    new_colors = None
    if colors is not None:
        new_colors = np.zeros((len(counts), 3))
        np.add.at(new_colors, cluster, colors)
        new_colors /= counts[:, None]
    new_faces = cluster[faces]
    ok = (
        (new_faces[:, 0] != new_faces[:, 1])
        & (new_faces[:, 1] != new_faces[:, 2])
        & (new_faces[:, 2] != new_faces[:, 0])
    )
    new_faces = new_faces[ok]
    # drop duplicate triangles (same three corners, either winding)
    _, first = np.unique(np.sort(new_faces, axis=1), axis=0, return_index=True)
    new_faces = new_faces[np.sort(first)]
    return _subset(new_verts, new_faces, new_colors)


def front_projection(verts, normals, box_centre, box_side, resolution=256, tolerance=None):
    """Orthographic front view (Blender frame: looking along +Y at a head facing -Y).

    Returns UVs (V,2) that map the cube's front face to the portrait image, and a facing
    weight (V,) in [0,1]: how much each vertex is seen in the portrait (normal toward the
    viewer, not hidden behind nearer surface)."""
    centre = np.asarray(box_centre, dtype=np.float64)
    u = (verts[:, 0] - centre[0]) / box_side + 0.5
    v = (verts[:, 2] - centre[2]) / box_side + 0.5
    uv = np.stack([u, v], axis=1)
    facing = np.clip(-normals[:, 1], 0.0, 1.0)
    facing = np.clip((facing - 0.15) / 0.35, 0.0, 1.0)  # soft edge over grazing angles
    # point z-buffer: a vertex is visible if nothing in its pixel lies clearly in front
    px = np.clip((uv * resolution).astype(np.int64), 0, resolution - 1)
    pixel = px[:, 1] * resolution + px[:, 0]
    nearest = np.full(resolution * resolution, np.inf)
    np.minimum.at(nearest, pixel, verts[:, 1])
    tolerance = 2.0 * box_side / resolution if tolerance is None else tolerance
    visible = verts[:, 1] <= nearest[pixel] + tolerance
    return uv, facing * visible
