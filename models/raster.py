"""The fast pass rasteriser: triangles in, per-pixel attributes out (torch, never bpy).

It reproduces what Cycles sees with one sample per pixel and a near-zero pixel filter:
one camera ray through the centre of each pixel, the nearest surface wins, and the
surface attributes are interpolated perspective-correctly at that point. Nothing is
anti-aliased or filtered, so UVs never blend across seams.

Conventions (shared with ``addon.passes``):
- ``clip`` vertices are homogeneous clip-space positions, ``projection @ camera @ world``
  with Blender's camera matrix (OpenGL style: x, y, z in [-w, w] inside the view, ``w``
  the distance in front of the camera for a perspective camera, 1 for orthographic).
- Images are row-major, row 0 at the *top*; pixel ``(row, col)`` is sampled at NDC
  ``x = (col + 0.5) / W * 2 - 1``, ``y = 1 - (row + 0.5) / H * 2``.
- Triangles with a vertex behind the near plane (``w <= near_w``) are dropped, not
  clipped; characters in frame never need clipping.
- Both faces are drawn (no back-face culling), as Cycles does.

Work is vectorised over (triangle, pixel-in-bounding-box) pairs, in batches that bound
memory; there is no Python loop per pixel or per triangle.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

# (triangle, pixel) candidate pairs handled at once; ~60 bytes each in flight
_PAIRS_PER_BATCH = 1 << 22


@dataclass
class Fragments:
    """The visible surface at every pixel of an (H, W) image."""

    triangle: torch.Tensor  # (H, W) int64, -1 where nothing is hit
    barycentric: torch.Tensor  # (H, W, 3) perspective-correct weights of the 3 corners
    depth: torch.Tensor  # (H, W) depth key of the hit, smaller is nearer (inf: no hit)

    @property
    def coverage(self) -> torch.Tensor:
        """(H, W) bool: a triangle covers the pixel centre."""
        return self.triangle >= 0

    def hits(self) -> torch.Tensor:
        """Flat indices (row * W + col) of the covered pixels, in order."""
        return torch.nonzero(self.triangle.reshape(-1) >= 0).squeeze(1)

    def interpolate_at(self, corner_values, hits: torch.Tensor) -> torch.Tensor:
        """(T, 3, C) per-corner values interpolated at the covered pixels ``hits`` (flat
        indices from ``hits()``): (N, C)."""
        values = torch.as_tensor(corner_values, device=self.triangle.device)
        values = values.to(self.barycentric.dtype)
        w = self.barycentric.reshape(-1, 3).index_select(0, hits)
        corners = values.index_select(0, self.triangle.reshape(-1).index_select(0, hits))
        # the three products summed in corner order (what ``.sum(dim=1)`` does, faster)
        return w[:, 0:1] * corners[:, 0] + w[:, 1:2] * corners[:, 1] + w[:, 2:3] * corners[:, 2]

    def interpolate(self, corner_values) -> torch.Tensor:
        """Interpolate (T, 3, C) per-corner values to an (H, W, C) image (0 where empty)."""
        hits = self.hits()
        inside = self.interpolate_at(corner_values, hits)
        height, width = self.triangle.shape
        out = torch.zeros(height * width, inside.shape[1], dtype=inside.dtype, device=inside.device)
        out.index_copy_(0, hits, inside)
        return out.view(height, width, inside.shape[1])


def pick_device() -> torch.device:
    """CUDA when present, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def cpu_threads(count: int | None):
    """Run torch's CPU kernels on ``count`` threads inside the block (None: unchanged)."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def rasterise(
    clip, height: int, width: int, near_w: float = 1e-6, device=None, threads: int | None = 1
) -> Fragments:
    """Rasterise triangles given as (T, 3, 4) clip-space corners into an (H, W) image.

    Returns the front-most triangle per pixel centre and its perspective-correct
    barycentric weights; interpolate any per-corner attribute with
    ``Fragments.interpolate``. On the CPU the work runs on ``threads`` threads: the
    kernels are small and memory-bound, and on shared cores OpenMP's spinning extra
    threads made them 10x slower (measured), so one thread is the default.
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cpu":
        with cpu_threads(threads):
            return _rasterise(clip, height, width, near_w, device)
    return _rasterise(clip, height, width, near_w, device)


