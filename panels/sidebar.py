"""The AniRender tab in the 3D View sidebar; feature panels nest under it."""

import bpy

from ..addon.characters.finding import character_from_context
from ..addon.checklist import checklist
from ..addon.core.prefs import ADDON_ID
from ..errors import AniRenderError


class SidebarPanel:
    """Where every AniRender sidebar panel lives: 3D View > Sidebar > AniRender."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "AniRender"


class SidebarSubPanel(SidebarPanel):
    """A panel nested under the main AniRender panel."""

    bl_parent_id = "ANIRENDER_PT_main"


class ANIRENDER_PT_main(SidebarPanel, bpy.types.Panel):
    bl_label = "AniRender"
    bl_idname = "ANIRENDER_PT_main"

    def draw(self, context):
        layout = self.layout
        _draw_checklist(layout, context)
        try:
            character = character_from_context(context)
        except AniRenderError:
            layout.label(text="Select a character (armature or meshes)", icon="INFO")
            return
        box = layout.box()
        box.label(text=character.name, icon="ARMATURE_DATA" if character.armature else "MESH_DATA")
        box.label(text=f"{len(character.meshes)} meshes")
        camera = context.scene.camera
        layout.label(
            text=camera.name if camera else "No active camera",
            icon="CAMERA_DATA" if camera else "ERROR",
        )


def _draw_checklist(layout, context) -> None:
    """Getting started: collapsed to one line once everything is ready."""
    items = checklist(context)
    missing = [item for item in items if not item.ready]
    if not missing:
        layout.label(text="Ready to render", icon="CHECKMARK")
        return
    box = layout.box()
    box.label(text="Getting Started", icon="INFO")
    for item in items:
        row = box.row()
        row.label(text=f"{item.name}: {item.detail}", icon="CHECKMARK" if item.ready else "ERROR")
        if not item.ready and item.fix:
            props = row.operator(item.fix, text=item.fix_label)
            if item.fix == "preferences.addon_show":
                props.module = ADDON_ID
