"""Render > CoNR Training Data: samples of the scene's rigged characters, as a modal job."""

import bpy

from ..addon.conr_dataset import LOOK_SAMPLES, scene_dataset_job
from .dataset_export import DatasetExportOperator


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


def draw_render_menu(self, context):
    self.layout.operator(ANIRENDER_OT_render_conr_dataset.bl_idname, icon="RENDER_RESULT")
