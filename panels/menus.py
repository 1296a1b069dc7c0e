"""Menu entries AniRender adds to Blender's own menus, appended on register."""

import bpy


def draw_render_menu(self, context):
    """Render menu: passes, neural render, dataset exports."""
    layout = self.layout
    layout.separator()
    layout.operator("anirender.render_udp_passes", icon="RENDER_ANIMATION")
    layout.operator("anirender.export_celeb_dataset", icon="RENDER_RESULT")
    layout.operator("anirender.render_conr_dataset", icon="RENDER_RESULT")
    layout.separator()
    layout.operator("anirender.neural_render_frame", icon="RENDER_STILL")
    layout.operator("anirender.neural_render_animation", icon="RENDER_ANIMATION")


def draw_import_menu(self, context):
    """File > Import entry."""
    self.layout.operator("anirender.import_portrait", text="Portrait Reconstruction")


# (menu type name, draw function), appended in this order
_ENTRIES = (
    ("TOPBAR_MT_render", draw_render_menu),
    ("TOPBAR_MT_file_import", draw_import_menu),
)


def add():
    for menu_name, draw in _ENTRIES:
        getattr(bpy.types, menu_name).append(draw)


def remove():
    for menu_name, draw in reversed(_ENTRIES):
        getattr(bpy.types, menu_name).remove(draw)
