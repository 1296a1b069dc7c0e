"""Pose operators: the sliders (set up, bindings, keyframe, reset, random, copy/paste),
the reenactment preview, and Render Pose Animation.

Render Pose Animation: for each frame of the scene's range the main thread evaluates the
scene and reads the character's 20 slider values; a worker thread sends them in batches
through the shader client chosen in the preferences, and the answers are written on the
main thread as straight-alpha PNGs ``<folder>/<character>_<frame:04d>.png``. Frames
already on disk are skipped, so a cut-short run resumes; the sequence is loaded as one
image."""

import bpy
import numpy as np
from bpy.props import BoolProperty, IntProperty, StringProperty

from ..addon.characters.finding import character_from_context
from ..addon.core.blender_section import blender_section
from ..addon.core.jobs import Job, ModalJobOperator
from ..addon.core.prefs import preferences
from ..addon.core.settings import morph_settings
from ..addon.passes.request import check_output_folder
from ..addon.pose import preview as reenact_preview
from ..addon.pose import sliders as morphs
from ..addon.pose.preview import stop_all
from ..addon.pose.tuning import portrait_tuning_job
from ..addon.shading import shaded_frames
from ..addon.shading.sessions import ReenactSession, settings_from
from ..errors import AniRenderError
from ..models import pose_vector
from ..service import protocol
from ..words import counted


class _CharacterOperator:
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type not in {"ARMATURE", "MESH"}:
            cls.poll_message_set(
                "Select the character first: its armature or one of the meshes it deforms."
            )
            return False
        return True

    def execute(self, context):
        try:
            character = character_from_context(context)
            message = self.run(context, character)
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if message:
            self.report({"INFO"}, message)
        return {"FINISHED"}

    def run(self, context, character):  # pragma: no cover - abstract
        raise NotImplementedError


# Blender run headless (bpy module, render farm) has no system clipboard: there the pose
# text is kept in this process so Copy then Paste still works.
_HEADLESS_CLIPBOARD = [""]


def set_clipboard(context, text: str) -> None:
    context.window_manager.clipboard = text
    _HEADLESS_CLIPBOARD[0] = text


def get_clipboard(context) -> str:
    text = context.window_manager.clipboard
    if not text and bpy.app.background:
        text = _HEADLESS_CLIPBOARD[0]
    return text


def _summary(bindings) -> str:
    """How many targets are bound, and which bound ones move exactly the same keys."""
    found = [t for t in pose_vector.EXPRESSION_NAMES if bindings.get(t)]
    text = f"{len(found)} of {len(pose_vector.EXPRESSION_NAMES)} expression targets bound"
    same = {}
    for target in found:
        keys = tuple(sorted((obj, key, round(w, 3)) for obj, key, w in bindings[target]))
        same.setdefault(keys, []).append(target)
    shared = [" and ".join(group) for group in same.values() if len(group) > 1]
    if shared:
        text += (
            "; the rig has no separate shape keys for "
            + ", ".join(shared)
            + (" (each group moves the same keys)")
        )
    return text


class ANIRENDER_OT_pose_setup(_CharacterOperator, bpy.types.Operator):
    """Add the 20 pose sliders to the character and drive its shape keys and head bone"""

    bl_idname = "anirender.pose_setup"
    bl_label = "Set Up Pose Sliders"

    detect: bpy.props.BoolProperty(
        name="Detect Shape Keys",
        default=False,
        description="Detect the bindings again instead of using the edited list",
    )

    def run(self, context, character):
        bindings = morphs.setup_morph_rig(character, detect=self.detect)
        return f"{character.name}: {_summary(bindings)}"


class ANIRENDER_OT_pose_keyframe(_CharacterOperator, bpy.types.Operator):
    """Insert keyframes on all 20 pose sliders at the current frame"""

    bl_idname = "anirender.pose_keyframe"
    bl_label = "Keyframe Pose"

    def run(self, context, character):
        count = morphs.keyframe_pose(character.owner)
        return f"Keyed {count} sliders at frame {context.scene.frame_current}"


class ANIRENDER_OT_pose_reset(_CharacterOperator, bpy.types.Operator):
    """Set every pose slider back to 0 (neutral face, head straight)"""

    bl_idname = "anirender.pose_reset"
    bl_label = "Reset Pose"

    def run(self, context, character):
        morphs.apply_pose(character, [0.0] * pose_vector.POSE_SIZE)
        return ""


