"""Render > Export AnimeCeleb Dataset: sampled poses of each character, as a modal job."""

import bpy

from ..addon.celeb_dataset import STYLES, export_celeb_dataset, scene_characters
from .dataset_export import DatasetExportOperator


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


def draw_render_menu(self, context):
    self.layout.operator(ANIRENDER_OT_export_celeb_dataset.bl_idname, icon="RENDER_RESULT")
