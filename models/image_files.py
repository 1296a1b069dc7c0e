"""Sheet images and UDP frames read from disk, checked, for the CLI and the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AniRenderError
from .exr import read_exr
from .udp import check_udp

SHEET_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


UDP_SUFFIXES = (".npz", ".exr")


def read_sheet_image(path: Path) -> np.ndarray:
    """A sheet image as uint8 straight RGBA; refuses images without transparency."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if not has_alpha:
                raise AniRenderError(
                    f"Sheet image {path.name} has no transparency (mode {im.mode}); CoNR needs "
                    "the character cut out on a transparent background."
                )
            image = np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError) as exc:
        raise AniRenderError(f"Cannot read sheet image {path}: {exc}") from exc
    return image


def read_udp(path: Path) -> np.ndarray:
    """A UDP frame as float32 (H, W, 4), checked: .npz (key 'i') or float EXR (RGBA)."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "i" not in data:
                    raise AniRenderError(f"{path.name} has no array 'i' (keys: {list(data)}).")
                udp = data["i"]
        except (OSError, ValueError) as exc:
            raise AniRenderError(f"Cannot read UDP {path}: {exc}") from exc
    else:
        udp = read_exr(path)
    if udp.ndim != 3 or udp.shape[2] != 4:
        raise AniRenderError(f"UDP {path.name} must be H x W x 4 (XYZV); got {udp.shape}.")
    return check_udp(udp, name=f"UDP {path.name}")[0]
