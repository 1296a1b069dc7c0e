"""File > Import > Portrait Reconstruction: a PAniC-3D/EG3D/triplane/mesh file as a clean,
coloured, real-size head mesh, optionally textured with the portrait and put on a rig."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from ..errors import AniRenderError

_FILTER = "*.pkl;*.pickle;*.mrc;*.map;*.npy;*.npz;*.safetensors;*.obj;*.ply;*.glb;*.gltf"
_described: dict = {}


def _describe(path: str) -> str:
    """Cached one-line description of a file (the sidebar redraws often)."""
    from ..models.recon import describe_portrait

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


def _guess_portrait_image(path: Path) -> Path | None:
    """PAniC-3D writes marching_cubes/.../front.pkl next to ortho/.../front.png."""
    candidates = [path.with_suffix(".png")]
    parts = list(path.parts)
    if "marching_cubes" in parts:
        parts[parts.index("marching_cubes")] = "ortho"
        candidates.append(Path(*parts).with_suffix(".png"))
    return next((c for c in candidates if c.is_file()), None)


class ANIRENDER_OT_import_portrait(bpy.types.Operator, ImportHelper):
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
    head_width_cm: FloatProperty(
        name="Head Width (cm)",
        description="Scale so the head is this wide, ear to ear; 0 keeps the file's units",
        default=25.0,
        min=0.0,
        soft_max=60.0,
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
        col.prop(self, "head_width_cm")
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

    def execute(self, context):
        wm = context.window_manager
        wm.progress_begin(0, 3)  # busy cursor with a counter while the volume is meshed
        try:
            obj = self._import(context)
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Imported {obj.name}: {len(obj.data.polygons)} faces")
        return {"FINISHED"}

    def _options(self):
        from ..models.recon import PortraitImportOptions

        return PortraitImportOptions(
            level=None if self.use_auto_level else self.level,
            head_width_cm=self.head_width_cm,
            face_budget=self.face_budget,
            colors=self.use_colors,
            smooth_iterations=self.smooth_iterations,
            downsample=self.downsample,
            grid_resolution=self.grid_resolution,
            box_size=self.box_size,
        )

    def _import(self, context):
        from ..addon import meshes
        from ..addon.scene import SceneGuard
        from ..models.recon import clean_up, fit_to_size, prepare_portrait
        from ..models.recon_mesh import front_projection, vertex_normals
        from ..models.recon_readers import MESH_FILE_KINDS, detect_portrait_format

        path = Path(bpy.path.abspath(self.filepath))
        options = self._options()
        armature = self._armature(context)
        fmt = detect_portrait_format(path)
        context.window_manager.progress_update(1)
        # all checks and heavy work first; nothing is added until the mesh is ready
        if fmt.kind in MESH_FILE_KINDS:
            mesh = fit_to_size(
                clean_up(meshes.read_mesh_file(path, fmt.kind), options), options.head_width_cm
            )
        else:
            fmt, mesh = prepare_portrait(path, options)
        context.window_manager.progress_update(2)
        portrait = None
        if self.use_project_portrait:
            image_path = self.portrait_path or _guess_portrait_image(path)
            if not image_path:
                raise AniRenderError(
                    f"{path.name}: Project Portrait needs the front view image; choose it in "
                    "Portrait Image."
                )
            if len(mesh.faces) == 0:
                raise AniRenderError(f"{path.name}: a point cloud cannot carry a portrait.")
        bone_name = None
        if armature is not None:
            bone_name = self.head_bone or meshes.find_head_bone(armature)
            if armature.data.bones.get(bone_name) is None:
                raise AniRenderError(f"Armature {armature.name} has no bone named {bone_name!r}.")

        with SceneGuard(context) as guard:  # removes anything half-made if a step fails
            if self.use_project_portrait:
                portrait = meshes.load_portrait_image(image_path)
            obj = meshes.create_portrait_object(path.stem, mesh, context.collection)
            if portrait is not None:
                if mesh.box is not None:
                    centre, side = mesh.box
                else:
                    low, high = mesh.verts.min(0), mesh.verts.max(0)
                    centre, side = (low + high) / 2, float((high - low)[[0, 2]].max())
                normals = vertex_normals(mesh.verts, mesh.faces)
                uv, facing = front_projection(mesh.verts, normals, centre, side)
                meshes.add_front_projection(obj, uv, facing, portrait)
                guard.keep(portrait)
            if bone_name is not None:
                meshes.place_at_head_bone(obj, armature, bone_name)
            else:
                obj.location = context.scene.cursor.location
            guard.keep(obj)
        for note in mesh.notes:
            self.report({"WARNING"}, note)
        return obj

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


def draw_import_menu(self, context):
    """File > Import entry."""
    self.layout.operator(ANIRENDER_OT_import_portrait.bl_idname, text="Portrait Reconstruction")
