"""Property groups: all add-on data hangs off one PointerProperty per ID type.

``Object.anirender`` holds a character's settings (stored on its armature, or on its
first mesh when it has none); ``Scene.anirender`` holds per-scene defaults for the
operators. Feature modules nest their own groups here with a PointerProperty.
"""

import bpy
from bpy.props import (
    CollectionProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from ..anr.props import AnrSettings  # the ANR operators' scene defaults
from ..passes.props import PassSettings
from ..pose.props import MorphSettings  # the pose sliders' group, nested in CharacterSettings
from ..shading.props import CharacterSheetImage, NeuralRenderSettings, SheetViewSettings


class CharacterSettings(bpy.types.PropertyGroup):
    sheet: CollectionProperty(name="Character Sheet", type=CharacterSheetImage)
    sheet_index: IntProperty(name="Active Sheet Image", default=0, min=0)
    paint_over_dir: StringProperty(
        name="Paint-Over Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        description="Where Export for Paint-Over last copied the sheet; Reload Painted reads "
        "the repainted images back from here",
    )
    morphs: PointerProperty(type=MorphSettings)  # pose sliders' bindings (addon.pose)


class SceneSettings(bpy.types.PropertyGroup):
    passes: PointerProperty(type=PassSettings)
    neural: PointerProperty(type=NeuralRenderSettings)
    anr: PointerProperty(type=AnrSettings)
    sheet_views: PointerProperty(type=SheetViewSettings)


def attach():
    bpy.types.Object.anirender = PointerProperty(type=CharacterSettings)
    bpy.types.Scene.anirender = PointerProperty(type=SceneSettings)


def detach():
    for owner in (bpy.types.Object, bpy.types.Scene):
        if hasattr(owner, "anirender"):
            del owner.anirender