class ANIRENDER_OT_pose_random(_CharacterOperator, bpy.types.Operator):
    """Sample a pose as AnimeCeleb does (one eye, brow and mouth morph; angles within 20 degrees)"""

    bl_idname = "anirender.pose_random"
    bl_label = "Random Pose"

    seed: bpy.props.IntProperty(name="Seed", default=-1, description="-1 uses the panel's seed")

    def run(self, context, character):
        owner = character.owner
        if not morphs.is_rigged(owner):
            morphs.setup_morph_rig(character)
        settings = morph_settings(owner)
        seed = settings.seed if self.seed < 0 else self.seed
        bindings = morphs.stored_bindings(owner) or morphs.find_shape_keys(character.meshes)
        morphs.apply_pose(character, morphs.random_pose(bindings, seed=seed))
        if self.seed < 0:
            settings.seed = seed + 1
        return f"Random pose, seed {seed}"


class ANIRENDER_OT_pose_copy(_CharacterOperator, bpy.types.Operator):
    """Copy the 20 slider values to the clipboard as one line of numbers"""

    bl_idname = "anirender.pose_copy"
    bl_label = "Copy Pose"
    bl_options = {"REGISTER"}

    def run(self, context, character):
        text = morphs.pose_to_text(morphs.get_pose(character.owner))
        set_clipboard(context, text)
        return "Pose copied"


class ANIRENDER_OT_pose_paste(_CharacterOperator, bpy.types.Operator):
    """Set the sliders from 20 numbers on the clipboard (as Copy Pose writes them)"""

    bl_idname = "anirender.pose_paste"
    bl_label = "Paste Pose"

    def run(self, context, character):
        pose = morphs.pose_from_text(get_clipboard(context))
        morphs.apply_pose(character, pose)
        return "Pose pasted"


class ANIRENDER_OT_morph_binding_add(_CharacterOperator, bpy.types.Operator):
    """Add a shape key to the active target's binding list"""

    bl_idname = "anirender.morph_binding_add"
    bl_label = "Add Binding"

    def run(self, context, character):
        settings = morph_settings(character.owner)
        item = settings.bindings.add()
        if 0 <= settings.binding_index < len(settings.bindings) - 1:
            item.target = settings.bindings[settings.binding_index].target
        item.object = (
            context.active_object if context.active_object.type == "MESH" else (character.meshes[0])
        )
        settings.binding_index = len(settings.bindings) - 1
        return ""


class ANIRENDER_OT_morph_binding_remove(_CharacterOperator, bpy.types.Operator):
    """Remove the selected binding"""

    bl_idname = "anirender.morph_binding_remove"
    bl_label = "Remove Binding"

    def run(self, context, character):
        settings = morph_settings(character.owner)
        if not settings.bindings:
            raise AniRenderError("There is no binding to remove.")
        settings.bindings.remove(min(settings.binding_index, len(settings.bindings) - 1))
        settings.binding_index = max(0, min(settings.binding_index, len(settings.bindings) - 1))
        return ""


class ANIRENDER_OT_reenact_preview(_CharacterOperator, bpy.types.Operator):
    """Reenact the portrait with the current sliders once and show it in the Image Editor"""

    bl_idname = "anirender.reenact_preview"
    bl_label = "Reenact Portrait"
    bl_options = {"REGISTER"}

    @classmethod
    def unregister(cls):
        """Disabling the add-on stops every live preview (timers and worker threads)."""

        stop_all()

    def run(self, context, character):

        owner = character.owner
        settings = morph_settings(owner)
        if settings.portrait is None:
            raise AniRenderError("Pick a portrait image in the Reenactment Preview panel.")
        portrait = reenact_preview.image_to_rgba(settings.portrait)
        rgba = reenact_preview.reenact_for(owner)(portrait, morphs.get_pose(owner))
        image = reenact_preview.show_rgba(rgba)
        return f'Reenacted "{settings.portrait.name}" into "{image.name}"'


class ANIRENDER_OT_reenact_tune(ModalJobOperator, bpy.types.Operator):
    """Adapt the reenactment model to the portrait (a few minutes on the CPU) and switch the preview and Render Pose Animation to the tuned weights: about 1% closer to the truth on poses it never saw (see BENCHMARKS.md)"""

    bl_idname = "anirender.reenact_tune"
    bl_label = "Tune to Portrait"
    bl_options = {"REGISTER"}

    steps: IntProperty(name="Steps", default=150, min=1, max=10000, description="Optimiser steps")

    @classmethod
    def poll(cls, context):
        return _CharacterOperator.poll.__func__(cls, context)

    def make_job(self, context, guard):
        character = character_from_context(context)
        settings = morph_settings(character.owner)
        if settings.portrait is None:
            raise AniRenderError("Pick a portrait image in the Reenactment Preview panel.")
        portrait = reenact_preview.image_to_rgba(settings.portrait)
        return portrait_tuning_job(character.owner.name, portrait, self.steps)


