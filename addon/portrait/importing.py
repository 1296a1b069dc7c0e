"""Importing a portrait reconstruction as a ``Job``: plain data off the main thread,
Blender data on it.

Reading and meshing a volume (numpy/scikit-image in ``models.recon``) runs in a worker
thread, one stage per task so Esc is honoured between them; mesh files (OBJ/PLY/glTF)
need Blender's own importers and are read on the main thread. The mesh object is built
in the job's last step, which runs together with the job's end, so a cancelled job has
added nothing and a finished one has kept its object (``guard.keep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import bpy
from mathutils import Vector

from ...errors import AniRenderError
from ...models.recon.data import MESH_FILE_KINDS
from ...models.recon.detect import detect_portrait_format
from ...models.recon.meshing import front_projection, vertex_normals
from ...models.recon.portrait import (
    clean_up,
    finish_portrait,
    fit_to_size,
    read_portrait_source,
)
from ..core.jobs import Job
from . import meshes


@dataclass
class PortraitImport:
    """One import: what to read, where the head goes, and (when done) what was made."""

    path: Path
    fmt: object  # models.recon.data.PortraitFormat
    options: object  # models.recon.PortraitImportOptions
    collection: object
    location: tuple = (0.0, 0.0, 0.0)
    image_path: Path | None = None  # front portrait to project, if any
    armature: object = None
    bone_name: str | None = None
    obj: object = None  # the new head object, once built
    notes: list = field(default_factory=list)
    #: keep an OBJ/PLY/glTF mesh as the file has it (faces, UVs, materials) instead of
    #: cleaning it up as a reconstruction (largest piece, triangles, vertex colours)
    keep_file_mesh: bool = False
    #: "SMOOTH" or "FLAT" sets the faces' shading; "FILE" keeps what the file says
    shading: str = "SMOOTH"


def guess_portrait_image(path: Path) -> Path | None:
    """PAniC-3D writes marching_cubes/.../front.pkl next to ortho/.../front.png."""
    candidates = [path.with_suffix(".png")]
    parts = list(path.parts)
    if "marching_cubes" in parts:
        parts[parts.index("marching_cubes")] = "ortho"
        candidates.append(Path(*parts).with_suffix(".png"))
    return next((c for c in candidates if c.is_file()), None)


def plan_portrait_import(
    filepath,
    options,
    collection,
    location=(0.0, 0.0, 0.0),
    project_portrait: bool = False,
    portrait_path: str = "",
    armature=None,
    head_bone: str = "",
    faces: str = "AUTO",
    shading: str = "AUTO",
) -> PortraitImport:
    """Every cheap check, before anything slow starts or anything is added.

    ``faces`` and ``shading`` (and ``options.head_width_cm`` < 0 for the size) take
    "AUTO": right for a reconstruction (cleaned up, triangles, smooth, fitted to a head's
    size), and for an ordinary OBJ/PLY/glTF mesh the file as it is (faces, shading and
    scale kept).
    """

    path = Path(bpy.path.abspath(str(filepath)))
    fmt = detect_portrait_format(path)
    mesh_file = fmt.kind in MESH_FILE_KINDS
    keep_file_mesh = mesh_file and faces in {"AUTO", "KEEP"}
    if shading == "AUTO":
        shading = "FILE" if keep_file_mesh else "SMOOTH"
    if shading == "FILE" and not keep_file_mesh:
        shading = "SMOOTH"  # a cleaned-up mesh has no shading of its own to keep
    if options.head_width_cm < 0:  # AUTO size
        options = replace(options, head_width_cm=0.0 if mesh_file else 25.0)
    image_path = None
    if project_portrait and keep_file_mesh:
        raise AniRenderError(
            f"{path.name}: Project Portrait works on a cleaned-up mesh; set Faces to "
            "Clean Up, or import without projecting."
        )
    if project_portrait:
        image_path = portrait_path or guess_portrait_image(path)
        if not image_path:
            raise AniRenderError(
                f"{path.name}: Project Portrait needs the front view image; choose it in "
                "Portrait Image."
            )
        image_path = Path(bpy.path.abspath(str(image_path)))
        if not image_path.is_file():
            raise AniRenderError(
                f"Portrait image {image_path}: no such file; choose the front view PNG."
            )
    bone_name = None
    if armature is not None:
        bone_name = head_bone or meshes.find_head_bone(armature)
        if armature.data.bones.get(bone_name) is None:
            raise AniRenderError(f"Armature {armature.name} has no bone named {bone_name!r}.")
    plan = PortraitImport(
        path, fmt, options, collection, tuple(location), image_path, armature, bone_name
    )
    plan.keep_file_mesh, plan.shading = keep_file_mesh, shading
    return plan


def portrait_import_job(plan: PortraitImport, guard) -> Job:
    """The import as a Job; ``max_pending=1`` makes each step wait for its worker task."""
    total = 4 if plan.image_path is not None else 3
    return Job(
        f"Import {plan.path.name}", lambda job: _steps(job, plan, guard), total, max_pending=1
    )


def _steps(job: Job, plan: PortraitImport, guard):

    path, options = plan.path, plan.options
    result = {}
    if plan.keep_file_mesh:
        yield f"Reading {path.name}"
        # Blender's importer, then the object as made: one step, so Esc cannot split them
        obj = meshes.import_mesh_object(path, plan.fmt.kind, path.stem, plan.collection)
        _finish(plan, obj, guard, notes=[])
        job.summary = f"Imported {obj.name}: {len(obj.data.polygons)} faces, as in the file"
        return
    if plan.fmt.kind in MESH_FILE_KINDS:
        raw = meshes.read_mesh_file(path, plan.fmt.kind)  # Blender's importer: main thread
        yield f"Read {path.name}"
        job.submit(
            lambda: fit_to_size(clean_up(raw, options), options.head_width_cm),
            then=lambda mesh: result.update(mesh=mesh),
        )
    else:
        job.submit(
            read_portrait_source, path, plan.fmt, options, then=lambda m: result.update(raw=m)
        )
        yield f"Reading and meshing {path.name}"
        job.submit(
            finish_portrait, path, result.pop("raw"), options, then=lambda m: result.update(mesh=m)
        )
    yield "Cleaning the mesh"
    mesh = result["mesh"]
    projection = None
    if plan.image_path is not None:
        if len(mesh.faces) == 0:
            raise AniRenderError(f"{path.name}: a point cloud cannot carry a portrait.")
        job.submit(_front_projection, mesh, then=lambda p: result.update(projection=p))
        yield "Projecting the portrait"
        projection = result["projection"]
    yield "Building the mesh"
    # No yield after this point: the build and the job's end happen in one step, so Esc
    # never falls between an object being made and it being kept.
    obj = meshes.create_portrait_object(path.stem, mesh, plan.collection)
    if projection is not None:
        portrait = meshes.load_portrait_image(plan.image_path)
        meshes.add_front_projection(obj, *projection, portrait)
        guard.keep(portrait)
    _finish(plan, obj, guard, list(mesh.notes))
    job.summary = f"Imported {obj.name}: {len(obj.data.polygons)} faces"


def _finish(plan: PortraitImport, obj, guard, notes: list) -> None:
    """Size (for a kept file mesh), shading, placement; the object is kept."""
    width = plan.options.head_width_cm
    if plan.keep_file_mesh and width > 0:
        corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
        span = max(c.x for c in corners) - min(c.x for c in corners)
        if span > 0:
            obj.scale = obj.scale * (width / 100.0 / span)
    if plan.shading in {"SMOOTH", "FLAT"}:
        meshes.set_shading(obj.data, plan.shading == "SMOOTH")
    if plan.bone_name is not None:
        meshes.place_at_head_bone(obj, plan.armature, plan.bone_name)
    else:
        obj.location = plan.location
    guard.keep(obj)
    plan.obj, plan.notes = obj, notes


def _front_projection(mesh):
    """(uv, facing) of the front portrait over the mesh (numpy; worker thread)."""

    if mesh.box is not None:
        centre, side = mesh.box
    else:
        low, high = mesh.verts.min(0), mesh.verts.max(0)
        centre, side = (low + high) / 2, float((high - low)[[0, 2]].max())
    normals = vertex_normals(mesh.verts, mesh.faces)
    return front_projection(mesh.verts, normals, centre, side)
