"""The fast pass rasteriser in numpy alone, for a Python without torch (Blender's own, where
the AniRender render engine draws its passes on an artist's machine or a farm worker).

Same contract and rule as ``models.raster`` (read its docstring): (T, 3, 4) clip-space
corners in, the front-most triangle per pixel centre with perspective-correct
barycentric weights out; triangles with a corner behind ``near_w`` dropped; both faces
drawn; equal depths on a pixel won by the higher triangle index. Arrays are numpy
(row 0 at the top); the work is vectorised over (triangle, pixel-in-bounding-box) pairs
in bounded batches, as there.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

_PAIRS_PER_BATCH = 1 << 21


@dataclass
class Fragments:
    """The visible surface at every pixel of an (H, W) image (numpy)."""

    triangle: np.ndarray  # (H, W) int64, -1 where nothing is hit
    barycentric: np.ndarray  # (H, W, 3) float32 perspective-correct corner weights
    depth: np.ndarray  # (H, W) float32 depth key, smaller is nearer (inf: no hit)

    @property
    def coverage(self) -> np.ndarray:
        return self.triangle >= 0

    def hits(self) -> np.ndarray:
        """Flat indices (row * W + col) of the covered pixels, in order."""
        return np.flatnonzero(self.triangle.reshape(-1) >= 0)

    def interpolate_at(self, corner_values, hits: np.ndarray) -> np.ndarray:
        """(T, 3, C) per-corner values interpolated at the covered pixels ``hits``: (N, C)."""
        values = np.asarray(corner_values, np.float32)
        weights = self.barycentric.reshape(-1, 3)[hits]
        return (weights[:, :, None] * values[self.triangle.reshape(-1)[hits]]).sum(axis=1)

    def interpolate(self, corner_values) -> np.ndarray:
        """Interpolate (T, 3, C) per-corner values to an (H, W, C) image (0 where empty)."""
        hits = self.hits()
        inside = self.interpolate_at(corner_values, hits)
        height, width = self.triangle.shape
        out = np.zeros((height * width, inside.shape[1]), np.float32)
        out[hits] = inside
        return out.reshape(height, width, -1)


def pick_device():
    """numpy runs on the CPU (the same call as ``models.raster.pick_device``)."""
    return SimpleNamespace(type="cpu")


def cpu_threads(count):
    """Nothing to set for numpy (the same call as ``models.raster.cpu_threads``)."""
    return nullcontext()


def rasterise(clip, height: int, width: int, near_w: float = 1e-6, device=None) -> Fragments:
    clip = np.asarray(clip, np.float32)
    if clip.ndim != 3 or clip.shape[1:] != (3, 4):
        raise ValueError(f"clip corners must be (T, 3, 4), got {clip.shape}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    pixels = height * width
    zbuffer = np.full(pixels, np.inf, np.float32)
    triangle = np.full(pixels, -1, np.int64)
    bary = np.zeros((pixels, 3), np.float32)

    corners = np.ascontiguousarray(clip.transpose(2, 1, 0))  # (component, corner, triangle)
    tri_ids = np.flatnonzero((corners[3] > near_w).all(axis=0))
    corners = corners[:, :, tri_ids]
    inv_w = np.float32(1.0) / corners[3]
    sx = (corners[0] * inv_w + np.float32(1.0)) * np.float32(0.5 * width)
    sy = (np.float32(1.0) - corners[1] * inv_w) * np.float32(0.5 * height)
    col0 = np.maximum(np.ceil(sx.min(axis=0) - np.float32(0.5)), 0)
    col1 = np.minimum(np.floor(sx.max(axis=0) - np.float32(0.5)), width - 1)
    row0 = np.maximum(np.ceil(sy.min(axis=0) - np.float32(0.5)), 0)
    row1 = np.minimum(np.floor(sy.max(axis=0) - np.float32(0.5)), height - 1)
    box_w = np.maximum(col1 - col0 + 1, 0)
    area = (box_w * np.maximum(row1 - row0 + 1, 0)).astype(np.int64)
    double_area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0])
    visible = np.flatnonzero((area > 0) & (np.abs(double_area) > 1e-12))
    if visible.size:
        orthographic = bool((corners[3] == 1.0).all())
        key = corners[2] * inv_w if orthographic else -inv_w
        geometry = np.concatenate(
            [sx, sy, np.stack([col0, row0, box_w, np.sign(double_area)])], axis=0
        )[:, visible].T.astype(np.float32)
        depth_terms = np.concatenate([key, inv_w], axis=0)[:, visible].T.astype(np.float32)
        counts = area[visible]
        ends = np.cumsum(counts)
        start = 0
        while start < visible.size:
            base = ends[start - 1] if start > 0 else 0
            stop = max(int(np.searchsorted(ends, base + _PAIRS_PER_BATCH, side="right")), start + 1)
            batch = np.arange(start, stop)
            _draw_batch(batch, counts[start:stop], geometry, depth_terms, tri_ids[visible],
                        width, zbuffer, triangle, bary)  # fmt: skip
            start = stop
    return Fragments(
        triangle.reshape(height, width), bary.reshape(height, width, 3),
        zbuffer.reshape(height, width),
    )  # fmt: skip


def _draw_batch(batch, counts, geometry, depth_terms, ids, width, zbuffer, triangle, bary):
    position = np.repeat(np.arange(batch.size), counts)
    t = batch[position]
    first = np.cumsum(counts) - counts
    local = (np.arange(t.size) - first[position]).astype(np.float32)
    rows = geometry[t]
    box_w = rows[:, 8]
    down = np.floor((local + np.float32(0.5)) / box_w)
    col = rows[:, 6] + (local - down * box_w)
    row = rows[:, 7] + down
    dx = rows[:, 0:3] - (col + np.float32(0.5))[:, None]
    dy = rows[:, 3:6] - (row + np.float32(0.5))[:, None]
    edges = (
        np.stack(
            [
                dx[:, 1] * dy[:, 2] - dx[:, 2] * dy[:, 1],
                dx[:, 2] * dy[:, 0] - dx[:, 0] * dy[:, 2],
                dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0],
            ],
            axis=1,
        )
        * rows[:, 9:10]
    )
    inside = np.flatnonzero((edges >= 0).all(axis=1))
    if inside.size == 0:
        return
    t, edges = t[inside], edges[inside]
    pixel = row[inside].astype(np.int64) * width + col[inside].astype(np.int64)
    terms = depth_terms[t]
    screen = edges / edges.sum(axis=1, keepdims=True)
    depth = (screen * terms[:, 0:3]).sum(axis=1)
    persp = screen * terms[:, 3:6]
    persp = persp / persp.sum(axis=1, keepdims=True)
    tri = ids[t]
    # per pixel: the nearest, and among equal depths the higher triangle index
    order = np.lexsort((-tri, depth, pixel))
    pixel, depth, tri, persp = pixel[order], depth[order], tri[order], persp[order]
    best = np.ones(pixel.size, bool)
    best[1:] = pixel[1:] != pixel[:-1]
    pixel, depth, tri, persp = pixel[best], depth[best], tri[best], persp[best]
    win = depth < zbuffer[pixel]
    pixel = pixel[win]
    zbuffer[pixel] = depth[win]
    triangle[pixel] = tri[win]
    bary[pixel] = persp[win]
