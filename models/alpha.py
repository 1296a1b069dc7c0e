"""Straight and premultiplied alpha: the conversions every part of the suite shares.

Conventions: uint8 images are straight RGBA (what PNG files and Blender images hold);
the shaders answer premultiplied float RGBA in [0, 1]. numpy only.
"""

from __future__ import annotations

import numpy as np


def premultiply_official(images: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA -> uint8 RGBA with RGB premultiplied the CoNR reference way:
    ``uint8(clip(rgb * (a / 255.0)))``, a float64 product truncated, not rounded."""
    out = np.array(images, dtype=np.uint8, copy=True)
    out[..., :3] = (images[..., :3] * (images[..., 3:4] / 255.0)).clip(0, 255).astype(np.uint8)
    return out


def premultiplied(images: np.ndarray) -> np.ndarray:
    """Straight RGBA (uint8, or float in [0, 1]) -> premultiplied float32 RGBA in [0, 1]."""
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    return np.concatenate([x[..., :3] * x[..., 3:4], x[..., 3:4]], axis=-1)


def to_straight_uint8(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied float RGBA in [0,1] -> straight-alpha uint8 RGBA."""
    a = np.clip(rgba[..., 3:4], 0.0, 1.0)
    rgb = np.where(a > 0, rgba[..., :3] / np.maximum(a, 1e-8), 0.0)
    out = np.concatenate([np.clip(rgb, 0.0, 1.0), a], axis=-1)
    return np.rint(out * 255.0).astype(np.uint8)


def to_premultiplied_uint8(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied float RGBA in [0,1] -> premultiplied uint8 RGBA."""
    return np.rint(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def over_white(rgba_premultiplied: np.ndarray) -> np.ndarray:
    """Premultiplied float RGBA (..., 4) composited on white -> RGB in [0, 1]."""
    rgba = np.clip(rgba_premultiplied, 0.0, 1.0)
    return rgba[..., :3] + (1.0 - rgba[..., 3:4])
