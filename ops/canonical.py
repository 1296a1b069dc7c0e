"""Set Canonical Pose: (re)compute the frame that fixes the character's UDP colours."""

import bpy
from bpy.props import EnumProperty

from ..addon.canonical import MODES, set_canonical_pose
from ..addon.passes import scene_character
from ..addon.scene import character_from_context
from ..errors import AniRenderError


class ANIRENDER_OT_set_canonical_pose(bpy.types.Operator):
    """Recompute the canonical pose whose positions colour the UDP pass"""

    bl_idname = "anirender.set_canonical_pose"
    bl_label = "Set Canonical Pose"
    bl_options = {"REGISTER", "UNDO"}

    mode: EnumProperty(name="Pose", items=MODES, default="A_POSE")

    def execute(self, context):
        try:
            if context.active_object is None and not context.selected_objects:
                character = scene_character(context.scene)
            else:
                character = character_from_context(context)
            if character.armature is None:
                raise AniRenderError(
                    f'"{character.name}" has no armature; the canonical pose comes from the rig.'
                )
            recipe = set_canonical_pose(character.armature, self.mode, context.scene)
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report(
            {"INFO"},
            f'Canonical {self.mode.replace("_", "-").lower()} of "{character.armature.name}" '
            f"set on {len(recipe['meshes'])} meshes",
        )
        return {"FINISHED"}
