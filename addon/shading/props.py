"""Property groups of the shading feature: a character's sheet entries
(``Object.anirender.sheet``), and the scene's shading settings (``Scene.anirender.neural``):
the Neural Render operators' defaults and the AniRender render engine's settings (working
size, weights, where the shader runs), shown in Render Properties."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)


class CharacterSheetImage(bpy.types.PropertyGroup):
    """One reference drawing of the character (a Blender image or a file on disk)."""

    image: PointerProperty(name="Image", type=bpy.types.Image)
    filepath: StringProperty(
        name="File", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}
    )
    udp_filepath: StringProperty(
        name="UDP",
        subtype="FILE_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        description="Where on the body each pixel of this view sits (a .udp.npz written "
        "beside the image by Render Sheet Views or Estimate Sheet UDP, or a UDP pass of the "
        "same size and framing); empty when the view has none",
    )
    udp_estimated: BoolProperty(
        name="Estimated",
        default=False,
        description="The UDP was guessed from the picture by the CoNR parser, not rendered "
        "from the character",
    )


VIEW_ITEMS = (
    ("FRONT", "Front", "The face, camera at -Y"),
    ("THREE_QUARTERS", "Three-Quarters", "Between the front and the character's left"),
    ("LEFT", "Left", "The character's left side"),
    ("BACK", "Back", "The back"),
    ("RIGHT", "Right", "The character's right side"),
    ("THREE_QUARTERS_RIGHT", "Three-Quarters Right", "Between the front and its right"),
)
POSE_ITEMS = (
    ("REST", "Rest Pose", "The armature's rest pose"),
    ("FRAME", "Frame", "The pose at the given frame"),
)
ENGINE_ITEMS = (
    ("CYCLES", "Cycles", "The character's materials under the scene's lights"),
    ("WORKBENCH", "Workbench", "Flat material colours, quick"),
)


class SheetViewSettings(bpy.types.PropertyGroup):
    """Render Sheet Views' defaults of the scene (drawn in the Character Sheet panel)."""

    views: EnumProperty(
        name="Views",
        items=VIEW_ITEMS,
        options={"ENUM_FLAG"},
        default={"FRONT", "LEFT", "BACK", "RIGHT"},
    )
    size: IntProperty(name="Size", default=512, min=16, max=4096, description="Square side")
    pose: EnumProperty(name="Pose", items=POSE_ITEMS, default="REST")
    frame: IntProperty(name="Frame", default=1)
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default="CYCLES")
    samples: IntProperty(name="Samples", default=16, min=1, max=4096)
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        default="//sheet/",
        description="Folder the views and their UDPs are written to (// is the .blend's)",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )


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

    # the render engine's own settings (Render Properties > AniRender), stored in the
    # .blend so a farm worker renders the file as the artist set it up
    shader: EnumProperty(
        name="Shader",
        items=(
            (
                "SHEET",
                "Character Sheet",
                "CoNR from the images of each character's sheet",
            ),
            ("ANR", "ANR Model", "The scene's trained ANR neural texture (ANR settings)"),
        ),
        default="SHEET",
        description="What shades the characters when AniRender renders",
    )
    service_mode: EnumProperty(
        name="Runs",
        items=(
            ("PREFERENCES", "As in Preferences", "Where the add-on's preferences say"),
            ("IN_PROCESS", "In Blender", "The networks run inside Blender (needs torch here)"),
            ("LOCAL", "Local Service", "A service the add-on starts on this machine"),
            ("REMOTE", "Remote Service", "The service at the preferences' URL"),
        ),
        default="PREFERENCES",
        description="Where the shader runs when this scene is rendered",
    )
    weights: StringProperty(
        name="Weights",
        subtype="FILE_PATH",
        default="",
        description="A .safetensors file (// is relative to the .blend) or a weights name; "
        "empty: the preferences' weights, else the model shipped with AniRender",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
