"""Pass images on disk: the writers (EXR by ``models.exr``'s numpy + zlib encoder, the
official CoNR ``.npz``, an 8-bit PNG preview), the readers Blender-side code uses, and Blender's own file-format
settings for the Cycles path.

Files are written beside their final name and then renamed, so a frame on disk is always
complete; a cancelled or crashed run never leaves a half-written file that a later run
would skip as done."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from ...models.exr import read_exr, write_exr


def set_file_format(scene, fmt: str) -> None:
    settings = scene.render.image_settings
    if fmt == "exr":
        settings.file_format = "OPEN_EXR"
        settings.color_mode = "RGBA"
        settings.color_depth = "32"
        settings.exr_codec = "ZIP"
    else:
        settings.file_format = "PNG"
        settings.color_mode = "RGB"
        settings.color_depth = "8"
        settings.compression = 15


def preview(name: str, pixels: np.ndarray) -> np.ndarray:
    """An RGBA image in [0, 1] for looking at a pass (background black)."""
    occupancy = pixels[..., 3:4] > 0.5
    rgb = pixels[..., :3].copy()
    if name == "normal":
        rgb = rgb * 0.5 + 0.5
    elif name == "depth":
        depth = pixels[..., 0]
        covered = depth[occupancy[..., 0]]
        if covered.size:
            near, far = float(covered.min()), float(covered.max())
            shade = 1.0 - 0.8 * (depth - near) / max(far - near, 1e-9)
            rgb = np.repeat(shade[..., None], 3, axis=2)
    rgb = np.where(occupancy, np.clip(rgb, 0.0, 1.0), 0.0)
    return np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=2).astype(np.float32)


def read_blender_image(path: Path) -> np.ndarray:
    """Load an image file through Blender as raw float32 (H, W, 4), row 0 at the top."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        image.colorspace_settings.is_data = True
        width, height = image.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1].copy()


def read_pass_image(path: Path) -> np.ndarray:
    """Read a float RGBA EXR: through OpenEXR when present, else through Blender."""
    try:
        import OpenEXR  # noqa: F401

    except ImportError:
        return read_blender_image(path)
    return read_exr(path)


def _write_whole(codec, path: Path, pixels: np.ndarray) -> None:
    """Write beside, then rename: a cancelled or crashed run never leaves a half-written
    file that a later run would skip as done."""
    beside = path.with_name(f".{path.stem}.partial{path.suffix}")
    codec(beside, pixels)
    os.replace(beside, path)


def _npz_writer(path, pixels):
    with open(path, "wb") as handle:
        np.savez_compressed(handle, i=pixels.astype(np.float32))


def _file_codec(fmt: str):
    """A writer ``(path, pixels)``: EXR always (numpy + zlib, no OpenEXR needed), PNG
    through Pillow, or None when Pillow is missing (Blender's own writer then)."""
    if fmt == "exr":
        return write_exr
    try:
        from PIL import Image
    except ImportError:
        return None

    def write_png(path, pixels):
        rgb = (np.clip(pixels[..., :3], 0.0, 1.0) * 255.0).round().astype(np.uint8)
        Image.fromarray(rgb).save(path, format="PNG")

    return write_png
