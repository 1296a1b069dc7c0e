"""AniRender: anime-style neural rendering for Blender.

This file is both the Blender extension entry point and the root of the Python package
``anirender``. It holds only ``register()`` / ``unregister()``; ``bpy`` is imported inside
them so that ``import anirender.models`` works where Blender is absent.
"""

# Registration order matters: property groups before the properties that point at them,
# operators before the panels and menus that draw them.
_CLASSES = (
    "addon.prefs:AniRenderPreferences",
    "addon.morphs:MorphBinding",
    "addon.morphs:MorphSettings",
    "addon.props:CharacterSheetImage",
    "addon.props:CharacterSettings",
    "addon.props:PassSettings",
    "addon.props:NeuralRenderSettings",
    "addon.anr_capture:AnrSettings",
    "addon.props:SceneSettings",
    "ops.passes:ANIRENDER_OT_render_udp_passes",
    "ops.canonical:ANIRENDER_OT_set_canonical_pose",
    "ops.import_portrait:ANIRENDER_OT_import_portrait",
    "ops.neural_render:ANIRENDER_OT_neural_render_frame",
    "ops.neural_render:ANIRENDER_OT_neural_render_animation",
    "ops.service:ANIRENDER_OT_test_connection",
    "ops.service:ANIRENDER_OT_start_local_service",
    "ops.service:ANIRENDER_OT_stop_local_service",
    "ops.character_sheet:ANIRENDER_OT_sheet_add_files",
    "ops.character_sheet:ANIRENDER_OT_sheet_add_image",
    "ops.character_sheet:ANIRENDER_OT_sheet_remove",
    "ops.morphs:ANIRENDER_OT_pose_setup",
    "ops.morphs:ANIRENDER_OT_pose_keyframe",
    "ops.morphs:ANIRENDER_OT_pose_reset",
    "ops.morphs:ANIRENDER_OT_pose_random",
    "ops.morphs:ANIRENDER_OT_pose_copy",
    "ops.morphs:ANIRENDER_OT_pose_paste",
    "ops.morphs:ANIRENDER_OT_morph_binding_add",
    "ops.morphs:ANIRENDER_OT_morph_binding_remove",
    "ops.morphs:ANIRENDER_OT_reenact_preview",
    "ops.reenact_render:ANIRENDER_OT_render_pose_animation",
    "ops.celeb_dataset:ANIRENDER_OT_export_celeb_dataset",
    "ops.conr_dataset:ANIRENDER_OT_render_conr_dataset",
    "ops.anr:ANIRENDER_OT_anr_capture",
    "ops.anr:ANIRENDER_OT_anr_pair_images",
    "ops.anr:ANIRENDER_OT_anr_render_frame",
    "ops.anr:ANIRENDER_OT_anr_render_animation",
    "ops.anr:ANIRENDER_OT_anr_swap_texture",
    "panels.sidebar:ANIRENDER_PT_main",
    "panels.passes:ANIRENDER_PT_passes",
    "panels.morphs:ANIRENDER_UL_morph_bindings",
    "panels.morphs:ANIRENDER_PT_pose",
    "panels.morphs:ANIRENDER_PT_pose_bindings",
    "panels.morphs:ANIRENDER_PT_pose_preview",
    "panels.character_sheet:ANIRENDER_UL_sheet",
    "panels.character_sheet:ANIRENDER_PT_character_sheet",
    "panels.character_sheet:ANIRENDER_PT_neural_render",
    "panels.anr:ANIRENDER_PT_anr",
)


def _resolve(entry):
    import importlib

    module_name, class_name = entry.split(":")
    module = importlib.import_module("." + module_name, __package__)
    return getattr(module, class_name)


def register():
    import bpy

    from .addon import props
    from .panels import menus

    for entry in _CLASSES:
        bpy.utils.register_class(_resolve(entry))
    props.attach()
    menus.add()


def unregister():
    import bpy

    from .addon import props
    from .panels import menus

    menus.remove()
    props.detach()
    for entry in reversed(_CLASSES):
        cls = _resolve(entry)
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
