"""Render Pose Animation: the keyframed pose sliders reenact the portrait, frame by frame.

For each frame of the scene's range the main thread evaluates the scene at that frame
and reads the character's 20 slider values; a worker thread sends them in batches
through the shader client chosen in the preferences (``ReenactSession``: in Blender,
local or remote service), and the answers are written on the main thread as straight-
alpha PNGs ``<folder>/<character>_<frame:04d>.png``. Frames already on disk are skipped,
so a run cut short (Esc, service gone) resumes; the sequence is loaded as one image.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy.props import BoolProperty, IntProperty, StringProperty

from ..addon import morphs, reenact_preview, shaded_frames
from ..addon.client import ReenactSession, settings_from
from ..addon.jobs import Job, ModalJobOperator
from ..addon.passes import check_output_folder
from ..addon.prefs import preferences
from ..addon.scene import character_from_context
from ..errors import AniRenderError
from ..service import protocol

# slider ranges, as ``morphs.apply_pose`` clamps them: expressions 0..1, angles in degrees
_LOW = np.array([0.0] * 17 + [-morphs.ANGLE_LIMIT] * 3, np.float32)
_HIGH = np.array([1.0] * 17 + [morphs.ANGLE_LIMIT] * 3, np.float32)


def slider_pose(owner) -> list[float]:
    """The owner's 20 slider values now, within the sliders' ranges."""
    return np.clip(np.array(morphs.get_pose(owner), np.float32), _LOW, _HIGH).tolist()


class ANIRENDER_OT_render_pose_animation(ModalJobOperator, bpy.types.Operator):
    """Reenact the portrait with the keyframed pose sliders over the scene's frame range into a PNG sequence (frames already on disk are kept)"""

    bl_idname = "anirender.render_pose_animation"
    bl_label = "Render Pose Animation"
    bl_options = {"REGISTER"}

    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//pose_animation/"
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
        return obj is not None and obj.type in {"ARMATURE", "MESH"}

    def make_job(self, context, guard):
        job = pose_animation_job(
            context, guard, character_from_context(context).owner, self.output_dir,
            batch=self.batch, overwrite=self.overwrite,
        )  # fmt: skip
        return job


def pose_animation_job(context, guard, owner, output_dir, batch=8, overwrite=False) -> Job:
    """The render as a ``Job`` (checked before anything changes); results kept by ``guard``."""
    scene = context.scene
    settings = owner.anirender.morphs
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
    folder = check_output_folder(bpy.path.abspath(output_dir))
    sequence = shaded_frames.SequenceRender(folder, owner.name, frames, overwrite)
    session = ReenactSession(settings_from(preferences(context)))
    height, width = portrait.shape[:2]

    def read_pose(frame):
        scene.frame_set(frame)
        return slider_pose(owner)

    return sequence.job(
        "Render Pose Animation",
        guard,
        read_pose,
        lambda poses: session.reenact(portrait, np.array(poses, np.float32)),
        shaded_frames.FrameWriter((width, height)),
        sequence_name=f"{owner.name} Pose Animation",
        summary=f"{len(sequence.todo)} frames reenacted into {folder}",
        when_unavailable=lambda kept: (
            f"The {kept} frames rendered so far stay in {folder}; "
            "run Render Pose Animation again for the rest."
        ),
        batch=int(batch),
        # two batches in flight: one on the service while the next one's poses are read
        max_pending=2,
    )
