"""Property group of the passes feature: the Render UDP Passes defaults of a scene
(``Scene.anirender.passes``)."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    IntProperty,
    StringProperty,
)


class PassSettings(bpy.types.PropertyGroup):
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//passes/",
        description="Folder the passes are written to (// is relative to the .blend)",
    )
    passes: EnumProperty(
        name="Passes",
        options={"ENUM_FLAG"},
        items=(
            ("UDP", "UDP", "Canonical-pose position (XYZ) plus occupancy, for CoNR"),
            ("UV", "UV", "UV coordinates of the active map, unfiltered"),
            ("NORMAL", "Normal", "Camera-space normals"),
            ("DEPTH", "Depth", "Distance from the camera"),
            ("OCCUPANCY", "Occupancy", "Where the character covers the frame"),
        ),
        default={"UDP"},
    )
    use_fast: BoolProperty(
        name="Fast Renderer",
        default=True,
        description="Rasterise the evaluated meshes directly instead of rendering with Cycles",
    )
    overwrite: BoolProperty(name="Overwrite", default=False)
    formats: EnumProperty(
        name="Formats",
        options={"ENUM_FLAG"},
        items=(
            ("EXR", "EXR", "Float32 OpenEXR, lossless ZIP"),
            ("NPZ", "NPZ", "NumPy archive with key 'i' (the official CoNR layout)"),
            ("PNG", "PNG", "8-bit preview for looking"),
        ),
        default={"EXR", "NPZ", "PNG"},
    )
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=48)
    use_size: BoolProperty(name="Override Size", default=False)
    width: IntProperty(name="Width", default=512, min=1)
    height: IntProperty(name="Height", default=512, min=1)
