"""The AniRender tab in the 3D View sidebar; feature panels nest under it."""

import bpy

from ..addon.characters.finding import character_from_context
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
