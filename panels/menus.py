"""Menu entries: (menu type name, draw function) pairs appended on register."""

import bpy

from ..ops import celeb_dataset, conr_dataset, import_portrait
from . import character_sheet
from .passes import draw_render_menu

# (menu type name, draw function), appended in this order
_ENTRIES = (
    ("TOPBAR_MT_render", draw_render_menu),
    ("TOPBAR_MT_render", celeb_dataset.draw_render_menu),
    ("TOPBAR_MT_render", conr_dataset.draw_render_menu),
    ("TOPBAR_MT_render", character_sheet.draw_render_menu),
    ("TOPBAR_MT_file_import", import_portrait.draw_import_menu),
)


def add():
    for menu_name, draw in _ENTRIES:
        getattr(bpy.types, menu_name).append(draw)


def remove():
    for menu_name, draw in reversed(_ENTRIES):
        getattr(bpy.types, menu_name).remove(draw)
