"""Render UDP Passes: the character's UDP/UV/normal/depth/occupancy images, frame by frame."""

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ..addon.characters.finding import character_from_context, scene_character
from ..addon.core.jobs import Job, ModalJobOperator
from ..addon.passes.canonical import MODES, set_canonical_pose
from ..addon.passes.renderer import render_udp_passes
from ..addon.passes.request import PassRequest
from ..errors import AniRenderError

_PASS_ITEMS = (
    ("UDP", "UDP", "Canonical-pose position (XYZ) plus occupancy, for CoNR"),
    ("UV", "UV", "UV coordinates of the active map, unfiltered"),
    ("NORMAL", "Normal", "Camera-space normals"),
    ("DEPTH", "Depth", "Camera-space Z distance"),
    ("OCCUPANCY", "Occupancy", "Where the character covers the frame"),
)
_FORMAT_ITEMS = (
    ("EXR", "EXR", "Float32 OpenEXR, lossless ZIP"),
    ("NPZ", "NPZ", "NumPy archive with key 'i' (the official CoNR layout)"),
    ("PNG", "PNG", "8-bit preview for looking"),
)
# operator property -> scene pass setting used when the caller did not set it
_FROM_SCENE = {
    "passes": "passes",
    "formats": "formats",
    "output_dir": "output_dir",
    "use_fast": "use_fast",
    "overwrite": "overwrite",
    "use_scene_range": "use_scene_range",
    "frame_start": "frame_start",
    "frame_end": "frame_end",
    "use_size": "use_size",
    "width": "width",
    "height": "height",
}


class ANIRENDER_OT_render_udp_passes(ModalJobOperator, bpy.types.Operator):
    """Render the character's UDP and deferred-shading passes to image files"""

    bl_idname = "anirender.render_udp_passes"
    bl_label = "Render UDP Passes"
    bl_options = {"REGISTER"}

    passes: EnumProperty(name="Passes", items=_PASS_ITEMS, options={"ENUM_FLAG"}, default={"UDP"})
    formats: EnumProperty(
        name="Formats", items=_FORMAT_ITEMS, options={"ENUM_FLAG"}, default={"EXR", "NPZ", "PNG"}
    )
    output_dir: StringProperty(name="Output Folder", subtype="DIR_PATH", default="//passes/")
    use_fast: BoolProperty(name="Fast Renderer", default=True)
    overwrite: BoolProperty(name="Overwrite", default=False)
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=1)
    use_size: BoolProperty(name="Override Size", default=False)
    width: IntProperty(name="Width", default=512, min=0)
    height: IntProperty(name="Height", default=512, min=0)

    def make_job(self, context, guard):
        scene = context.scene
        self._take_scene_settings(scene)
        armature = _character_armature(context)
        if self.use_scene_range:
            first, last = scene.frame_start, scene.frame_end
        else:
            first, last = self.frame_start, self.frame_end
        if last < first:
            raise AniRenderError(f"The frame range {first}-{last} is empty; end before start.")
        request = PassRequest(
            out_dir=Path(bpy.path.abspath(self.output_dir)),
            frames=list(range(first, last + 1)),
            passes=tuple(p.lower() for p in sorted(self.passes)),
            formats=tuple(f.lower() for f in sorted(self.formats)),
            fast=self.use_fast,
            size=(self.width, self.height) if self.use_size else None,
            overwrite=self.overwrite,
        )
        renderer, steps = render_udp_passes(scene, armature, request)
        job = Job("Render UDP Passes", steps, total=len(renderer.todo))
        skipped = len(request.frames) - len(renderer.todo)
        job.summary = f"Passes of {len(renderer.todo)} frames written to {request.out_dir}" + (
            f" ({skipped} already there)" if skipped else ""
        )
        return job

    def _take_scene_settings(self, scene):
        settings = getattr(getattr(scene, "anirender", None), "passes", None)
        if settings is None:
            return
        for prop, setting in _FROM_SCENE.items():
            if not self.properties.is_property_set(prop) and hasattr(settings, setting):
                setattr(self, prop, getattr(settings, setting))


def _character_armature(context):
    if context.active_object is None and not context.selected_objects:
        character = scene_character(context.scene)  # nothing picked: the only character
    else:
        character = character_from_context(context)
    if character.armature is None:
        raise AniRenderError(
            f'"{character.name}" has no armature. Select the rigged character (its armature '
            "or one of its meshes) to render UDP passes."
        )
    return character.armature


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
