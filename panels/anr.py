"""The ANR panel: capture training frames, pick a trained model, render with it, swap
texture regions between identities."""

import bpy

from ..addon.core.settings import anr_defaults
from .sidebar import SidebarSubPanel


class ANIRENDER_PT_anr(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Neural Render (ANR)"
    bl_idname = "ANIRENDER_PT_anr"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = anr_defaults(context.scene)
        box = layout.box()
        box.label(text="Training Frames", icon="IMAGE_DATA")
        box.prop(settings, "coarse")
        box.prop(settings, "data_dir")
        box.operator("anirender.anr_capture", icon="RENDER_STILL")
        box.prop(settings, "images_dir")
        box.operator("anirender.anr_pair_images", icon="SEQUENCE")
        box = layout.box()
        box.label(text="Render", icon="SHADING_TEXTURE")
        box.prop(settings, "weights")
        row = box.row()
        row.prop(settings, "identity")
        row.prop(settings, "size")
        box.operator("anirender.anr_render_frame", icon="RENDER_STILL")
        box.prop(settings, "output_dir")
        box.operator("anirender.anr_render_animation", icon="RENDER_ANIMATION")
        box = layout.box()
        box.label(text="Edit Model", icon="UV")
        box.operator("anirender.anr_swap_texture", icon="UV_SYNC_SELECT")
