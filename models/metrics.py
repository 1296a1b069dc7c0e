"""Image metrics the shaders are judged by (numpy and scikit-image; no torch).

Frames are premultiplied float RGBA in [0, 1]; they are compared composited on white, so
the background counts as an artist sees it and a missing character costs what it shows.
"""

from __future__ import annotations

import numpy as np

from .alpha import over_white


def image_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """L1, PSNR (dB) and SSIM of premultiplied RGBA frames, compared on white."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = over_white(predicted), over_white(truth)
    l1 = float(np.abs(a - b).mean())
    psnr = float(np.mean([peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(a, b)]))
    ssim = float(
        np.mean(
            [structural_similarity(t, p, data_range=1.0, channel_axis=-1) for p, t in zip(a, b)]
        )
    )
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def flicker(shaded: np.ndarray, truth: np.ndarray) -> float:
    """Temporal error: mean |(N_t - N_t-1) - (T_t - T_t-1)| over consecutive frames.

    ``shaded`` (N) and ``truth`` (T) are premultiplied RGBA sequences (frames, H, W, 4) in
    [0, 1], compared on white. A shader that changes between frames only as the truth
    does scores 0; one that shimmers where the truth is still scores what it adds.
    """
    if len(shaded) != len(truth) or len(shaded) < 2:
        raise ValueError("flicker needs two sequences of the same length, at least 2 frames")
    a, b = over_white(shaded), over_white(truth)
    return float(np.abs(np.diff(a, axis=0) - np.diff(b, axis=0)).mean())


# ------------------------------------------- inside the character (what the eye judges)


def silhouette_union(predicted: np.ndarray, truth: np.ndarray, threshold: float = 0.5):
    """(frames, H, W) bool: pixels where either frame shows the character (alpha over
    ``threshold``). A shader is judged there, not over the empty background around it."""
    return (predicted[..., 3] > threshold) | (truth[..., 3] > threshold)


def silhouette_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """L1 and PSNR (dB) inside the union of the two silhouettes, composited on white.

    Premultiplied RGBA sequences (frames, H, W, 4); all frames' union pixels pooled. A
    missing limb (white where the truth has colour) and a wrong shirt colour both count
    at full weight, which a whole-frame score over a mostly empty background hides.
    """
    inside = silhouette_union(predicted, truth)
    if not inside.any():
        raise ValueError("neither sequence shows a character: no silhouette to compare")
    a, b = over_white(predicted)[inside], over_white(truth)[inside]
    mse = max(float(((a - b) ** 2).mean()), 1e-12)
    return {
        "l1": float(np.abs(a - b).mean()),
        "psnr": float(10 * np.log10(1.0 / mse)),
        "pixels": int(inside.sum()),
    }


def region_colours(images: np.ndarray, labels: np.ndarray, names) -> dict:
    """Mean colour (RGB on white) of each labelled region: ``labels`` (frames, H, W)
    holds an index into ``names`` per pixel, -1 for none. Regions with no pixel are left
    out."""
    rgb = over_white(images)
    out = {}
    for index, name in enumerate(names):
        where = labels == index
        if where.any():
            out[name] = rgb[where].mean(axis=0)
    return out


def region_colour_errors(predicted: np.ndarray, truth: np.ndarray, labels, names) -> dict:
    """Per region (shirt, skirt, skin, hair ...): |mean colour of the prediction - mean
    colour of the truth| over the region's pixels, averaged over RGB. What an artist
    notices first: a shirt of the wrong colour scores high however sharp it is."""
    want = region_colours(truth, labels, names)
    got = region_colours(predicted, labels, names)
    return {name: float(np.abs(got[name] - want[name]).mean()) for name in want}


def uv_label_map(uv: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """A UV-space label image (size, size), row 0 at V = 1: each texel takes the label of
    the nearest of the mesh's UV corners ``uv`` (N, 2), labelled ``labels`` (N,)."""
    from scipy.spatial import cKDTree

    centres = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(centres, 1 - centres)
    _, nearest = cKDTree(np.asarray(uv, np.float64)).query(np.stack([u, v], -1).reshape(-1, 2))
    return np.asarray(labels)[nearest].reshape(size, size)


def pixel_labels(uv: np.ndarray, alpha: np.ndarray, label_map: np.ndarray, above: int, below: int):
    """Per-pixel region labels (frames, H, W) of frames shown by ``alpha`` (frames, H, W):
    where the coarse mesh is seen (``uv`` passes (frames, H, W, 4), occupancy in channel
    3) the label its UV reads in ``label_map``; where only the look is (hair, a skirt:
    no coarse mesh) ``above`` or ``below`` the middle row of the coarse mesh; -1 outside."""
    size = label_map.shape[0]
    seen = uv[..., 3] > 0.5
    rows = np.clip(((1 - uv[..., 1]) * size).astype(int), 0, size - 1)
    cols = np.clip((uv[..., 0] * size).astype(int), 0, size - 1)
    out = np.where(seen, label_map[rows, cols], -1)
    shown = alpha > 0.5
    for frame in range(len(uv)):
        body_rows = np.nonzero(seen[frame].any(axis=1))[0]
        middle = (body_rows[0] + body_rows[-1]) / 2 if len(body_rows) else alpha.shape[1] / 2
        loose = shown[frame] & ~seen[frame]
        upper = np.arange(alpha.shape[1])[:, None] < middle
        out[frame][loose & upper] = above
        out[frame][loose & ~upper] = below
    out[~shown] = -1
    return out
