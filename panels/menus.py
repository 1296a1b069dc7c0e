"""Menu entries: (menu type name, draw function) pairs appended on register."""

import bpy

from ..ops import celeb_dataset, import_portrait
from . import character_sheet
from .passes import draw_render_menu

# Feature modules add their entries here: ("TOPBAR_MT_file_import", draw_fn), ...
_ENTRIES: list[tuple[str, object]] = []
_ENTRIES.append(("TOPBAR_MT_render", draw_render_menu))
_ENTRIES.append(("TOPBAR_MT_file_import", import_portrait.draw_import_menu))
_ENTRIES.append(("TOPBAR_MT_render", celeb_dataset.draw_render_menu))
_ENTRIES.append(("TOPBAR_MT_render", character_sheet.draw_render_menu))


def add():
    for menu_name, draw in _ENTRIES:
        getattr(bpy.types, menu_name).append(draw)


def remove():
    for menu_name, draw in reversed(_ENTRIES):
        getattr(bpy.types, menu_name).remove(draw)