def _rasterise(clip, height, width, near_w, device) -> Fragments:
    clip = torch.as_tensor(np.asarray(clip), device=device).to(torch.float32)
    if clip.ndim != 3 or clip.shape[1:] != (3, 4):
        raise ValueError(f"clip corners must be (T, 3, 4), got {tuple(clip.shape)}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")

    pixels = height * width
    zbuffer = torch.full((pixels,), torch.inf, dtype=torch.float32, device=device)
    triangle = torch.full((pixels,), -1, dtype=torch.int64, device=device)
    bary = torch.zeros((pixels, 3), dtype=torch.float32, device=device)

    # (component, corner, triangle) layout: every operation below runs on contiguous rows;
    # rows are picked with index_select (torch's general ``x[index]`` is several times
    # slower on the CPU)
    corners = clip.permute(2, 1, 0).contiguous()
    keep = (corners[3] > near_w).all(dim=0)
    tri_ids = torch.nonzero(keep).squeeze(1)
    if tri_ids.numel() < keep.numel():
        corners = corners.index_select(2, tri_ids)
    inv_w = 1.0 / corners[3]
    # screen space: x to the right, y downwards, in pixels; pixel centres at +0.5
    sx = (corners[0] * inv_w + 1.0) * (0.5 * width)
    sy = (1.0 - corners[1] * inv_w) * (0.5 * height)

    # the pixel-centre columns/rows each triangle's bounding box can contain
    col0 = torch.ceil(sx.amin(dim=0) - 0.5).clamp_(min=0)
    col1 = torch.floor(sx.amax(dim=0) - 0.5).clamp_(max=width - 1)
    row0 = torch.ceil(sy.amin(dim=0) - 0.5).clamp_(min=0)
    row1 = torch.floor(sy.amax(dim=0) - 0.5).clamp_(max=height - 1)
    box_w = (col1 - col0 + 1).clamp_(min=0)
    area = (box_w * (row1 - row0 + 1).clamp_(min=0)).to(torch.int64)
    # signed area; degenerate (edge-on) triangles cover no pixel centre
    double_area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0])
    visible = torch.nonzero((area > 0) & (double_area.abs() > 1e-12)).squeeze(1)
    if visible.numel() == 0:
        return _fragments(triangle, bary, zbuffer, height, width)
    tri_ids, area = tri_ids.index_select(0, visible), area.index_select(0, visible)
    # depth key, affine in screen space, smaller is nearer: -1/w in perspective (exact in
    # float32 whatever the clip planes), NDC z for an orthographic camera (w == 1)
    orthographic = bool((corners[3] == 1.0).all())
    key = corners[2] * inv_w if orthographic else -inv_w
    # what the inside test needs, one row per quantity and a column per triangle
    geometry = torch.cat(
        [sx, sy, torch.stack([col0, row0, box_w, double_area.sign()])], dim=0
    ).index_select(1, visible)
    # and what only the pixels inside need: depth key and 1/w per corner
    depth_terms = torch.cat([key, inv_w], dim=0).index_select(1, visible)

    # batches of whole triangles, each with at most _PAIRS_PER_BATCH candidate pixels
    ends = torch.cumsum(area, 0)
    total = int(ends[-1])
    start = 0
    while start < visible.numel():
        base = int(ends[start - 1]) if start > 0 else 0
        if total - base <= _PAIRS_PER_BATCH:
            stop = visible.numel()
        else:
            stop = int(torch.searchsorted(ends, base + _PAIRS_PER_BATCH, right=True))
            stop = max(stop, start + 1)
        _draw_batch(start, stop, area, ends, base, geometry, depth_terms, tri_ids,
                    width, zbuffer, triangle, bary)  # fmt: skip
        start = stop
    return _fragments(triangle, bary, zbuffer, height, width)


