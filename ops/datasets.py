"""Dataset exports, each a modal job with a folder, a seed and a choice of characters:

- Render > Export AnimeCeleb Dataset: sampled pose-vector poses of each character as
  RGBA head images with ``combined_pose.csv`` (``addon.datasets.celeb``);
- Render > Render CoNR Training Data: the scene's rigged characters in many poses and
  views, each RGBA image with its UDP pass (``addon.datasets.conr``).
"""

import bpy

from ..addon.core.jobs import ModalJobOperator
from ..addon.datasets.celeb import STYLES, export_celeb_dataset, scene_characters
from ..addon.datasets.conr import LOOK_SAMPLES, scene_dataset_job


class DatasetExportOperator(ModalJobOperator):
    """What the dataset exports share: a folder, a seed, which characters, and the file
    browser on invoke; the work itself runs as a modal job."""

    directory: bpy.props.StringProperty(name="Folder", subtype="DIR_PATH")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    selected_only: bpy.props.BoolProperty(
        name="Selected Characters Only", default=False, description="Else every character"
    )
    overwrite: bpy.props.BoolProperty(name="Overwrite", default=False)

    def invoke(self, context, event):
        if not self.directory:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return ModalJobOperator.invoke(self, context, event)

    def execute(self, context):
        # the file browser ends in execute: go modal there when a window can show it
        if context.window is not None and not bpy.app.background:
            return ModalJobOperator.invoke(self, context, None)
        return ModalJobOperator.execute(self, context)

    def candidates(self, context) -> list:
        """The selection with Selected Characters Only, else every object of the scene."""
        return list(context.selected_objects if self.selected_only else context.scene.objects)


class ANIRENDER_OT_export_celeb_dataset(DatasetExportOperator, bpy.types.Operator):
    """Render sampled pose-vector poses of the characters as 256 x 256 RGBA head images
    with combined_pose.csv (AnimeCeleb layout)"""

    bl_idname = "anirender.export_celeb_dataset"
    bl_label = "Export AnimeCeleb Dataset"
    bl_options = {"REGISTER"}

    poses: bpy.props.IntProperty(name="Poses per Character", default=20, min=1, max=100000)
    styles: bpy.props.EnumProperty(
        name="Styles",
        options={"ENUM_FLAG"},
        items=(
            ("SHADED", "Shaded", "The character's own materials under one sun"),
            ("TOON", "Toon", "Base colours with a hard cel-shading terminator"),
            ("FLAT", "Flat", "Base colours, unshaded"),
        ),
        default={"SHADED"},
    )
    resolution: bpy.props.IntProperty(name="Size", default=256, min=32, max=2048)
    samples: bpy.props.IntProperty(name="Samples", default=16, min=1, max=4096)
    framing: bpy.props.FloatProperty(
        name="Framing",
        default=2.4,
        min=0.5,
        max=10.0,
        description="Image width in head-bone lengths",
    )
    frame_centre: bpy.props.FloatProperty(
        name="Frame Centre",
        default=0.25,
        min=-2.0,
        max=3.0,
        description="Where along the head bone the image is centred (0 its root, 1 its tip)",
    )

    def make_job(self, context, guard):
        return export_celeb_dataset(
            context,
            self.directory or "//celeb_dataset/",
            self.poses,
            characters=scene_characters(context.scene, self.candidates(context)),
            styles=[s for s in STYLES if s in self.styles],
            seed=self.seed,
            resolution=self.resolution,
            framing=self.framing,
            frame_centre=self.frame_centre,
            samples=self.samples,
            overwrite=self.overwrite,
        )


class ANIRENDER_OT_render_conr_dataset(DatasetExportOperator, bpy.types.Operator):
    """Render the scene's rigged characters in many poses and views, each as an RGBA image
    with its UDP pass: a dataset for `anirender train conr`"""

    bl_idname = "anirender.render_conr_dataset"
    bl_label = "Render CoNR Training Data"
    bl_options = {"REGISTER"}

    poses: bpy.props.IntProperty(name="Poses per Character", default=40, min=2, max=100000)
    resolution: bpy.props.IntProperty(
        name="Size", default=128, min=16, max=2048, step=16, description="Multiple of 16"
    )
    samples: bpy.props.IntProperty(name="Samples", default=LOOK_SAMPLES, min=1, max=4096)
    turnaround: bpy.props.FloatProperty(
        name="Turnaround Share",
        default=0.25,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
        description="Share of samples in the rest pose from the front, a side or the back",
    )
    validation: bpy.props.FloatProperty(
        name="Validation Share",
        default=0.25,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
        description="Share of characters held out for validation (at least one)",
    )

    def make_job(self, context, guard):
        return scene_dataset_job(
            context,
            self.directory or "//conr_dataset/",
            self.candidates(context),
            poses=self.poses,
            size=self.resolution,
            seed=self.seed,
            validation=self.validation,
            turnaround=self.turnaround,
            samples=self.samples,
            overwrite=self.overwrite,
        )
