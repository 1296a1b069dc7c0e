"""Menu entries: (menu type name, draw function) pairs appended on register."""

import bpy

# Feature modules add their entries here: ("TOPBAR_MT_file_import", draw_fn), ...
_ENTRIES: list[tuple[str, object]] = []


def add():
    for menu_name, draw in _ENTRIES:
        getattr(bpy.types, menu_name).append(draw)


def remove():
    for menu_name, draw in reversed(_ENTRIES):
        getattr(bpy.types, menu_name).remove(draw)
