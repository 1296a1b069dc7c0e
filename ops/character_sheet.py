"""Edit the character's sheet: add Blender images or image files, remove entries."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import CollectionProperty, EnumProperty, IntProperty, StringProperty

from ..addon.scene import character_from_context
from ..errors import AniRenderError

_IMAGE_SUFFIXES = {".png", ".webp", ".tga", ".tif", ".tiff", ".exr", ".bmp", ".jpg", ".jpeg"}


def _sheet_owner(context):
    return character_from_context(context).owner


class _SheetOperator:
    @classmethod
    def poll(cls, context):
        try:
            _sheet_owner(context)
        except AniRenderError:
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
        for path in paths:
            entry = owner.anirender.sheet.add()
            entry.filepath = bpy.path.relpath(str(path)) if bpy.data.filepath else str(path)
        owner.anirender.sheet_index = len(owner.anirender.sheet) - 1
        self.report({"INFO"}, f'{len(paths)} image(s) added to the sheet of "{owner.name}"')
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
        entry = owner.anirender.sheet.add()
        entry.image = image
        owner.anirender.sheet_index = len(owner.anirender.sheet) - 1
        return {"FINISHED"}


class ANIRENDER_OT_sheet_remove(_SheetOperator, bpy.types.Operator):
    """Remove the active image from the character sheet (the image itself stays)"""

    bl_idname = "anirender.sheet_remove"
    bl_label = "Remove Sheet Image"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        settings = _sheet_owner(context).anirender
        index = self.index if self.index >= 0 else settings.sheet_index
        if not 0 <= index < len(settings.sheet):
            self.report({"ERROR"}, "The character sheet has no image there.")
            return {"CANCELLED"}
        settings.sheet.remove(index)
        settings.sheet_index = max(0, min(index, len(settings.sheet) - 1))
        return {"FINISHED"}
