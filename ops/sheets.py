"""Character Sheet operators that make and keep the views' UDPs: Render Sheet Views,
Set Sheet UDP File, Export for Paint-Over, Reload Painted, Estimate Sheet UDP.

Thin: they check, then call ``addon.shading.sheet_views`` / ``sheet_files``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..addon.core.jobs import Job, ModalJobOperator
from ..addon.core.prefs import preferences
from ..addon.core.settings import character_settings, sheet_view_defaults
from ..addon.shading import sheet_files
from ..addon.shading.props import ENGINE_ITEMS, POSE_ITEMS, VIEW_ITEMS
from ..addon.shading.sessions import settings_from
from ..addon.shading.sheet_paths import relative_to
from ..addon.shading.sheet_views import (
    DEFAULT_VIEWS,
    VIEWS,
    SheetViewRequest,
    check_request,
    sheet_view_steps,
)
from ..addon.shading.sheets import add_views_to_sheet, entry_label, read_entry, read_entry_udp
from ..errors import AniRenderError
from ..models.sheet_udp import check_udp_fits, read_udp_file
from ..words import counted
from .common import rigged_character, take_scene_defaults
from .shading import _sheet_owner, _SheetOperator

_FROM_SCENE = ("views", "size", "pose", "frame", "engine", "samples", "output_dir")


class ANIRENDER_OT_render_sheet_views(_SheetOperator, ModalJobOperator, bpy.types.Operator):
    """Render the selected character from the chosen sides as sheet views, each a PNG with its UDP beside it, and add them to its character sheet"""

    bl_idname = "anirender.render_sheet_views"
    bl_label = "Render Sheet Views"
    bl_options = {"REGISTER"}

    views: EnumProperty(
        name="Views",
        items=VIEW_ITEMS,
        options={"ENUM_FLAG"},
        default={v.upper() for v in DEFAULT_VIEWS},
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
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )

    def make_job(self, context, guard):
        take_scene_defaults(self, sheet_view_defaults(context.scene), _FROM_SCENE)
        character = rigged_character(context, " to render its sheet views")
        order = [v for v in VIEWS if v.upper() in self.views]
        request = SheetViewRequest(
            out_dir=self.output_dir,
            views=tuple(order),
            size=self.size,
            pose=self.pose,
            frame=self.frame,
            engine=self.engine,
            samples=self.samples,
        )
        check_request(context.scene, character.armature, request)
        owner = character.owner

        def steps(job):
            # bpy.context, not the operator's: steps run later, from the modal timer
            yield from sheet_view_steps(bpy.context, character.armature, request)
            add_views_to_sheet(owner, request.written)
            job.summary = (
                f'{counted(len(request.written), "sheet view")} of "{owner.name}" rendered '
                f"to {request.out_dir} and added to its sheet"
            )

        return Job("Render Sheet Views", steps, total=len(request.views))


class ANIRENDER_OT_sheet_set_udp(_SheetOperator, bpy.types.Operator):
    """Attach a UDP file (.udp.npz, or a UDP pass as .npz/.exr of the same size and framing) to the active sheet view"""

    bl_idname = "anirender.sheet_set_udp"
    bl_label = "Set UDP File"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(
        subtype="FILE_PATH", options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"}
    )
    filter_glob: StringProperty(default="*.npz;*.exr", options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        settings = character_settings(_sheet_owner(context))
        if not 0 <= settings.sheet_index < len(settings.sheet):
            self.report({"ERROR"}, "Select a sheet view first.")
            return {"CANCELLED"}
        entry = settings.sheet[settings.sheet_index]
        path = Path(bpy.path.abspath(self.filepath))
        try:
            if not path.is_file():
                raise AniRenderError(f"UDP file not found: {path}")
            udp, estimated = read_udp_file(path)
            check_udp_fits(udp, read_entry(entry), entry_label(entry))
        except AniRenderError as exc:
            self.report({"ERROR"}, f"No UDP attached. {exc}")
            return {"CANCELLED"}
        entry.udp_filepath = (
            relative_to(path, bpy.data.filepath) if bpy.data.filepath else str(path)
        )
        entry.udp_estimated = estimated
        self.report({"INFO"}, f"UDP {path.name} attached")
        return {"FINISHED"}


class ANIRENDER_OT_sheet_clear_udp(_SheetOperator, bpy.types.Operator):
    """Detach the UDP from the active sheet view (the file stays on disk)"""

    bl_idname = "anirender.sheet_clear_udp"
    bl_label = "Clear UDP"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = character_settings(_sheet_owner(context))
        if not 0 <= settings.sheet_index < len(settings.sheet):
            self.report({"ERROR"}, "Select a sheet view first.")
            return {"CANCELLED"}
        entry = settings.sheet[settings.sheet_index]
        entry.udp_filepath = ""
        entry.udp_estimated = False
        return {"FINISHED"}


class ANIRENDER_OT_sheet_export_paint_over(_SheetOperator, bpy.types.Operator):
    """Copy every sheet view (PNG) with its UDP into a folder, to repaint the PNGs in another program"""

    bl_idname = "anirender.sheet_export_paint_over"
    bl_label = "Export for Paint-Over"
    bl_options = {"REGISTER"}

    directory: StringProperty(
        subtype="DIR_PATH", options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"}
    )

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        owner = _sheet_owner(context)
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder to export the sheet into.")
            return {"CANCELLED"}
        try:
            pairs = sheet_files.export_for_paint_over(owner, self.directory)
        except AniRenderError as exc:
            self.report({"ERROR"}, f"Nothing exported. {exc}")
            return {"CANCELLED"}
        with_udp = sum(1 for _png, udp in pairs if udp is not None)
        self.report(
            {"INFO"},
            f"{counted(len(pairs), 'view')} ({with_udp} with UDP) exported to "
            f"{pairs[0][0].parent}; paint over the PNGs there (same size, same place), "
            "then click Reload Painted",
        )
        return {"FINISHED"}


class ANIRENDER_OT_sheet_reload_painted(_SheetOperator, bpy.types.Operator):
    """Make the repainted PNGs in the paint-over folder the sheet's views; each keeps its UDP"""

    bl_idname = "anirender.sheet_reload_painted"
    bl_label = "Reload Painted"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(
        subtype="DIR_PATH",
        options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"},
        description="The paint-over folder (default: where the sheet was exported last)",
    )

    def execute(self, context):
        owner = _sheet_owner(context)
        try:
            names = sheet_files.reload_painted(owner, self.directory or None)
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{counted(len(names), 'painted view')} reloaded")
        return {"FINISHED"}


