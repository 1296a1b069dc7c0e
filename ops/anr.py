"""ANR operators: capture training frames, pair drawn frames, render with a trained model.

Capture ANR Training Frames / Pair Images with Animation write a capture folder
(``addon.anr.capture``) to train with ``anirender train anr``. Neural Render (ANR) Frame /
Animation follow the CoNR operators' flow: the fast pass renderer draws the coarse mesh's
UV and normal passes on the main thread, a worker thread sends them through the shader
client (in process, local or remote service) and the answer is written on the main
thread; frames already on disk are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatVectorProperty,
    IntProperty,
    StringProperty,
)

from ..addon.anr.capture import (
    CaptureRequest,
    capture_training_frames,
    coarse_meshes,
    pair_image_sequence,
)
from ..addon.anr.swap import swap_anr_texture
from ..addon.characters.finding import require_camera
from ..addon.core.jobs import Job, ModalJobOperator
from ..addon.core.prefs import preferences
from ..addon.core.settings import anr_defaults
from ..addon.passes.renderer import PassRenderer
from ..addon.passes.request import PassRequest, check_output_folder
from ..addon.shading import shaded_frames
from ..addon.shading.sessions import AnrSession, settings_from
from ..errors import AniRenderError
from ..words import counted
from .common import FrameRangeSettings, rigged_character, take_scene_defaults

_SIZES = (("128", "128", ""), ("256", "256", ""), ("512", "512", ""))


def _armature(context):
    return rigged_character(context, "").armature


def _coarse_names(text: str) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


class _FromScene:
    _scene_names: tuple = ()

    def _take_scene_settings(self, scene):
        take_scene_defaults(self, anr_defaults(scene), self._scene_names)


class ANIRENDER_OT_anr_capture(
    FrameRangeSettings, _FromScene, ModalJobOperator, bpy.types.Operator
):
    """Render ANR training pairs over the frame range: the character's own look with Cycles, and its coarse mesh's UV and normal passes"""

    bl_idname = "anirender.anr_capture"
    bl_label = "Capture ANR Training Frames"
    bl_options = {"REGISTER"}
    _scene_names = ("data_dir", "coarse")

    data_dir: StringProperty(
        name="Capture Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//anr_data/",
    )
    coarse: StringProperty(name="Coarse Meshes", default="")
    size: IntProperty(name="Size", default=256, min=32)
    samples: IntProperty(name="Samples", default=6, min=1)
    identity: StringProperty(name="Identity", default="")

    def make_job(self, context, guard):
        scene = context.scene
        self._take_scene_settings(scene)
        armature = _armature(context)
        request = CaptureRequest(
            out_dir=Path(bpy.path.abspath(self.data_dir)), frames=self.frames(scene),
            size=self.size, coarse=_coarse_names(self.coarse), identity=self.identity,
            samples=self.samples,
        )  # fmt: skip
        total, steps = capture_training_frames(scene, armature, request)
        job = Job("Capture ANR Training Frames", steps, total=total)
        job.summary = f"{total} ANR training frames captured into {request.out_dir}"
        return job


class ANIRENDER_OT_anr_pair_images(
    FrameRangeSettings, _FromScene, ModalJobOperator, bpy.types.Operator
):
    """Pair a drawn image sequence with the animation's frames (same frame numbers) as ANR training data"""

    bl_idname = "anirender.anr_pair_images"
    bl_label = "Pair Images with Animation"
    bl_options = {"REGISTER"}
    _scene_names = ("data_dir", "coarse", "images_dir")

    images_dir: StringProperty(
        name="Drawn Frames",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="",
    )
    data_dir: StringProperty(
        name="Capture Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//anr_data/",
    )
    coarse: StringProperty(name="Coarse Meshes", default="")
    identity: StringProperty(name="Identity", default="")

    def make_job(self, context, guard):
        scene = context.scene
        self._take_scene_settings(scene)
        if not self.images_dir:
            raise AniRenderError("Choose the folder of drawn frames to pair with the animation.")
        armature = _armature(context)
        request = CaptureRequest(
            out_dir=Path(bpy.path.abspath(self.data_dir)), frames=self.frames(scene),
            coarse=_coarse_names(self.coarse), identity=self.identity,
        )  # fmt: skip
        folder = bpy.path.abspath(self.images_dir)
        total, steps = pair_image_sequence(scene, armature, folder, request)
        job = Job("Pair Images with Animation", steps, total=total)
        job.summary = f"{total} drawn frames paired into {request.out_dir}"
        return job


