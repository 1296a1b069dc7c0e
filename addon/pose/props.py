"""Property groups of the pose feature: the sliders' shape-key bindings edited in the
Pose panel, and the portrait and live switch of the reenactment preview
(``Object.anirender.morphs``). The slider values themselves are custom properties on the
armature (``addon.pose.sliders``), so drivers keep working without the add-on."""

from __future__ import annotations

import bpy

from .preview import live_preview_changed, reenact_settings_changed
from .sliders import EXPRESSION_NAMES


class MorphBinding(bpy.types.PropertyGroup):
    """One shape key that a pose target drives, with its weight."""

    target: bpy.props.EnumProperty(
        name="Target", items=[(n, n, "") for n in EXPRESSION_NAMES], default="mouth_a"
    )
    object: bpy.props.PointerProperty(
        name="Mesh", type=bpy.types.Object, poll=lambda self, obj: obj.type == "MESH"
    )
    shape_key: bpy.props.StringProperty(name="Shape Key")
    weight: bpy.props.FloatProperty(name="Weight", default=1.0, soft_min=0.0, soft_max=1.0)


class MorphSettings(bpy.types.PropertyGroup):
    bindings: bpy.props.CollectionProperty(type=MorphBinding)
    binding_index: bpy.props.IntProperty(name="Active Binding", default=0, min=0)
    head_bone: bpy.props.StringProperty(
        name="Head Bone", description="Bone the head angles rotate (head, else neck)"
    )
    seed: bpy.props.IntProperty(
        name="Seed", default=0, min=0, description="Seed of the next random pose"
    )
    portrait: bpy.props.PointerProperty(
        name="Portrait",
        type=bpy.types.Image,
        description="A front-facing portrait of the character to reenact with the sliders",
    )
    tuned_weights: bpy.props.StringProperty(
        name="Tuned Weights",
        subtype="FILE_PATH",
        description="Reenactment weights tuned to this portrait (Tune to Portrait); the "
        "preview and Render Pose Animation use them while set. Clear to go back to the "
        "generic model",
    )
    mirror_average: bpy.props.BoolProperty(
        name="Mirror Average",
        default=False,
        description="Also draw the mirrored face and average the two: closer to the truth "
        "on faces the model never saw (see BENCHMARKS.md), twice the time per pose",
        update=reenact_settings_changed,
    )
    live_preview: bpy.props.BoolProperty(
        name="Live Preview",
        default=False,
        description="Reenact the portrait with the sliders while you drag them",
        update=live_preview_changed,
    )
