"""A character's sheet as the shader wants it: uint8 straight RGBA, (views, S, S, 4),
and, where the views have one, their UDPs.

The sheet is stored on the character (``Object.anirender.sheet``): each entry is a
Blender image or an image file, and may name a UDP file (``udp_filepath``: the view's
``<stem>.udp.npz``, float32 (H, W, 4) XYZV, the image's size and framing; see
``models.sheet_udp``). Each view is framed as the official CoNR inference does: the
centred square around its visible pixels (alpha > 0), zero padded, resized to the
working size (Blender's own image scaling, so no torch or PIL is needed here); its UDP
gets the same square, resized nearest.

For the shading road: ``read_sheet(owner, size)`` gives the framed images;
``read_framed_sheet(owner, size)`` gives them with the framed UDPs (None for a view
without one); ``read_sheet_views(owner)`` gives every view at its own size;
``sheet_has_udps(owner)`` says whether every view has a UDP (the guided shader's road).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from ...errors import AniRenderError
from ...models.framing import crop_square, square_crop_around
from ...models.sheet_udp import check_udp_fits, frame_sheet_udp, read_udp_file, udp_path_for
from ..core.settings import character_settings
from .sheet_paths import describe_missing, relative_to, resolve_sheet_path

#: sheets whose mean alpha reaches this have no usable cut-out (as CoNR checks)
OPAQUE_MEAN_ALPHA = 0.95


def sheet_entries(owner) -> list:
    return list(character_settings(owner).sheet)


def entry_label(entry) -> str:
    if entry.image is not None:
        return entry.image.name
    return Path(entry.filepath.removeprefix("//")).name if entry.filepath else "(empty)"


@dataclass
class SheetView:
    """One view of a character sheet at its own size."""

    label: str
    rgba: np.ndarray  # uint8 straight RGBA (H, W, 4), row 0 at the top
    udp: np.ndarray | None  # float32 (H, W, 4) XYZV of the same size, or None
    estimated: bool  # the UDP was guessed by the CoNR parser, not rendered


def used_entries(owner) -> list:
    """The entries that name an image, or an error when there are none."""
    entries = [e for e in sheet_entries(owner) if e.image is not None or e.filepath]
    if not entries:
        raise AniRenderError(
            f'"{owner.name}" has no character sheet. Add its reference drawings (cut out, '
            "transparent background) or Render Sheet Views in the AniRender > Character "
            "Sheet panel."
        )
    return entries


def read_sheet(owner, size: int) -> np.ndarray:
    """All sheet views of the character whose settings live on ``owner``."""
    return np.stack([frame_view(read_entry(e), size, entry_label(e)) for e in used_entries(owner)])


def read_sheet_for_shading(owner, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """What the shading road sends: (framed images, framed UDPs) when every view carries
    its UDP (the guided shader paints), else (framed images, None) (image-only CoNR)."""
    if not sheet_has_udps(owner):
        return read_sheet(owner, size), None
    images, udps = read_framed_sheet(owner, size)
    return images, np.stack(udps).astype(np.float32)


def read_entry_udp(entry, image: np.ndarray | None = None) -> tuple[np.ndarray | None, bool]:
    """(UDP or None, estimated) of one entry; checked against its image when given."""
    if not entry.udp_filepath:
        return None, False
    what = f'UDP of sheet view "{entry_label(entry)}"'
    path = resolve_sheet_path(entry.udp_filepath, what=what)
    if not path.is_file():
        raise AniRenderError(describe_missing(entry.udp_filepath, what=what))
    udp, estimated = read_udp_file(path)
    if image is not None:
        check_udp_fits(udp, image, entry_label(entry))
    return udp, estimated or bool(entry.udp_estimated)


def read_sheet_views(owner) -> list[SheetView]:
    """Every view of the sheet at its own size, with its UDP where it has one."""
    views = []
    for entry in used_entries(owner):
        rgba = read_entry(entry)
        udp, estimated = read_entry_udp(entry, rgba)
        views.append(SheetView(entry_label(entry), rgba, udp, estimated))
    return views


def read_sheet_udps(owner) -> list[np.ndarray | None]:
    """The views' UDPs at their own size, in sheet order (None: a view without one)."""
    return [view.udp for view in read_sheet_views(owner)]


def sheet_has_udps(owner) -> bool:
    """True when every view of the sheet names a UDP file (files are read later)."""
    entries = [e for e in sheet_entries(owner) if e.image is not None or e.filepath]
    return bool(entries) and all(e.udp_filepath for e in entries)


