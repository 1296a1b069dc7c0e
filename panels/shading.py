"""Character Sheet and Neural Render panels (AniRender sidebar tab)."""

from __future__ import annotations

import bpy

from ..addon.characters.finding import character_from_context
from ..addon.core.settings import character_settings, neural_defaults, sheet_view_defaults
from ..addon.shading.sheets import entry_label
from ..errors import AniRenderError
from .sidebar import SidebarSubPanel


class ANIRENDER_UL_sheet(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname):
        icon = "IMAGE_DATA" if item.image is not None else "FILE_IMAGE"
        row = layout.row()
        row.label(text=entry_label(item), icon=icon)
        if item.udp_filepath:
            row.label(text="UDP estimated" if item.udp_estimated else "UDP")
        else:
            row.label(text="no UDP")


class ANIRENDER_PT_character_sheet(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Character Sheet"
    bl_idname = "ANIRENDER_PT_character_sheet"

    def draw(self, context):
        layout = self.layout
        try:
            owner = character_from_context(context).owner
        except AniRenderError:
            layout.label(text="Select a character", icon="INFO")
            return
        settings = character_settings(owner)
        row = layout.row()
        row.template_list(
            "ANIRENDER_UL_sheet", "", settings, "sheet", settings, "sheet_index", rows=3
        )
        col = row.column(align=True)
        col.operator("anirender.sheet_add_files", icon="FILEBROWSER", text="")
        col.operator("anirender.sheet_add_image", icon="IMAGE_DATA", text="")
        col.operator("anirender.sheet_remove", icon="REMOVE", text="")
        if 0 <= settings.sheet_index < len(settings.sheet):
            entry = settings.sheet[settings.sheet_index]
            layout.prop(entry, "image")
            if entry.image is None:
                layout.prop(entry, "filepath", text="")
            row = layout.row(align=True)
            row.prop(entry, "udp_filepath", text="UDP")
            row.operator("anirender.sheet_set_udp", icon="FILEBROWSER", text="")
            row.operator("anirender.sheet_clear_udp", icon="X", text="")
            if entry.udp_filepath and entry.udp_estimated:
                layout.label(text="UDP estimated by the CoNR parser", icon="INFO")
        views = sheet_view_defaults(context.scene)
        box = layout.box()
        box.prop(views, "views")
        row = box.row(align=True)
        row.prop(views, "size")
        row.prop(views, "engine", text="")
        row = box.row(align=True)
        row.prop(views, "pose", text="")
        if views.pose == "FRAME":
            row.prop(views, "frame")
        if views.engine == "CYCLES":
            box.prop(views, "samples")
        box.prop(views, "output_dir", text="")
        box.operator("anirender.render_sheet_views", icon="RENDER_STILL")
        col = layout.column(align=True)
        col.operator("anirender.estimate_sheet_udp", icon="ORIENTATION_GIMBAL")
        row = col.row(align=True)
        row.operator("anirender.sheet_export_paint_over", icon="EXPORT")
        row.operator("anirender.sheet_reload_painted", icon="FILE_REFRESH")


class ANIRENDER_PT_neural_render(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Neural Render"
    bl_idname = "ANIRENDER_PT_neural_render"

    def draw(self, context):
        layout = self.layout
        settings = neural_defaults(context.scene)
        layout.prop(settings, "size")
        layout.operator("anirender.neural_render_frame", icon="RENDER_STILL")
        layout.separator()
        layout.prop(settings, "output_dir")
        layout.prop(settings, "use_scene_range")
        if not settings.use_scene_range:
            row = layout.row(align=True)
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        row = layout.row()
        row.prop(settings, "overwrite")
        row.prop(settings, "add_strip")
        layout.operator("anirender.neural_render_animation", icon="RENDER_ANIMATION")
