"""Property groups: all add-on data hangs off one PointerProperty per ID type.

``Object.anirender`` holds a character's settings (stored on its armature, or on its
first mesh when it has none); ``Scene.anirender`` holds per-scene defaults for the
operators. Feature modules nest their own groups here with a PointerProperty.
"""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .anr_capture import AnrSettings  # the ANR operators' scene defaults
from .morphs import MorphSettings  # the pose sliders' group, nested in CharacterSettings


class CharacterSheetImage(bpy.types.PropertyGroup):
    """One reference drawing of the character (a Blender image or a file on disk)."""

    image: PointerProperty(name="Image", type=bpy.types.Image)
    filepath: StringProperty(
        name="File", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}
    )


class CharacterSettings(bpy.types.PropertyGroup):
    sheet: CollectionProperty(name="Character Sheet", type=CharacterSheetImage)
    sheet_index: IntProperty(name="Active Sheet Image", default=0, min=0)
    morphs: PointerProperty(type=MorphSettings)  # pose sliders' bindings (addon.morphs)


class PassSettings(bpy.types.PropertyGroup):
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
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


class NeuralRenderSettings(bpy.types.PropertyGroup):
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        default="//neural/",
        description="Folder the shaded frames are written to (// is relative to the .blend)",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    size: EnumProperty(
        name="Size",
        items=(
            ("128", "128 x 128", "Quick previews"),
            ("256", "256 x 256", "The size the CoNR weights were trained at"),
            ("512", "512 x 512", "Sharper, four times the work"),
        ),
        default="256",
        description="Square working size of the shaded frames",
    )
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=48)
    overwrite: BoolProperty(
        name="Overwrite", default=False, description="Shade frames again that are already on disk"
    )
    add_strip: BoolProperty(
        name="Add to Sequencer",
        default=False,
        description="Place the shaded sequence as an image strip in the Video Sequencer",
    )


class SceneSettings(bpy.types.PropertyGroup):
    passes: PointerProperty(type=PassSettings)
    neural: PointerProperty(type=NeuralRenderSettings)
    anr: PointerProperty(type=AnrSettings)


def attach():
    bpy.types.Object.anirender = PointerProperty(type=CharacterSettings)
    bpy.types.Scene.anirender = PointerProperty(type=SceneSettings)


def detach():
    for owner in (bpy.types.Object, bpy.types.Scene):
        if hasattr(owner, "anirender"):
            del owner.anirender
