"""A 2D paint-over of a sheet view: flat cel colours and ink outlines (numpy/scipy only).

Stands in for an artist repainting a rendered sheet: the colours are flattened to a few
cels (k-means over the character's pixels, seeded), and dark ink lines are drawn on the
silhouette and wherever two cels meet. The alpha (the cut-out) is kept, so the view's
UDP still fits it pixel for pixel. Input and output: uint8 straight RGBA (H, W, 4).
"""

from __future__ import annotations

import numpy as np

INK = (28, 24, 36)


def paint_over(rgba: np.ndarray, cels: int = 6, line: int = 1, seed: int = 0) -> np.ndarray:
    from scipy import ndimage

    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError("paint_over takes uint8 straight RGBA (H, W, 4)")
    inside = rgba[..., 3] > 127
    out = rgba.copy()
    if not inside.any():
        return out
    colours = rgba[..., :3][inside].astype(np.float32)
    centres = _kmeans(colours, min(cels, len(colours)), seed)
    labels = np.full(inside.shape, -1, np.int32)
    labels[inside] = np.argmin(((colours[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    labels = ndimage.median_filter(labels, size=3)  # no speckle cels
    labels[~inside] = -1
    flat = np.where(labels[..., None] >= 0, centres[np.maximum(labels, 0)], 0)
    out[..., :3] = np.where(inside[..., None], np.rint(flat), rgba[..., :3]).astype(np.uint8)
    # ink: where a pixel's cel differs from a neighbour's (the silhouette included)
    edge = np.zeros_like(inside)
    for axis in (0, 1):
        change = np.diff(labels, axis=axis) != 0
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, 1)
        edge |= np.pad(change, pad)
        pad[axis] = (1, 0)
        edge |= np.pad(change, pad)
    if line > 1:
        edge = ndimage.binary_dilation(edge, iterations=line - 1)
    edge &= inside
    out[edge, :3] = INK
    return out


def _kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sample = points[rng.choice(len(points), size=min(len(points), 4000), replace=False)]
    centres = sample[rng.choice(len(sample), size=k, replace=False)].copy()
    for _ in range(iterations):
        nearest = np.argmin(((sample[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            members = sample[nearest == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres
