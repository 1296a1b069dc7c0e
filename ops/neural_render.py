"""Neural Render Frame / Animation: UDP passes -> shader service -> shaded frames.

Per frame, on Blender's main thread, the fast pass renderer draws the character's UDP at
the scene's output resolution; a worker thread frames it the official CoNR way (the
centred square around the character, resized to the working size, nearest), sends it to
the shader (in process, local service or remote, as the preferences say) and pastes the
answer back at the frame's size (``models.framing.shade_in_frame``, numpy only); the
frame is written on the main thread. Frames keep the scene's resolution and aspect.
Frames already on disk are skipped, so a run cut short (Esc, service gone) resumes where
it stopped.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ..addon import shaded_frames
from ..addon.client import ShadingSession, settings_from
from ..addon.jobs import Job, ModalJobOperator
from ..addon.passes import PassRenderer, PassRequest, check_output_folder, scene_character
from ..addon.prefs import preferences
from ..addon.scene import character_from_context, require_camera
from ..addon.sheets import read_sheet
from ..errors import AniRenderError
from ..models.framing import shade_in_frame

_SIZES = (("128", "128", ""), ("256", "256", ""), ("512", "512", ""))
_FROM_SCENE = (
    "output_dir",
    "size",
    "use_scene_range",
    "frame_start",
    "frame_end",
    "overwrite",
    "add_strip",
)


def _character(context):
    if context.active_object is None and not context.selected_objects:
        character = scene_character(context.scene)
    else:
        character = character_from_context(context)
    if character.armature is None:
        raise AniRenderError(
            f'"{character.name}" has no armature. Select the rigged character (its armature '
            "or one of its meshes) to render it with the neural shader."
        )
    return character


def _udp_renderer(scene, armature, frames, folder) -> PassRenderer:
    """UDP passes at the scene's output resolution (the frames' final size)."""
    request = PassRequest(
        out_dir=folder,
        frames=list(frames),
        passes=("udp",),
        formats=("npz",),
        fast=True,
        size=None,
        overwrite=True,  # nothing is written; every asked frame is rendered
    )
    return PassRenderer(scene, armature, request)


class _NeuralRender(ModalJobOperator):
    """Shared checks and settings of both operators."""

    size: EnumProperty(
        name="Size",
        items=_SIZES,
        default="256",
        description="Square the shader works at; frames keep the scene's output resolution",
    )

    def _take_scene_settings(self, scene, names):
        settings = getattr(getattr(scene, "anirender", None), "neural", None)
        if settings is None:
            return
        for name in names:
            if not self.properties.is_property_set(name) and hasattr(settings, name):
                setattr(self, name, getattr(settings, name))

    def _prepare(self, context):
        """(character, sheet images, service settings), checked before anything changes."""
        require_camera(context.scene)
        character = _character(context)
        images = read_sheet(character.owner, int(self.size))
        settings = settings_from(preferences(context))
        return character, images, settings


class ANIRENDER_OT_neural_render_frame(_NeuralRender, bpy.types.Operator):
    """Shade the current frame of the selected character with its character sheet and show it in the Image Editor"""

    bl_idname = "anirender.neural_render_frame"
    bl_label = "Neural Render Frame"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        self._take_scene_settings(context.scene, ("size",))
        character, images, settings = self._prepare(context)
        scene, size, frame = context.scene, int(self.size), context.scene.frame_current
        folder = Path(bpy.app.tempdir or "/tmp")
        renderer = _udp_renderer(scene, character.armature, [frame], folder)
        session = ShadingSession(settings, images)
        name = f"{character.name} Neural Frame"
        shown = []

        def steps(job):
            with renderer:
                udp = renderer.render_frame(frame)["udp"]
            yield f"frame {frame}: shading"

            def show(rgba):
                image = shaded_frames.show_frame(name, rgba, context)
                shown.append(guard.keep(image))
                job.summary = f'Frame {frame} shaded into image "{image.name}"'

            job.submit(shade_in_frame, session.shade, udp, size, then=show)

        job = Job("Neural Render Frame", steps, total=1)
        return job


class ANIRENDER_OT_neural_render_animation(_NeuralRender, bpy.types.Operator):
    """Shade the character over a frame range into a PNG sequence (frames already on disk are kept)"""

    bl_idname = "anirender.neural_render_animation"
    bl_label = "Neural Render Animation"
    bl_options = {"REGISTER"}

    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        default="//neural/",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=1)
    overwrite: BoolProperty(name="Overwrite", default=False)
    add_strip: BoolProperty(name="Add to Sequencer", default=False)

    def make_job(self, context, guard):
        scene = context.scene
        self._take_scene_settings(scene, _FROM_SCENE)
        if self.use_scene_range:
            first, last = scene.frame_start, scene.frame_end
        else:
            first, last = self.frame_start, self.frame_end
        if last < first:
            raise AniRenderError(f"The frame range {first}-{last} is empty; end before start.")
        character, images, settings = self._prepare(context)
        size = int(self.size)
        folder = check_output_folder(self.output_dir)
        sequence = shaded_frames.SequenceRender(
            folder, character.name, range(first, last + 1), self.overwrite
        )
        renderer = _udp_renderer(
            scene, character.armature, sequence.todo or sequence.frames, folder
        )
        session = ShadingSession(settings, images)
        name = f"{character.name} Neural"

        def add_strip(image):
            paths = [sequence.paths[f] for f in sequence.frames]
            shaded_frames.add_strip(scene, paths, first, name)

        job = sequence.job(
            "Neural Render Animation",
            guard,
            lambda frame: renderer.render_frame(frame)["udp"],
            lambda udps: [shade_in_frame(session.shade, udps[0], size)],
            shaded_frames.FrameWriter((renderer.width, renderer.height)),
            sequence_name=name,
            summary=f"{len(sequence.todo)} frames shaded into {folder}",
            when_unavailable=lambda kept: (
                f"The {kept} frames shaded so far stay in {folder}; "
                "run Neural Render Animation again to shade the rest."
            ),
            inputs_open=renderer,
            on_loaded=add_strip if self.add_strip else None,
            workers=2,
        )
        return job