# ---------------------------------------------------------------------- rendering


class _AnrRender(_FromScene, ModalJobOperator):
    size: EnumProperty(name="Size", items=_SIZES, default="256")
    weights: StringProperty(
        name="ANR Model", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default=""
    )
    identity: IntProperty(name="Identity", default=0, min=0)
    coarse: StringProperty(name="Coarse Meshes", default="")

    def _prepare(self, context, frames, folder):
        """(armature, pass renderer, session), checked before anything changes."""
        scene = context.scene
        require_camera(scene)
        armature = _armature(context)
        path = Path(bpy.path.abspath(self.weights)) if self.weights else None
        if path is None or not path.is_file():
            raise AniRenderError(
                f"No ANR model at '{self.weights}'. Train one with `anirender train anr` and "
                "choose its anr.safetensors in the ANR panel."
            )
        coarse = coarse_meshes(armature, _coarse_names(self.coarse))
        size = int(self.size)
        request = PassRequest(
            out_dir=folder, frames=list(frames), passes=("uv", "normal"), formats=("npz",),
            fast=True, size=(size, size), overwrite=True,
        )  # fmt: skip
        renderer = PassRenderer(scene, armature, request)
        others = [m for m in renderer.meshes if m not in coarse]
        session = AnrSession(settings_from(preferences(context)), path.read_bytes(), self.identity)
        return armature, renderer, others, session


def _coarse_passes(renderer, others, frame):
    """UV and normal passes of ``frame`` with only the coarse meshes drawn."""
    hidden = [(m, m.hide_render) for m in others]
    try:
        for mesh, _ in hidden:
            mesh.hide_render = True
        images = renderer.render_frame(frame)
    finally:
        for mesh, was in hidden:
            mesh.hide_render = was
    return images["uv"][None], images["normal"][None]


class ANIRENDER_OT_anr_render_frame(_AnrRender, bpy.types.Operator):
    """Render the current frame of the character with its trained ANR model and show it in the Image Editor"""

    bl_idname = "anirender.anr_render_frame"
    bl_label = "Neural Render Frame (ANR)"
    bl_options = {"REGISTER"}
    _scene_names = ("size", "weights", "identity", "coarse")

    def make_job(self, context, guard):
        self._take_scene_settings(context.scene)
        frame = context.scene.frame_current
        folder = Path(bpy.app.tempdir or "/tmp")
        armature, renderer, others, session = self._prepare(context, [frame], folder)
        name = f"{armature.name} ANR Frame"

        def steps(job):
            with renderer:
                uv, normal = _coarse_passes(renderer, others, frame)
            yield f"frame {frame}: shading"

            def show(rgba):
                image = shaded_frames.show_frame(name, rgba[0], context)
                guard.keep(image)
                job.summary = f'Frame {frame} rendered with ANR into image "{image.name}"'

            job.submit(session.shade, uv, normal, then=show)

        job = Job("Neural Render Frame (ANR)", steps, total=1)
        return job


