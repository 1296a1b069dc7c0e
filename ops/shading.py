"""Shading operators: the character sheet, Neural Render Frame / Animation, and the
shader service's connection.

Sheet: add Blender images or image files, remove entries. Neural Render Frame /
Animation are thin wrappers over the render engine's per-frame road: per frame, on
Blender's main thread, the fast pass renderer draws the character's UDP at the scene's
output resolution; a worker thread runs ``frame_shading.shade_frame`` (the function the
AniRender render engine calls for F12 / Ctrl+F12: framing the official CoNR way, the
shader in process, local service or remote as the preferences say, pasted back at the
frame's size); the frame is written on the main thread. Frames already on disk are skipped, so a run cut short (Esc, service gone)
resumes where it stopped. Service: test the connection, start or stop the local service."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, StringProperty

from ..addon.characters.finding import character_from_context, require_camera
from ..addon.core.jobs import Job, ModalJobOperator
from ..addon.core.prefs import preferences
from ..addon.core.settings import character_settings, neural_defaults
from ..addon.passes.renderer import PassRenderer
from ..addon.passes.request import PassRequest, check_output_folder
from ..addon.shading import connection, shaded_frames
from ..addon.shading.frame_shading import CharacterFrame, shade_frame, sheet_shader
from ..addon.shading.local_service import local_service, stop_local_service
from ..addon.shading.sessions import (
    SHADER_WORDS,
    ShadingSession,
    settings_from,
    test_connection,
)
from ..addon.shading.sheet_paths import relative_to
from ..addon.shading.sheets import (
    check_sheet_file,
    check_sheet_pixels,
    image_rgba,
    read_sheet_for_shading,
    udp_beside,
)
from ..errors import AniRenderError
from ..words import counted
from .common import FrameRangeSettings, rigged_character, take_scene_defaults

_IMAGE_SUFFIXES = {".png", ".webp", ".tga", ".tif", ".tiff", ".exr", ".bmp", ".jpg", ".jpeg"}


def _sheet_owner(context):
    return character_from_context(context).owner


class _SheetOperator:
    @classmethod
    def poll(cls, context):
        try:
            _sheet_owner(context)
        except AniRenderError as exc:
            cls.poll_message_set(str(exc))
            return False
        return True


class ANIRENDER_OT_sheet_add_files(_SheetOperator, bpy.types.Operator):
    """Add image files (cut-out drawings with a transparent background) to the character sheet"""

    bl_idname = "anirender.sheet_add_files"
    bl_label = "Add Image Files"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"SKIP_SAVE"})
    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        owner = _sheet_owner(context)
        paths = [Path(self.directory) / f.name for f in self.files if f.name]
        if not paths and self.filepath:
            paths = [Path(self.filepath)]
        paths = [p for p in paths if p.suffix.lower() in _IMAGE_SUFFIXES]
        if not paths:
            self.report({"ERROR"}, "No image files chosen (PNG with transparency works best).")
            return {"CANCELLED"}
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            self.report({"ERROR"}, f"Image file not found: {missing[0]}")
            return {"CANCELLED"}
        try:
            for path in paths:
                check_sheet_file(path)
        except AniRenderError as exc:
            self.report({"ERROR"}, f"Nothing added. {exc}")
            return {"CANCELLED"}
        settings = character_settings(owner)
        attached, refused = 0, []
        for path in paths:
            entry = settings.sheet.add()
            entry.filepath = (
                relative_to(path, bpy.data.filepath) if bpy.data.filepath else str(path)
            )
            udp, estimated, why = udp_beside(path)  # a view rendered with its UDP keeps it
            if udp is not None:
                entry.udp_filepath = (
                    relative_to(udp, bpy.data.filepath) if bpy.data.filepath else str(udp)
                )
                entry.udp_estimated, attached = estimated, attached + 1
            elif why:
                refused.append(why)
        settings.sheet_index = len(settings.sheet) - 1
        for why in refused:
            self.report({"WARNING"}, why)
        self.report(
            {"INFO"},
            f'{len(paths)} image(s) added to the sheet of "{owner.name}"'
            + (f", {attached} with the UDP beside it" if attached else ""),
        )
        return {"FINISHED"}


def _image_items(self, context):
    images = [i for i in bpy.data.images if i.type == "IMAGE" and i.source in {"FILE", "GENERATED"}]
    return [(i.name, i.name, "") for i in images] or [("", "(no images)", "")]


class ANIRENDER_OT_sheet_add_image(_SheetOperator, bpy.types.Operator):
    """Add a Blender image to the character sheet"""

    bl_idname = "anirender.sheet_add_image"
    bl_label = "Add Blender Image"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "image"

    image: EnumProperty(name="Image", items=_image_items)

    def invoke(self, context, event):
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        owner = _sheet_owner(context)
        image = bpy.data.images.get(self.image)
        if image is None:
            self.report({"ERROR"}, f'No image named "{self.image}".')
            return {"CANCELLED"}
        try:
            check_sheet_pixels(image_rgba(image, image.name), image.name)
        except AniRenderError as exc:
            self.report({"ERROR"}, f"Nothing added. {exc}")
            return {"CANCELLED"}
        settings = character_settings(owner)
        entry = settings.sheet.add()
        entry.image = image
        settings.sheet_index = len(settings.sheet) - 1
        self.report({"INFO"}, f'"{image.name}" added to the sheet of "{owner.name}"')
        return {"FINISHED"}


class ANIRENDER_OT_sheet_remove(_SheetOperator, bpy.types.Operator):
    """Remove the active image from the character sheet (the image itself stays)"""

    bl_idname = "anirender.sheet_remove"
    bl_label = "Remove Sheet Image"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        settings = character_settings(_sheet_owner(context))
        index = self.index if self.index >= 0 else settings.sheet_index
        if not 0 <= index < len(settings.sheet):
            self.report({"ERROR"}, "The character sheet has no image there.")
            return {"CANCELLED"}
        settings.sheet.remove(index)
        settings.sheet_index = max(0, min(index, len(settings.sheet) - 1))
        return {"FINISHED"}


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


def shade_udp(name: str, session: ShadingSession, udp, size: int):
    """One character's UDP frame shaded on the engine's road (worker thread)."""
    return shade_frame([CharacterFrame(name, {"udp": udp}, sheet_shader(session, size))]).rgba


class _NeuralRender(ModalJobOperator):
    """Shared checks and settings of both operators."""

    size: EnumProperty(
        name="Size",
        items=_SIZES,
        default="256",
        description="Square the shader works at; frames keep the scene's output resolution",
    )

    def _prepare(self, context):
        """(character, (sheet images, their UDPs or None), service settings), checked
        before anything changes. With UDPs on every view the guided shader paints."""
        require_camera(context.scene)
        character = rigged_character(context, " to render it with the neural shader")
        sheet = read_sheet_for_shading(character.owner, int(self.size))
        settings = settings_from(preferences(context))
        return character, sheet, settings


class ANIRENDER_OT_neural_render_frame(_NeuralRender, bpy.types.Operator):
    """Shade the current frame of the selected character with its character sheet and show it in the Image Editor"""

    bl_idname = "anirender.neural_render_frame"
    bl_label = "Neural Render Frame"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        take_scene_defaults(self, neural_defaults(context.scene), ("size",))
        character, sheet, settings = self._prepare(context)
        scene, size, frame = context.scene, int(self.size), context.scene.frame_current
        folder = Path(bpy.app.tempdir or "/tmp")
        renderer = _udp_renderer(scene, character.armature, [frame], folder)
        session = ShadingSession(settings, *sheet)
        name = f"{character.name} Neural Frame"
        shown = []

        def steps(job):
            with renderer:
                udp = renderer.render_frame(frame)["udp"]
            yield f"frame {frame}: shading"

            def show(rgba):
                image = shaded_frames.show_frame(name, rgba, context)
                shown.append(guard.keep(image))
                job.summary = f'Frame {frame} shaded into image "{image.name}" ({SHADER_WORDS[session.shader]})'

            job.submit(shade_udp, character.name, session, udp, size, then=show)

        job = Job("Neural Render Frame", steps, total=1)
        return job


class ANIRENDER_OT_neural_render_animation(FrameRangeSettings, _NeuralRender, bpy.types.Operator):
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
    overwrite: BoolProperty(name="Overwrite", default=False)
    add_strip: BoolProperty(name="Add to Sequencer", default=False)

    def make_job(self, context, guard):
        scene = context.scene
        take_scene_defaults(self, neural_defaults(scene), _FROM_SCENE)
        frames = self.frames(scene)
        character, sheet, settings = self._prepare(context)
        size = int(self.size)
        folder = check_output_folder(self.output_dir, "shaded frames")
        sequence = shaded_frames.SequenceRender(folder, character.name, frames, self.overwrite)
        renderer = _udp_renderer(
            scene, character.armature, sequence.todo or sequence.frames, folder
        )
        session = ShadingSession(settings, *sheet)
        name = f"{character.name} Neural"

        def add_strip(image):
            paths = [sequence.paths[f] for f in sequence.frames]
            shaded_frames.add_strip(scene, paths, frames[0], name)

        job = sequence.job(
            "Neural Render Animation",
            guard,
            lambda frame: renderer.render_frame(frame)["udp"],
            lambda udps: [shade_udp(character.name, session, udps[0], size)],
            shaded_frames.FrameWriter((renderer.width, renderer.height)),
            sequence_name=name,
            summary=(
                f"{counted(len(sequence.todo), 'frame')} shaded into {folder} "
                f"({SHADER_WORDS[session.shader]})"
            ),
            when_unavailable=lambda kept: (
                f"The {counted(kept, 'frame')} shaded so far stay in {folder}; "
                "run Neural Render Animation again to shade the rest."
            ),
            inputs_open=renderer,
            on_loaded=add_strip if self.add_strip else None,
            workers=2,
        )
        return job


class ANIRENDER_OT_test_connection(ModalJobOperator, bpy.types.Operator):
    """Connect to the neural shader as set in the preferences (starting the local service if that is the choice) and report what it runs"""

    bl_idname = "anirender.test_connection"
    bl_label = "Test Connection"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        settings = settings_from(preferences(context))

        def steps(job):
            def done(info):
                job.summary = connection.status["text"]

            job.submit(test_connection, settings, then=done)
            yield "connecting"

        return Job("Test Connection", steps, total=1)


class ANIRENDER_OT_start_local_service(ModalJobOperator, bpy.types.Operator):
    """Start the local neural shader service with the Python interpreter from the preferences"""

    bl_idname = "anirender.start_local_service"
    bl_label = "Start Local Service"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        settings = settings_from(preferences(context))
        settings["mode"] = "LOCAL"

        def steps(job):
            def done(info):
                service = local_service(**settings)
                job.summary = (
                    f"Local service on port {service.bound_port}: {connection.status['text']}"
                )

            job.submit(test_connection, settings, then=done)
            yield "starting the local service"

        return Job("Start Local Service", steps, total=1)


class ANIRENDER_OT_stop_local_service(bpy.types.Operator):
    """Stop the local neural shader service started by this Blender"""

    bl_idname = "anirender.stop_local_service"
    bl_label = "Stop Local Service"
    bl_options = {"REGISTER"}

    def execute(self, context):
        stopped = stop_local_service()
        connection.status.update(text="local service stopped" if stopped else "not tested", ok=None)
        self.report(
            {"INFO"}, "Local service stopped" if stopped else "No local service was running"
        )
        return {"FINISHED"}