class ANIRENDER_OT_estimate_sheet_udp(_SheetOperator, ModalJobOperator, bpy.types.Operator):
    """Guess the UDP of every sheet view that has none (hand-drawn views) with the CoNR parser; marked as estimated"""

    bl_idname = "anirender.estimate_sheet_udp"
    bl_label = "Estimate Sheet UDP"
    bl_options = {"REGISTER"}

    def make_job(self, context, guard):
        owner = _sheet_owner(context)
        if not sheet_files.views_without_udp(owner):
            raise AniRenderError(f'Every view of the sheet of "{owner.name}" already has a UDP.')
        for entry in character_settings(owner).sheet:  # the views that keep theirs: checked
            if entry.udp_filepath:
                read_entry_udp(entry, read_entry(entry))
        settings = settings_from(preferences(context))
        scratch = tempfile.TemporaryDirectory(prefix="anirender-estimate-")
        staged = sheet_files.stage_for_estimate(owner, Path(scratch.name))

        def attach(_result):  # main thread, once the worker has estimated every view
            try:
                attached = sheet_files.attach_estimates(owner, staged)
                job.summary = f'{counted(attached, "UDP")} estimated for "{owner.name}"'
            finally:
                scratch.cleanup()

        def steps(job):
            job.submit(sheet_files.run_estimate, Path(scratch.name), settings, then=attach)
            yield f"estimating {counted(len(staged), 'view')}"

        job = Job("Estimate Sheet UDP", steps, total=1)
        return job
