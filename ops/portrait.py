"""File > Import > Portrait Reconstruction: a PAniC-3D/EG3D/triplane/mesh file as a clean,
coloured, real-size head mesh, optionally textured with the portrait and put on a rig."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from ..addon.core.jobs import ModalJobOperator
from ..addon.portrait.importing import plan_portrait_import, portrait_import_job
from ..errors import AniRenderError
from ..models.recon.portrait import PortraitImportOptions, describe_portrait

_FILTER = "*.pkl;*.pickle;*.mrc;*.map;*.npy;*.npz;*.safetensors;*.obj;*.ply;*.glb;*.gltf"
_described: dict = {}


def _describe(path: str) -> str:
    """Cached one-line description of a file (the sidebar redraws often)."""

    p = Path(path)
    try:
        key = (str(p), p.stat().st_mtime_ns)
    except OSError:
        return ""
    if not p.is_file():
        return ""
    if key not in _described:
        _described.clear()
        _described[key] = describe_portrait(p)
    return _described[key]


class ANIRENDER_OT_import_portrait(ModalJobOperator, bpy.types.Operator, ImportHelper):
    """Import a portrait reconstruction (PAniC-3D, EG3D, triplane or mesh) as a clean head mesh"""

    bl_idname = "anirender.import_portrait"
    bl_label = "Import Portrait Reconstruction"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ""
    filter_glob: StringProperty(default=_FILTER, options={"HIDDEN"})

    use_auto_level: BoolProperty(
        name="Automatic Iso-level",
        description="Use the level each format's authors use (PAniC alpha 0.5, EG3D sigma 10)",
        default=True,
    )
    level: FloatProperty(name="Iso-level", description="Surface level of the density", default=10.0)
    size_mode: EnumProperty(
        name="Size",
        items=(
            (
                "AUTO",
                "Automatic",
                "Reconstructions fitted to Head Width; mesh files keep their units",
            ),
            ("FIT", "Fit to Head Width", "Scale so the head is Head Width wide, ear to ear"),
            ("KEEP", "Keep File Units", "The size the file gives"),
        ),
        default="AUTO",
    )
    head_width_cm: FloatProperty(
        name="Head Width (cm)",
        description="Width of the head, ear to ear, when the size is fitted",
        default=25.0,
        min=0.1,
        soft_max=60.0,
    )
    faces: EnumProperty(
        name="Faces",
        items=(
            (
                "AUTO",
                "Automatic",
                "Reconstructions cleaned up; OBJ/PLY/glTF meshes kept as they are",
            ),
            ("CLEAN", "Clean Up", "Largest piece, triangles, vertex colours (for reconstructions)"),
            (
                "KEEP",
                "Keep as in File",
                "Faces, UVs and materials as Blender's importer reads them",
            ),
        ),
        default="AUTO",
    )
    shading: EnumProperty(
        name="Shading",
        items=(
            ("AUTO", "Automatic", "Smooth for reconstructions; a kept mesh keeps the file's"),
            ("SMOOTH", "Smooth", "Smooth-shade every face"),
            ("FLAT", "Flat", "Flat-shade every face"),
            ("FILE", "As in File", "Keep the file's shading (meshes kept as in the file)"),
        ),
        default="AUTO",
    )
    face_budget: IntProperty(
        name="Face Budget", description="Most triangles to keep (0: keep all)", default=0, min=0
    )
    use_colors: BoolProperty(name="Colours", description="Import vertex colours", default=True)
    smooth_iterations: IntProperty(
        name="Smoothing", description="Taubin smoothing passes", default=0, min=0, max=50
    )
    downsample: IntProperty(
        name="Downsample",
        description="Mesh every n-th voxel; for volumes too large for memory",
        default=1,
        min=1,
        max=16,
    )
    grid_resolution: IntProperty(
        name="Triplane Grid",
        description="Sampling grid for triplanes",
        default=256,
        min=16,
        max=1024,
    )
    box_size: FloatProperty(
        name="EG3D Box Size",
        description="Side of the cube an EG3D .mrc covers (not stored in the file); 0: 1.0 (FFHQ)",
        default=0.0,
        min=0.0,
    )
    use_project_portrait: BoolProperty(
        name="Project Portrait",
        description="Project the front portrait image onto the surfaces it sees",
        default=False,
    )
    portrait_path: StringProperty(
        name="Portrait Image",
        description="Front view image (PAniC-3D: ortho/.../front.png; found automatically)",
        subtype="FILE_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="",
    )
    use_attach_to_head: BoolProperty(
        name="Attach to Head Bone",
        description="Parent to the head bone of the selected armature, placed at the head",
        default=False,
    )
    head_bone: StringProperty(
        name="Head Bone", description="Bone name (empty: find the head bone)", default=""
    )

    def draw(self, context):
        layout = self.layout
        description = _describe(self.filepath)
        if description:
            box = layout.box()
            box.label(text="Detected:", icon="INFO")
            for line in description.split(": ", 1):
                box.label(text=line)
        col = layout.column(heading="Surface")
        col.prop(self, "use_auto_level")
        sub = col.row()
        sub.enabled = not self.use_auto_level
        sub.prop(self, "level")
        col.prop(self, "smooth_iterations")
        col.prop(self, "face_budget")
        col.prop(self, "downsample")
        col.prop(self, "grid_resolution")
        col.prop(self, "box_size")
        col = layout.column(heading="Look")
        col.prop(self, "size_mode")
        sub = col.row()
        sub.enabled = self.size_mode != "KEEP"
        sub.prop(self, "head_width_cm")
        col.prop(self, "faces")
        col.prop(self, "shading")
        col.prop(self, "use_colors")
        col.prop(self, "use_project_portrait")
        sub = col.column()
        sub.enabled = self.use_project_portrait
        sub.prop(self, "portrait_path", text="")
        col = layout.column(heading="Rig")
        col.prop(self, "use_attach_to_head")
        sub = col.column()
        sub.enabled = self.use_attach_to_head
        sub.prop(self, "head_bone")

    # How the file browser and the modal job meet: ``invoke`` is ImportHelper's (it opens
    # the file browser and returns RUNNING_MODAL); once the artist picks a file, Blender
    # calls ``execute`` on the same operator, with ``options.is_invoke`` still set. That
    # ``execute`` starts the modal job itself (timer + modal handler, as Blender's
    # "Operator Modal Timer" template does from execute). Scripts, the redo panel and
    # background runs call ``execute`` without invoke (or without a window) and get the
    # same job run to the end synchronously.
    def invoke(self, context, event):
        return ImportHelper.invoke(self, context, event)

    def execute(self, context):
        self._plan = None
        modal = (
            self.options.is_invoke
            and not self.options.is_repeat
            and context.window is not None
            and not bpy.app.background
        )
        if modal:
            return ModalJobOperator.invoke(self, context, None)
        return self._after(context, ModalJobOperator.execute(self, context))

    def modal(self, context, event):
        return self._after(context, ModalJobOperator.modal(self, context, event))

    def _after(self, context, result):
        """Select the new head once the guard has put the rest of the scene back."""
        plan = getattr(self, "_plan", None)
        if result != {"FINISHED"} or plan is None or plan.obj is None:
            return result
        for other in context.selected_objects:
            other.select_set(False)
        plan.obj.select_set(True)
        context.view_layer.objects.active = plan.obj
        for note in plan.notes:
            self.report({"WARNING"}, note)
        return result

    def _options(self):

        return PortraitImportOptions(
            level=None if self.use_auto_level else self.level,
            # -1: decided by the file's kind (plan_portrait_import), 0: file units
            head_width_cm={"AUTO": -1.0, "FIT": self.head_width_cm, "KEEP": 0.0}[self.size_mode],
            face_budget=self.face_budget,
            colors=self.use_colors,
            smooth_iterations=self.smooth_iterations,
            downsample=self.downsample,
            grid_resolution=self.grid_resolution,
            box_size=self.box_size,
        )

    def make_job(self, context, guard):

        self._plan = plan_portrait_import(
            self.filepath,
            self._options(),
            context.collection,
            location=context.scene.cursor.location,
            project_portrait=self.use_project_portrait,
            portrait_path=self.portrait_path,
            armature=self._armature(context),
            head_bone=self.head_bone,
            faces=self.faces,
            shading=self.shading,
        )
        return portrait_import_job(self._plan, guard)

    def _armature(self, context):
        if not self.use_attach_to_head:
            return None
        candidates = [o for o in context.selected_objects if o.type == "ARMATURE"]
        active = context.view_layer.objects.active
        if active is not None and active.type == "ARMATURE":
            candidates.insert(0, active)
        if not candidates:
            raise AniRenderError(
                "Attach to Head Bone: select the character's armature before importing."
            )
        return candidates[0]