class ANIRENDER_OT_anr_render_animation(FrameRangeSettings, _AnrRender, bpy.types.Operator):
    """Render the character over a frame range with its ANR model into a PNG sequence (frames already on disk are kept)"""

    bl_idname = "anirender.anr_render_animation"
    bl_label = "Neural Render Animation (ANR)"
    bl_options = {"REGISTER"}
    _scene_names = ("size", "weights", "identity", "coarse", "output_dir")

    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//anr/",
    )
    overwrite: BoolProperty(name="Overwrite", default=False)

    def make_job(self, context, guard):
        scene = context.scene
        self._take_scene_settings(scene)
        frames = self.frames(scene)
        folder = check_output_folder(self.output_dir, "ANR frames")
        name = f"{_armature(context).name}_anr"
        sequence = shaded_frames.SequenceRender(folder, name, frames, self.overwrite)
        armature, renderer, others, session = self._prepare(
            context, sequence.todo or sequence.frames, folder
        )
        job = sequence.job(
            "Neural Render Animation (ANR)",
            guard,
            lambda frame: _coarse_passes(renderer, others, frame),
            lambda passes: session.shade(*passes[0]),  # (1, H, W, 4): one frame
            shaded_frames.FrameWriter(int(self.size)),
            sequence_name=f"{armature.name} ANR",
            summary=f"{counted(len(sequence.todo), 'frame')} rendered with ANR into {folder}",
            when_unavailable=lambda kept: (
                f"The {counted(kept, 'frame')} rendered so far stay in {folder}; "
                "run Neural Render Animation (ANR) again for the rest."
            ),
            inputs_open=renderer,
            workers=2,
        )
        return job


# -------------------------------------------------------------------- texture swap


class ANIRENDER_OT_anr_swap_texture(bpy.types.Operator):
    """Copy a UV region of one identity's neural texture into another's and save the result as a new ANR model"""

    bl_idname = "anirender.anr_swap_texture"
    bl_label = "Swap Texture Region (ANR)"
    bl_options = {"REGISTER"}

    weights: StringProperty(
        name="ANR Model", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default=""
    )
    target: IntProperty(name="Target Identity", default=0, min=0,
                        description="Identity whose texture changes")  # fmt: skip
    source: IntProperty(name="Source Identity", default=1, min=0,
                        description="Identity the texels come from")  # fmt: skip
    region: EnumProperty(
        name="Region",
        items=(
            ("BOX", "UV Box", "A UV rectangle u0, v0, u1, v1"),
            ("MASK", "Mask Image", "A UV-space image: white swaps, row 0 at the top (V = 1)"),
        ),
        default="BOX",
    )
    uv_box: FloatVectorProperty(
        name="UV Box", size=4, default=(0.0, 0.0, 0.5, 0.5), min=0.0, max=1.0,
        description="u0, v0, u1, v1 of the rectangle to swap",
    )  # fmt: skip
    mask: StringProperty(
        name="Mask Image", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default=""
    )
    output: StringProperty(
        name="Output", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default="//anr_swapped.safetensors",
        description="Where the swapped model is written (a new file)",
    )  # fmt: skip

    def invoke(self, context, event):
        settings = anr_defaults(context.scene)
        if not self.weights and settings is not None:
            self.weights = settings.weights
        return context.window_manager.invoke_props_dialog(self, width=420)

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "weights")
        row = layout.row()
        row.prop(self, "target")
        row.prop(self, "source")
        layout.prop(self, "region", expand=True)
        if self.region == "BOX":
            layout.prop(self, "uv_box")
        else:
            layout.prop(self, "mask")
        layout.prop(self, "output")

    def execute(self, context):

        if not self.weights:
            self.report({"ERROR"}, "Choose the ANR model (anr.safetensors) to edit.")
            return {"CANCELLED"}
        if self.region == "MASK" and not self.mask:
            self.report({"ERROR"}, "Choose the UV mask image, or swap a UV box instead.")
            return {"CANCELLED"}
        try:
            summary = swap_anr_texture(
                settings_from(preferences(context)),
                bpy.path.abspath(self.weights),
                bpy.path.abspath(self.output),
                self.target,
                self.source,
                box=tuple(self.uv_box) if self.region == "BOX" else None,
                mask=bpy.path.abspath(self.mask) if self.region == "MASK" else None,
            )
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, summary)
        return {"FINISHED"}
