"""Render Properties panels of the AniRender render engine (shown only when it is the
scene's engine: ``COMPAT_ENGINES``), and Blender's own panels the engine uses."""

from __future__ import annotations

import bpy

from ..addon.core.prefs import preferences
from ..addon.core.settings import anr_defaults, character_settings, neural_defaults
from ..addon.shading.engine import ENGINE_ID

#: Blender's Render Properties panels that apply to this engine as they are
BLENDER_PANELS = (
    "RENDER_PT_color_management",
    "RENDER_PT_color_management_curves",
    "RENDER_PT_color_management_display_settings",
    "RENDER_PT_color_management_white_balance",
)


class EnginePanel:
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    COMPAT_ENGINES = {ENGINE_ID}

    @classmethod
    def poll(cls, context):
        return context.engine in cls.COMPAT_ENGINES


class ANIRENDER_PT_engine_shader(EnginePanel, bpy.types.Panel):
    bl_label = "Shader"
    bl_idname = "ANIRENDER_PT_engine_shader"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        settings = neural_defaults(context.scene)
        layout.prop(settings, "shader")
        if settings.shader == "ANR":
            anr = anr_defaults(context.scene)
            layout.prop(anr, "weights")
            layout.prop(anr, "identity")
            layout.prop(anr, "coarse")
        else:
            layout.prop(settings, "size", text="Working Size")
            layout.prop(settings, "weights")
        layout.prop(settings, "service_mode")
        prefs = preferences(context)
        mode = settings.service_mode
        if mode == "PREFERENCES" and prefs is not None:
            mode = prefs.service_mode
        if mode == "REMOTE" and prefs is not None:
            layout.label(text=f"Service: {prefs.remote_url}", icon="URL")
        if context.scene.view_settings.view_transform != "Standard":
            layout.label(text="View Transform Standard keeps the shader's colours", icon="INFO")


class ANIRENDER_PT_engine_characters(EnginePanel, bpy.types.Panel):
    bl_label = "Characters"
    bl_idname = "ANIRENDER_PT_engine_characters"

    def draw(self, context):
        layout = self.layout
        armatures = [o for o in context.scene.objects if o.type == "ARMATURE"]
        anr = neural_defaults(context.scene).shader == "ANR"
        if not armatures:
            layout.label(text="No character (armature) in this scene", icon="ERROR")
        for armature in armatures:
            settings = character_settings(armature)
            views = len(settings.sheet) if settings is not None else 0
            row = layout.row()
            if anr:
                row.label(text=f"{armature.name}: the scene's ANR model", icon="CHECKMARK")
            else:
                shader = "image-only CoNR" if views else "no sheet"
                row.label(
                    text=f"{armature.name}: {views} sheet views, {shader}",
                    icon="CHECKMARK" if views else "ERROR",
                )
            if armature.hide_render:
                row.label(text="(disabled in renders)")


def add_to_blender_panels() -> None:
    for name in BLENDER_PANELS:
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            panel.COMPAT_ENGINES.add(ENGINE_ID)


def remove_from_blender_panels() -> None:
    for name in BLENDER_PANELS:
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            panel.COMPAT_ENGINES.discard(ENGINE_ID)