# slider ranges, as ``morphs.apply_pose`` clamps them: expressions 0..1, angles in degrees
_LOW = np.array([0.0] * 17 + [-pose_vector.ANGLE_LIMIT] * 3, np.float32)


_HIGH = np.array([1.0] * 17 + [pose_vector.ANGLE_LIMIT] * 3, np.float32)


def slider_pose(owner) -> list[float]:
    """The owner's 20 slider values now, within the sliders' ranges."""
    return np.clip(np.array(morphs.get_pose(owner), np.float32), _LOW, _HIGH).tolist()


class ANIRENDER_OT_render_pose_animation(ModalJobOperator, bpy.types.Operator):
    """Reenact the portrait with the keyframed pose sliders over the scene's frame range into a PNG sequence (frames already on disk are kept)"""

    bl_idname = "anirender.render_pose_animation"
    bl_label = "Render Pose Animation"
    bl_options = {"REGISTER"}

    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//pose_animation/",
    )
    batch: IntProperty(
        name="Poses per Request", default=8, min=1, max=protocol.MAX_POSES,
        description="Frames sent to the shader service at once",
    )  # fmt: skip
    overwrite: BoolProperty(
        name="Overwrite", default=False, description="Render frames already on disk again"
    )

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type not in {"ARMATURE", "MESH"}:
            cls.poll_message_set(
                "Select the character first: its armature or one of the meshes it deforms."
            )
            return False
        return True

    def make_job(self, context, guard):
        job = pose_animation_job(
            context, guard, character_from_context(context).owner, self.output_dir,
            batch=self.batch, overwrite=self.overwrite,
        )  # fmt: skip
        return job


def pose_animation_job(context, guard, owner, output_dir, batch=8, overwrite=False) -> Job:
    """The render as a ``Job`` (checked before anything changes); results kept by ``guard``."""
    scene = context.scene
    settings = morph_settings(owner)
    if settings.portrait is None:
        raise AniRenderError("Pick a portrait image in the Reenactment Preview panel.")
    if not morphs.is_rigged(owner):
        raise AniRenderError(
            f'"{owner.name}" has no pose sliders yet. Set Up Pose Sliders, keyframe them, '
            "and render again."
        )
    portrait = reenact_preview.image_to_rgba(settings.portrait)
    try:
        portrait = protocol.check_portrait(portrait)
    except AniRenderError as exc:
        raise AniRenderError(f'Portrait "{settings.portrait.name}": {exc}') from None
    frames = list(range(scene.frame_start, scene.frame_end + 1))
    if not frames:
        raise AniRenderError(
            f"The scene's frame range {scene.frame_start}-{scene.frame_end} is empty."
        )
    folder = check_output_folder(output_dir, "reenacted frames")
    sequence = shaded_frames.SequenceRender(folder, owner.name, frames, overwrite)
    if settings.tuned_weights:  # as the preview: tuned weights run in Blender's Python
        tuned = reenact_preview.tuned_weights_path(settings.tuned_weights)
        session = ReenactSession({"mode": "IN_PROCESS", "reenact_weights": tuned})
    else:
        session = ReenactSession(settings_from(preferences(context)))
    mirror_average = settings.mirror_average
    height, width = portrait.shape[:2]

    def read_pose(frame):
        with blender_section():  # the reenactment worker may run meanwhile
            scene.frame_set(frame)
        return slider_pose(owner)

    return sequence.job(
        "Render Pose Animation",
        guard,
        read_pose,
        lambda poses: session.reenact(portrait, np.array(poses, np.float32), mirror_average),
        shaded_frames.FrameWriter((width, height)),
        sequence_name=f"{owner.name} Pose Animation",
        summary=f"{counted(len(sequence.todo), 'frame')} reenacted into {folder}",
        when_unavailable=lambda kept: (
            f"The {counted(kept, 'frame')} rendered so far stay in {folder}; "
            "run Render Pose Animation again for the rest."
        ),
        batch=int(batch),
        # two batches in flight: one on the service while the next one's poses are read
        max_pending=2,
    )
