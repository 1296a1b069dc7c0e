"""Non-neural shading baselines: what a neural shader has to beat (numpy and scipy).

Each paints a target UDP frame from a character sheet whose views carry their own UDPs
(uint8 straight RGBA images, float32 (V, H, W, 4) UDPs) by looking up sheet pixels of
nearby canonical positions. They answer premultiplied float RGBA; empty target pixels
stay transparent.
"""

from __future__ import annotations

import numpy as np

from .alpha import premultiplied


def nearest_udp_baseline(
    sheet_images: np.ndarray, sheet_udps: np.ndarray, target_udp: np.ndarray
) -> np.ndarray:
    """The non-neural baseline: each target pixel copies the sheet pixel of nearest UDP.

    ``sheet_images`` uint8 (V, H, W, 4) straight, ``sheet_udps`` (V, H, W, 4) the sheet's
    true UDPs, ``target_udp`` (H, W, 4). Returns premultiplied float RGBA (H, W, 4); the
    target's empty pixels stay transparent.
    """
    from scipy.spatial import cKDTree

    covered = sheet_udps[..., 3] > 0.5
    out = np.zeros(target_udp.shape[:2] + (4,), np.float32)
    wanted = target_udp[..., 3] > 0.5
    if not covered.any() or not wanted.any():
        return out
    tree = cKDTree(sheet_udps[covered][:, :3])
    _, nearest = tree.query(target_udp[wanted][:, :3], k=1)
    colours = premultiplied(sheet_images[covered])[nearest]
    out[wanted] = colours
    return out


def median_udp_baseline(
    sheet_images: np.ndarray, sheet_udps: np.ndarray, target_udp: np.ndarray, k: int = 8
) -> np.ndarray:
    """The blend by hand: each target pixel takes the per-channel median of the ``k`` sheet
    pixels (over all views) of nearest UDP, no learning at all.

    Arguments and answer as ``nearest_udp_baseline`` (premultiplied float RGBA (H, W, 4)).
    """
    from scipy.spatial import cKDTree

    covered = sheet_udps[..., 3] > 0.5
    out = np.zeros(target_udp.shape[:2] + (4,), np.float32)
    wanted = target_udp[..., 3] > 0.5
    if not covered.any() or not wanted.any():
        return out
    k = min(k, int(covered.sum()))
    tree = cKDTree(sheet_udps[covered][:, :3])
    _, nearest = tree.query(target_udp[wanted][:, :3], k=k)
    colours = premultiplied(sheet_images[covered])[nearest.reshape(len(nearest), k)]
    out[wanted] = np.median(colours, axis=1)
    return out