def read_framed_sheet(owner, size: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """(uint8 (V, size, size, 4) straight RGBA as ``read_sheet``, [float32 (size, size, 4)
    UDP or None per view]): each UDP cropped to its image's square, resized nearest."""
    images, udps = [], []
    for view in read_sheet_views(owner):
        images.append(frame_view(view.rgba, size, view.label))
        if view.udp is None:
            udps.append(None)
            continue
        udps.append(frame_sheet_udp(view.rgba, view.udp, size))
    return np.stack(images), udps


def udp_beside(image_path: Path) -> tuple[Path | None, bool, str]:
    """The ``<stem>.udp.npz`` beside an image file, when it fits the image: (path,
    estimated, ""); (None, False, why) when there is one that does not fit; (None,
    False, "") when there is none."""
    path = udp_path_for(image_path)
    if not path.is_file():
        return None, False, ""
    try:
        udp, estimated = read_udp_file(path)
        check_udp_fits(udp, read_image_file(Path(image_path)), Path(image_path).name)
    except AniRenderError as exc:
        return None, False, f"{path.name} was not attached: {exc}"
    return path, estimated, ""


def add_views_to_sheet(owner, pairs, estimated: bool = False) -> list:
    """Put (image file, UDP file) pairs on the sheet: an entry already showing that image
    file takes the UDP, others are added. Paths are stored relative to the .blend when
    it is saved, as Blender stores its own. Returns the entries."""
    settings = character_settings(owner)
    blend = bpy.data.filepath
    entries = []
    for image_path, udp_path in pairs:
        image_path, udp_path = Path(image_path).resolve(), Path(udp_path).resolve()
        entry = None
        for candidate in settings.sheet:
            if candidate.image is None and candidate.filepath:
                try:
                    same = resolve_sheet_path(candidate.filepath).resolve() == image_path
                except AniRenderError:
                    same = False
                if same:
                    entry = candidate
                    break
        if entry is None:
            entry = settings.sheet.add()
            entry.filepath = relative_to(image_path, blend) if blend else str(image_path)
        entry.udp_filepath = relative_to(udp_path, blend) if blend else str(udp_path)
        entry.udp_estimated = estimated
        entries.append(entry)
    settings.sheet_index = len(settings.sheet) - 1
    return entries


def read_entry(entry) -> np.ndarray:
    """One sheet entry as uint8 straight RGBA (H, W, 4), row 0 at the top."""
    if entry.image is not None:
        return image_rgba(entry.image, entry.image.name)
    path = resolve_sheet_path(entry.filepath)
    if not path.is_file():
        raise AniRenderError(describe_missing(entry.filepath))
    return read_image_file(path)


def read_image_file(path: Path) -> np.ndarray:
    """An image file as uint8 straight RGBA (H, W, 4), row 0 at the top."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        return image_rgba(image, path.name)
    finally:
        bpy.data.images.remove(image)


def check_sheet_file(path: Path) -> None:
    """Refuse, when it is added, an image file the shader could not use as a sheet view.

    The same checks as at render time (readable, a cut-out: transparent around the
    character), so the artist hears of an opaque drawing or a JPG at the button that
    added it, not at the first render.
    """
    try:
        rgba = read_image_file(path)
    except RuntimeError as exc:  # Blender cannot decode the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AniRenderError(f'Cannot read "{path.name}" as an image ({first}).') from None
    jpg = path.suffix.lower() in {".jpg", ".jpeg"}
    check_sheet_pixels(rgba, path.name, "JPG files have no transparency" if jpg else None)


def check_sheet_pixels(rgba: np.ndarray, label: str, why_opaque: str | None = None) -> None:
    """The add-time check of one view: some transparency, a visible, cut-out character."""
    if not (rgba[..., 3] < 255).any():
        raise AniRenderError(
            f'"{label}" cannot be a sheet view: {why_opaque or "it has no transparent pixels"}. '
            "The shader needs the character cut out on a transparent background: export it "
            "as a PNG with alpha."
        )
    frame_view(rgba, 8, label)


def image_rgba(image, label: str) -> np.ndarray:
    width, height = image.size
    if width == 0 or height == 0 or not image.has_data and not _load(image):
        raise AniRenderError(
            f'Sheet image "{label}" has no pixels (missing or unreadable file). '
            "Replace it in the Character Sheet panel."
        )
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, image.channels)[::-1]
    if image.channels == 3:
        pixels = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=2)
    elif image.channels != 4:
        raise AniRenderError(f'Sheet image "{label}" has {image.channels} channels; use RGBA.')
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def _load(image) -> bool:
    try:
        image.reload()
        return image.has_data
    except RuntimeError:
        return False


def frame_view(rgba: np.ndarray, size: int, label: str) -> np.ndarray:
    """Centred square around the visible pixels, resized to ``size`` (uint8 RGBA)."""
    crop = square_crop_around(rgba[..., 3] > 0)
    if crop is None:
        raise AniRenderError(f'Sheet image "{label}" is fully transparent; nothing to read.')
    square = crop_square(rgba, crop)
    if square[..., 3].mean() / 255.0 >= OPAQUE_MEAN_ALPHA:
        raise AniRenderError(
            f'Sheet image "{label}" has no transparent background. The shader needs the '
            "character cut out (alpha 0 around it)."
        )
    return resize_rgba(square, size)


def resize_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """uint8 straight RGBA (n, n, 4) -> (size, size, 4) through a temporary Blender image.

    Scaled premultiplied, so the colour hidden under transparent pixels cannot bleed
    into the character's outline.
    """
    side = rgba.shape[0]
    if side == size:
        return np.ascontiguousarray(rgba)
    pixels = rgba[::-1].astype(np.float32) / 255.0
    pixels[..., :3] *= pixels[..., 3:4]
    image = bpy.data.images.new(
        "AniRender sheet (temporary)", side, side, alpha=True, float_buffer=True
    )
    try:
        image.colorspace_settings.is_data = True
        image.pixels.foreach_set(pixels.ravel())
        image.scale(size, size)
        out = np.empty(size * size * 4, dtype=np.float32)
        image.pixels.foreach_get(out)
    finally:
        bpy.data.images.remove(image)
    out = out.reshape(size, size, 4)[::-1]
    alpha = np.clip(out[..., 3:4], 0.0, 1.0)
    rgb = np.where(alpha > 0, out[..., :3] / np.maximum(alpha, 1e-8), 0.0)
    return np.rint(np.clip(np.concatenate([rgb, alpha], axis=2), 0, 1) * 255.0).astype(np.uint8)
