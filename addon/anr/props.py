"""Property group of the ANR feature: the ANR operators' scene defaults
(``Scene.anirender.anr``)."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from .capture import _SIZES


class AnrSettings(bpy.types.PropertyGroup):
    """Scene defaults of the ANR operators (Scene.anirender.anr)."""

    data_dir: StringProperty(
        name="Capture Folder", subtype="DIR_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default="//anr_data/",
        description="Where training frames are captured (one folder per identity)",
    )  # fmt: skip
    images_dir: StringProperty(
        name="Drawn Frames", subtype="DIR_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default="",
        description="Folder of drawn frames numbered like the animation's frames",
    )  # fmt: skip
    coarse: StringProperty(
        name="Coarse Meshes", default="",
        description="Comma-separated meshes whose UV/normal passes ANR samples (empty: the "
        "largest mesh of the character)",
    )  # fmt: skip
    weights: StringProperty(
        name="ANR Model", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}, default="",
        description="anr.safetensors written by 'anirender train anr'",
    )  # fmt: skip
    identity: IntProperty(name="Identity", default=0, min=0, description="Texture to render")
    size: EnumProperty(name="Size", items=_SIZES, default="256")
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//anr/",
    )