def _draw_batch(start, stop, area, ends, base, geometry, depth_terms, tri_ids, width,
                zbuffer, triangle, bary):  # fmt: skip
    """Triangles ``start:stop`` (columns of ``geometry``) against every pixel centre of
    their boxes: one (triangle, pixel) pair per element, each quantity a contiguous row."""
    device = geometry.device
    counts = area[start:stop]
    pairs = int(ends[stop - 1]) - base
    t = torch.repeat_interleave(
        torch.arange(start, stop, device=device), counts, output_size=pairs
    )  # which triangle, per pair
    first = torch.repeat_interleave(ends[start:stop] - counts, counts, output_size=pairs)
    local = (torch.arange(base, base + pairs, device=device) - first).to(torch.float32)
    g = geometry.index_select(1, t)
    # pixel within the box, in float32 (exact for these small integers, and vectorised
    # where integer division is not)
    box_w = g[8]
    down = torch.floor((local + 0.5) / box_w)
    col = g[6] + (local - down * box_w)
    row = g[7] + down
    # edge functions, each from the pixel centre to the two corners of one edge: a shared
    # edge gives exactly opposite values in its two triangles, so no centre falls through
    cx, cy = col + 0.5, row + 0.5
    dx0, dx1, dx2 = g[0] - cx, g[1] - cx, g[2] - cx
    dy0, dy1, dy2 = g[3] - cy, g[4] - cy, g[5] - cy
    sign = g[9]  # oriented so that inside is >= 0 for either winding
    e0 = (dx1 * dy2 - dx2 * dy1) * sign
    e1 = (dx2 * dy0 - dx0 * dy2) * sign
    e2 = (dx0 * dy1 - dx1 * dy0) * sign
    inside = torch.nonzero((e0 >= 0) & (e1 >= 0) & (e2 >= 0)).squeeze(1)
    if inside.numel() == 0:
        return
    t = t.index_select(0, inside)
    e0, e1, e2 = e0.index_select(0, inside), e1.index_select(0, inside), e2.index_select(0, inside)
    pixel = (row.index_select(0, inside).to(torch.int64) * width
             + col.index_select(0, inside).to(torch.int64))  # fmt: skip
    terms = depth_terms.index_select(1, t)
    total = e0 + e1 + e2
    s0, s1, s2 = e0 / total, e1 / total, e2 / total
    depth = s0 * terms[0] + s1 * terms[1] + s2 * terms[2]
    persp = torch.stack([s0 * terms[3], s1 * terms[4], s2 * terms[5]], dim=1)
    persp = persp / (persp[:, 0] + persp[:, 1] + persp[:, 2])[:, None]

    before = zbuffer.index_select(0, pixel)
    zbuffer.scatter_reduce_(0, pixel, depth, reduce="amin", include_self=True)
    win = torch.nonzero((depth == zbuffer.index_select(0, pixel)) & (depth < before))
    win = win.squeeze(1)
    pixel = pixel.index_select(0, win)
    ids = tri_ids.index_select(0, t.index_select(0, win))
    persp = persp.index_select(0, win)
    # equal depths on one pixel: the higher triangle index wins, deterministically
    triangle.index_fill_(0, pixel, -1)
    triangle.scatter_reduce_(0, pixel, ids, reduce="amax", include_self=True)
    final = torch.nonzero(triangle.index_select(0, pixel) == ids).squeeze(1)
    bary.index_copy_(0, pixel.index_select(0, final), persp.index_select(0, final))


def _fragments(triangle, bary, zbuffer, height, width) -> Fragments:
    return Fragments(
        triangle=triangle.view(height, width),
        barycentric=bary.view(height, width, 3),
        depth=zbuffer.view(height, width),
    )
