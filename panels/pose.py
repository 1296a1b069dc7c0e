"""The Pose sub-panel: 20 sliders, their bindings to shape keys, and the reenactment preview."""

import bpy

from ..addon.characters.finding import character_from_context
from ..addon.core.settings import morph_settings
from ..addon.pose import sliders as morphs
from ..errors import AniRenderError
from ..models import pose_vector
from .sidebar import SidebarPanel, SidebarSubPanel


def _character(context):
    try:
        return character_from_context(context)
    except AniRenderError:
        return None


class ANIRENDER_UL_morph_bindings(bpy.types.UIList):
    """target -> mesh / shape key, with weight"""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname):
        row = layout.row(align=True)
        row.prop(item, "target", text="")
        row.prop(item, "object", text="", icon="MESH_DATA")
        keys = item.object.data.shape_keys if item.object and item.object.type == "MESH" else None
        if keys is not None:
            row.prop_search(item, "shape_key", keys, "key_blocks", text="")
        else:
            row.prop(item, "shape_key", text="")
        row.prop(item, "weight", text="")


class ANIRENDER_PT_pose(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Pose"
    bl_idname = "ANIRENDER_PT_pose"

    @classmethod
    def poll(cls, context):
        return _character(context) is not None

    def draw(self, context):
        layout = self.layout
        character = _character(context)
        owner = character.owner
        if not morphs.is_rigged(owner):
            layout.label(text="No pose sliders on this character yet", icon="INFO")
            layout.operator("anirender.pose_setup", icon="SHAPEKEY_DATA")
            return
        for label, icon, names in morphs.POSE_GROUPS:
            box = layout.box()
            box.label(text=label, icon=icon)
            col = box.column(align=True)
            for name in names:
                text = name.replace("head_", "").replace("_", " ").title()
                col.prop(
                    owner,
                    morphs.prop_path(name),
                    text=text,
                    slider=name not in pose_vector.ANGLE_NAMES,
                )
        row = layout.row(align=True)
        row.operator("anirender.pose_keyframe", icon="KEY_HLT", text="Keyframe")
        row.operator("anirender.pose_reset", icon="LOOP_BACK", text="Reset")
        row = layout.row(align=True)
        row.operator("anirender.pose_random", icon="MOD_NOISE", text="Random")
        row.prop(morph_settings(owner), "seed", text="Seed")
        row = layout.row(align=True)
        row.operator("anirender.pose_copy", icon="COPYDOWN", text="Copy")
        row.operator("anirender.pose_paste", icon="PASTEDOWN", text="Paste")
        layout.operator("anirender.render_pose_animation", icon="RENDER_ANIMATION")


class ANIRENDER_PT_pose_bindings(SidebarPanel, bpy.types.Panel):
    bl_label = "Shape Key Bindings"
    bl_idname = "ANIRENDER_PT_pose_bindings"
    bl_parent_id = "ANIRENDER_PT_pose"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        character = _character(context)
        if character is None:
            return
        owner = character.owner
        settings = morph_settings(owner)
        row = layout.row()
        row.template_list(
            "ANIRENDER_UL_morph_bindings", "", settings, "bindings", settings, "binding_index",
            rows=6,
        )  # fmt: skip
        col = row.column(align=True)
        col.operator("anirender.morph_binding_add", icon="ADD", text="")
        col.operator("anirender.morph_binding_remove", icon="REMOVE", text="")
        bound = {b.target for b in settings.bindings if b.object is not None and b.shape_key}
        missing = [t for t in pose_vector.EXPRESSION_NAMES if t not in bound]
        if missing:
            box = layout.box()
            box.label(text=f"Not found ({len(missing)}):", icon="ERROR")
            flow = box.column_flow(columns=2)
            for name in missing:
                flow.label(text=name)
        if character.armature is not None:
            layout.prop_search(settings, "head_bone", character.armature.data, "bones")
        row = layout.row(align=True)
        op = row.operator("anirender.pose_setup", text="Detect Again", icon="VIEWZOOM")
        op.detect = True
        op = row.operator("anirender.pose_setup", text="Apply Bindings", icon="DRIVER")
        op.detect = False


class ANIRENDER_PT_pose_preview(SidebarPanel, bpy.types.Panel):
    bl_label = "Reenactment Preview"
    bl_idname = "ANIRENDER_PT_pose_preview"
    bl_parent_id = "ANIRENDER_PT_pose"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        character = _character(context)
        if character is None:
            return
        settings = morph_settings(character.owner)
        layout.template_ID(settings, "portrait", open="image.open")
        row = layout.row(align=True)
        row.prop(settings, "live_preview", toggle=True, icon="PLAY")
        row.operator("anirender.reenact_preview", text="Reenact Now", icon="RENDER_STILL")
        row = layout.row(align=True)
        row.operator("anirender.reenact_tune", text="Tune to Portrait", icon="MODIFIER")
        row.prop(settings, "mirror_average", toggle=True, icon="MOD_MIRROR")
        if settings.tuned_weights:
            layout.prop(settings, "tuned_weights", text="Tuned")
