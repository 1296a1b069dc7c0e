"""Sheet file paths that follow the .blend, the way Blender's own image paths do.

A sheet entry stores an image file path and the path of its UDP file; a character
stores the folder its sheet was last exported to for paint-over. ``//`` at the start of
a path means "relative to the folder of the .blend". Blender remaps its own datablock
paths when File > Save As moves the file (the Remap Relative option, on by default) but
knows nothing of an add-on's strings, so the add-on does the same for these: before a
save into another folder each relative path is rewritten relative to the new folder;
after a *copy* save (the open file stays where it was) they are put back. A path that cannot be made relative
(another drive) is stored absolute.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from ...errors import AniRenderError
from ..core.settings import character_settings

#: the relative paths rewritten by the last save_pre: (object name, index, attribute, before)
_REMAPPED: list = []


def resolve_sheet_path(
    filepath: str, blend_path: str | None = None, what: str = "Sheet image"
) -> Path:
    """The absolute file a sheet entry names, or an error saying relative to what."""
    blend_path = bpy.data.filepath if blend_path is None else blend_path
    if not filepath.startswith("//"):
        return Path(filepath)
    if not blend_path:
        raise AniRenderError(
            f'{what} "{filepath}" is relative to the .blend file ("//" is its folder), '
            "but this file has not been saved, so it has no folder. Save the .blend next "
            "to the sheet's folder, or set the entry to an absolute path in the Character "
            "Sheet panel."
        )
    return Path(bpy.path.abspath(filepath, start=str(Path(blend_path).parent)))


def describe_missing(filepath: str, what: str = "Sheet image") -> str:
    """Why a sheet file is not there, naming what a relative path was resolved against."""
    path = resolve_sheet_path(filepath, what=what)
    if filepath.startswith("//"):
        folder = Path(bpy.data.filepath).parent
        return (
            f'{what} "{filepath}" does not exist: it is relative to the folder of this '
            f".blend ({folder}), which gives {path}. If the .blend was moved without File > "
            "Save As, or the character was appended from another file, point the entry at "
            "the image again in the Character Sheet panel."
        )
    return f"{what} file {path} does not exist. Fix the path in the Character Sheet panel."


def relative_to(path: Path, blend_path: str) -> str:
    """``//``-relative form of ``path`` for a .blend at ``blend_path`` (absolute if none)."""
    try:
        rel = os.path.relpath(path, Path(blend_path).parent)
    except ValueError:  # another drive on Windows: no relative form exists
        return str(path)
    return "//" + rel.replace(os.sep, "/")


def _relative_paths():
    """(object name, index, attribute, holder) of every ``//`` path the add-on stores on a
    local character: each sheet entry's image file and UDP file, and the paint-over
    folder (index -1: on the character's settings)."""
    for obj in bpy.data.objects:
        if obj.library is not None:
            continue
        settings = character_settings(obj)
        if settings is None:
            continue
        for index, entry in enumerate(settings.sheet):
            if entry.image is None and entry.filepath.startswith("//"):
                yield obj.name, index, "filepath", entry
            if entry.udp_filepath.startswith("//"):
                yield obj.name, index, "udp_filepath", entry
        if settings.paint_over_dir.startswith("//"):
            yield obj.name, -1, "paint_over_dir", settings


@persistent
def remap_before_save(new_path, *_args) -> None:
    """Rewrite relative sheet paths for the folder the .blend is being saved into."""
    _REMAPPED.clear()
    old_path = bpy.data.filepath
    if not old_path or not new_path:
        return
    if Path(old_path).parent.resolve() == Path(new_path).parent.resolve():
        return
    for name, index, attribute, holder in list(_relative_paths()):
        before = getattr(holder, attribute)
        setattr(holder, attribute, relative_to(resolve_sheet_path(before, old_path), new_path))
        _REMAPPED.append((name, index, attribute, before))


@persistent
def restore_after_copy(saved_path, *_args) -> None:
    """A copy save leaves the open file where it was: its paths go back as they were."""
    remapped = list(_REMAPPED)
    _REMAPPED.clear()
    if not remapped or not saved_path:
        return
    if bpy.data.filepath and Path(bpy.data.filepath).resolve() == Path(saved_path).resolve():
        return
    for name, index, attribute, before in remapped:
        obj = bpy.data.objects.get(name)
        settings = character_settings(obj) if obj is not None else None
        if settings is None:
            continue
        if index < 0:
            setattr(settings, attribute, before)
        elif index < len(settings.sheet):
            setattr(settings.sheet[index], attribute, before)


def add_handlers() -> None:
    if remap_before_save not in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.append(remap_before_save)
    if restore_after_copy not in bpy.app.handlers.save_post:
        bpy.app.handlers.save_post.append(restore_after_copy)


def remove_handlers() -> None:
    for handlers, fn in (
        (bpy.app.handlers.save_pre, remap_before_save),
        (bpy.app.handlers.save_post, restore_after_copy),
    ):
        while fn in handlers:
            handlers.remove(fn)
