"""What the dataset-export operators share: a folder, a seed, which characters, and the
file browser on invoke; the work itself runs as a modal job."""

import bpy

from ..addon.jobs import ModalJobOperator


class DatasetExportOperator(ModalJobOperator):
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
