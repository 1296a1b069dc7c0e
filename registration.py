"""Every class the add-on registers, in the order Blender needs them.

Property groups come before the groups and ID types that point at them, operators before
the panels and menus that draw them. The classes are imported, not named in strings, so
a rename breaks ``ruff`` and the tests rather than an artist's Blender. Import this module
only inside ``register()`` / ``unregister()``: it loads ``bpy``.
"""

import bpy

from .addon.anr import props as anr_props
from .addon.core import prefs
from .addon.core import props as core_props
from .addon.passes import props as passes_props
from .addon.pose import props as pose_props
from .addon.shading import engine as shading_engine
from .addon.shading import props as shading_props
from .addon.shading import sheet_paths
from .ops import anr as anr_ops
from .ops import datasets as datasets_ops
from .ops import passes as passes_ops
from .ops import portrait as portrait_ops
from .ops import pose as pose_ops
from .ops import runtime as runtime_ops
from .ops import shading as shading_ops
from .ops import sheets as sheets_ops
from .panels import anr as anr_panels
from .panels import engine as engine_panels
from .panels import menus, sidebar
from .panels import passes as passes_panels
from .panels import pose as pose_panels
from .panels import shading as shading_panels

CLASSES = (
    prefs.AniRenderPreferences,
    pose_props.MorphBinding,
    pose_props.MorphSettings,
    shading_props.CharacterSheetImage,
    shading_props.SheetViewSettings,
    core_props.CharacterSettings,
    passes_props.PassSettings,
    shading_props.NeuralRenderSettings,
    anr_props.AnrSettings,
    core_props.SceneSettings,
    passes_ops.ANIRENDER_OT_render_udp_passes,
    passes_ops.ANIRENDER_OT_set_canonical_pose,
    passes_ops.ANIRENDER_OT_add_camera,
    portrait_ops.ANIRENDER_OT_import_portrait,
    shading_ops.ANIRENDER_OT_neural_render_frame,
    shading_ops.ANIRENDER_OT_neural_render_animation,
    shading_ops.ANIRENDER_OT_test_connection,
    shading_ops.ANIRENDER_OT_start_local_service,
    shading_ops.ANIRENDER_OT_stop_local_service,
    runtime_ops.ANIRENDER_OT_setup_runtime,
    runtime_ops.ANIRENDER_OT_remove_runtime,
    shading_ops.ANIRENDER_OT_sheet_add_files,
    shading_ops.ANIRENDER_OT_sheet_add_image,
    shading_ops.ANIRENDER_OT_sheet_remove,
    sheets_ops.ANIRENDER_OT_render_sheet_views,
    sheets_ops.ANIRENDER_OT_sheet_set_udp,
    sheets_ops.ANIRENDER_OT_sheet_clear_udp,
    sheets_ops.ANIRENDER_OT_sheet_export_paint_over,
    sheets_ops.ANIRENDER_OT_sheet_reload_painted,
    sheets_ops.ANIRENDER_OT_estimate_sheet_udp,
    pose_ops.ANIRENDER_OT_pose_setup,
    pose_ops.ANIRENDER_OT_pose_keyframe,
    pose_ops.ANIRENDER_OT_pose_reset,
    pose_ops.ANIRENDER_OT_pose_random,
    pose_ops.ANIRENDER_OT_pose_copy,
    pose_ops.ANIRENDER_OT_pose_paste,
    pose_ops.ANIRENDER_OT_morph_binding_add,
    pose_ops.ANIRENDER_OT_morph_binding_remove,
    pose_ops.ANIRENDER_OT_reenact_preview,
    pose_ops.ANIRENDER_OT_reenact_tune,
    pose_ops.ANIRENDER_OT_render_pose_animation,
    datasets_ops.ANIRENDER_OT_export_celeb_dataset,
    datasets_ops.ANIRENDER_OT_render_conr_dataset,
    anr_ops.ANIRENDER_OT_anr_capture,
    anr_ops.ANIRENDER_OT_anr_pair_images,
    anr_ops.ANIRENDER_OT_anr_render_frame,
    anr_ops.ANIRENDER_OT_anr_render_animation,
    anr_ops.ANIRENDER_OT_anr_swap_texture,
    sidebar.ANIRENDER_PT_main,
    passes_panels.ANIRENDER_PT_passes,
    pose_panels.ANIRENDER_UL_morph_bindings,
    pose_panels.ANIRENDER_PT_pose,
    pose_panels.ANIRENDER_PT_pose_bindings,
    pose_panels.ANIRENDER_PT_pose_preview,
    shading_panels.ANIRENDER_UL_sheet,
    shading_panels.ANIRENDER_PT_character_sheet,
    shading_panels.ANIRENDER_PT_neural_render,
    anr_panels.ANIRENDER_PT_anr,
    shading_engine.AniRenderEngine,
    engine_panels.ANIRENDER_PT_engine_shader,
    engine_panels.ANIRENDER_PT_engine_characters,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    core_props.attach()
    menus.add()
    sheet_paths.add_handlers()
    shading_engine.add_handlers()
    engine_panels.add_to_blender_panels()


def unregister() -> None:
    engine_panels.remove_from_blender_panels()
    shading_engine.remove_handlers()
    sheet_paths.remove_handlers()
    menus.remove()
    core_props.detach()
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
