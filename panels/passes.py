"""The Passes panel (AniRender sidebar tab) and the Render menu entry."""

import bpy

from ..addon.core.settings import pass_defaults
from ..addon.passes.canonical import MODES, RECIPE
from .sidebar import SidebarSubPanel


class ANIRENDER_PT_passes(SidebarSubPanel, bpy.types.Panel):
    bl_label = "UDP Passes"
    bl_idname = "ANIRENDER_PT_passes"

    def draw(self, context):
        layout = self.layout
        settings = pass_defaults(context.scene)
        layout.prop(settings, "output_dir")
        layout.prop(settings, "passes")
        layout.prop(settings, "formats")
        row = layout.row(align=True)
        row.prop(settings, "use_scene_range")
        if not settings.use_scene_range:
            row = layout.row(align=True)
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        layout.prop(settings, "use_size")
        if settings.use_size:
            row = layout.row(align=True)
            row.prop(settings, "width")
            row.prop(settings, "height")
        row = layout.row()
        row.prop(settings, "use_fast")
        row.prop(settings, "overwrite")
        active = context.active_object
        armature = active if active is not None and active.type == "ARMATURE" else None
        if armature is not None:
            recipe = armature.get(RECIPE)
            labels = {ident: label for ident, label, _ in MODES}
            mode = labels.get(recipe["mode"], recipe["mode"]) if recipe else None
            text = f"Canonical: {mode}" if mode else "Canonical: not set yet"
            layout.label(text=text, icon="OUTLINER_OB_ARMATURE")
        layout.operator_menu_enum("anirender.set_canonical_pose", "mode")
        layout.operator("anirender.render_udp_passes", icon="RENDER_ANIMATION")
