"""Passes operators: Render UDP Passes (the character's UDP / UV / normal / depth /
occupancy images, frame by frame) and Set Canonical Pose (the frame that fixes the
character's UDP colours)."""

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from mathutils import Vector

from ..addon.characters.finding import character_from_context
from ..addon.core.jobs import Job, ModalJobOperator
from ..addon.core.mesh_arrays import world_bounds
from ..addon.core.settings import pass_defaults
from ..addon.passes.canonical import MODES, set_canonical_pose
from ..addon.passes.renderer import render_udp_passes
from ..addon.passes.request import PassRequest, resolve_output_folder
from ..errors import AniRenderError
from ..words import counted
from .common import FrameRangeSettings, rigged_character, take_scene_defaults

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


class ANIRENDER_OT_render_udp_passes(FrameRangeSettings, ModalJobOperator, bpy.types.Operator):
    """Render the character's UDP and deferred-shading passes to image files"""

    bl_idname = "anirender.render_udp_passes"
    bl_label = "Render UDP Passes"
    bl_options = {"REGISTER"}

    passes: EnumProperty(name="Passes", items=_PASS_ITEMS, options={"ENUM_FLAG"}, default={"UDP"})
    formats: EnumProperty(
        name="Formats", items=_FORMAT_ITEMS, options={"ENUM_FLAG"}, default={"EXR", "NPZ", "PNG"}
    )
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//passes/",
    )
    use_fast: BoolProperty(name="Fast Renderer", default=True)
    overwrite: BoolProperty(name="Overwrite", default=False)
    use_size: BoolProperty(name="Override Size", default=False)
    width: IntProperty(name="Width", default=512, min=0)
    height: IntProperty(name="Height", default=512, min=0)

    def make_job(self, context, guard):
        scene = context.scene
        take_scene_defaults(self, pass_defaults(scene), _FROM_SCENE)
        armature = rigged_character(context, " to render UDP passes").armature
        request = PassRequest(
            out_dir=resolve_output_folder(self.output_dir),
            frames=self.frames(scene),
            passes=tuple(p.lower() for p in sorted(self.passes)),
            formats=tuple(f.lower() for f in sorted(self.formats)),
            fast=self.use_fast,
            size=(self.width, self.height) if self.use_size else None,
            overwrite=self.overwrite,
        )
        renderer, steps = render_udp_passes(scene, armature, request)
        job = Job("Render UDP Passes", steps, total=len(renderer.todo))
        skipped = len(request.frames) - len(renderer.todo)
        job.summary = (
            f"Passes of {counted(len(renderer.todo), 'frame')} written to {request.out_dir}"
            + (f" ({skipped} already there)" if skipped else "")
        )
        return job


class ANIRENDER_OT_set_canonical_pose(bpy.types.Operator):
    """Recompute the canonical pose whose positions colour the UDP pass"""

    bl_idname = "anirender.set_canonical_pose"
    bl_label = "Set Canonical Pose"
    bl_options = {"REGISTER", "UNDO"}

    mode: EnumProperty(name="Pose", items=MODES, default="A_POSE")

    def execute(self, context):
        try:
            character = rigged_character(context, "; the canonical pose comes from the rig")
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


class ANIRENDER_OT_add_camera(bpy.types.Operator):
    """Add a camera facing the character from the front and make it the scene's camera"""

    bl_idname = "anirender.add_camera"
    bl_label = "Add Camera"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene = context.scene
        try:
            meshes = character_from_context(context).meshes
        except AniRenderError:
            meshes = []
        bounds = world_bounds(meshes) if meshes else None
        low, high = bounds if bounds is not None else (np.zeros(3), np.array([0.0, 0.0, 2.0]))
        centre, size = (low + high) / 2, float(max(high - low))
        data = bpy.data.cameras.new("AniRender Camera")
        data.lens = 50.0
        camera = bpy.data.objects.new("AniRender Camera", data)
        context.collection.objects.link(camera)
        # the character faces -Y (Blender's front view); fit its height with a margin
        distance = 1.2 * size / (data.sensor_width / data.lens)
        camera.location = Vector((centre[0], centre[1] - distance, centre[2]))
        camera.rotation_euler = (np.pi / 2, 0.0, 0.0)
        scene.camera = camera
        self.report({"INFO"}, f'Camera "{camera.name}" added and made the scene camera')
        return {"FINISHED"}
