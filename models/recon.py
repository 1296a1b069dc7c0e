"""Portrait reconstructions -> clean meshes in Blender's frame, sized for a character.

The one entry point for volumes and PAniC pickles is ``prepare_portrait(path, options)``;
mesh files (OBJ/PLY/GLB) are imported by Blender in ``addon.meshes`` and then pass
through ``clean_up`` and ``fit_to_size`` like everything else.

Frames, fixed once:
- Source frame (all readers, all files this project writes): +y up, the face looks
  toward +z, +x is image right.
- Blender frame: Z up, the face looks toward -Y: (x, y, z) -> (x, -z, y). That is a
  rotation (determinant +1), so triangle winding and outward normals are kept.
- Size: with ``head_width_cm`` > 0 the mesh is scaled so its width along X (ear to ear,
  ears included) is that many centimetres, and moved so the bottom centre of its bounding
  box sits at the object origin (where a head bone's head goes). With 0, file units and
  positions are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import AniRenderError
from .recon_mesh import (
    decimate_to_budget,
    keep_largest_piece,
    smooth_taubin,
    volume_to_surface,
)
from .recon_readers import (
    MESH_FILE_KINDS,
    PortraitFormat,
    PortraitMesh,
    detect_portrait_format,
    read_density_grid,
    read_eg3d_mrc,
    read_panic_pickle,
    read_splat_ply,
    read_triplane,
)

SOURCE_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass
class PortraitImportOptions:
    level: float | None = None  # None: the format's own surface level
    head_width_cm: float = 25.0  # 0 keeps file units
    face_budget: int = 0  # 0 keeps every triangle
    colors: bool = True
    smooth_iterations: int = 0
    downsample: int = 1  # mesh every n-th voxel of large volumes
    grid_resolution: int = 256  # triplane sampling grid
    box_size: float = 0.0  # EG3D cube side; 0 = 1.0 (FFHQ)
    keep_largest: bool = True
    memory_limit: int | None = None  # bytes; None = what the machine has free


_PACKAGES = {  # format -> (import name, pip name) it needs beyond numpy
    "eg3d_mrc": [("skimage", "scikit-image"), ("scipy", "scipy"), ("mrcfile", "mrcfile")],
    "density_grid": [("skimage", "scikit-image"), ("scipy", "scipy")],
    "triplane": [("skimage", "scikit-image"), ("scipy", "scipy"), ("torch", "torch")],
    "mesh": [("scipy", "scipy")],
}


def require_packages(kind: str):
    """Name the missing package and how to get it (Blender ships only numpy)."""
    import importlib.util
    import sys

    needed = _PACKAGES.get(kind, []) + (
        [("safetensors", "safetensors")] if kind == "triplane" else []
    )
    missing = [pip for module, pip in needed if importlib.util.find_spec(module) is None]
    if missing:
        raise AniRenderError(
            f"Importing this reconstruction needs {', '.join(missing)}, which this Python does "
            f"not have. Install with: {sys.executable} -m pip install {' '.join(missing)} "
            "(or run `anirender import portrait` from the AniRender environment)."
        )


def describe_portrait(path) -> str:
    """One line for the file browser: what the importer sees in this file."""
    try:
        return detect_portrait_format(path).description
    except AniRenderError as exc:
        return str(exc)


def read_portrait_source(path, fmt: PortraitFormat, options: PortraitImportOptions):
    """Any non-mesh-file format -> PortraitMesh in the source frame (not yet cleaned)."""
    if options.downsample < 1:
        raise AniRenderError("Downsample must be 1 or more.")
    require_packages(fmt.kind)
    if fmt.kind == "panic_pickle":
        return read_panic_pickle(path)
    if fmt.kind == "splat_ply":
        return read_splat_ply(path)
    if fmt.kind == "eg3d_mrc":
        volume = read_eg3d_mrc(path, options.box_size, options.downsample, options.memory_limit)
    elif fmt.kind == "density_grid":
        volume = read_density_grid(path, options.downsample, options.memory_limit)
    elif fmt.kind == "triplane":
        volume = read_triplane(path, options.grid_resolution, options.memory_limit)
    else:
        raise AniRenderError(f"{Path(path).name}: {fmt.description} is read by Blender.")
    if not options.colors:
        volume.colors, volume.color_at = None, None
    step = 1
    if options.face_budget:
        # a coarser marching-cubes step is the cleanest decimation a volume can get
        # a step-2 pass is ~8x cheaper and has ~1/4 of the full triangle count
        _, faces, _ = volume_to_surface(
            replace(volume, colors=None, color_at=None), options.level, 2
        )
        step = max(1, int(np.sqrt(4 * len(faces) / options.face_budget)))
    verts, faces, colors = volume_to_surface(volume, options.level, step)
    return PortraitMesh(verts, faces, volume.source, colors, box=volume.box)


def clean_up(mesh: PortraitMesh, options: PortraitImportOptions) -> PortraitMesh:
    """Largest piece, smoothing, decimation to the face budget (any frame)."""
    require_packages("mesh")
    verts, faces, colors = mesh.verts, mesh.faces, mesh.colors
    if not options.colors:
        colors = None
    if len(faces):
        if options.keep_largest:
            verts, faces, colors = keep_largest_piece(verts, faces, colors)
        verts = smooth_taubin(verts, faces, options.smooth_iterations)
        verts, faces, colors = decimate_to_budget(verts, faces, colors, options.face_budget)
    return replace(mesh, verts=verts, faces=faces, colors=colors)


def source_to_blender(mesh: PortraitMesh) -> PortraitMesh:
    box = None
    if mesh.box is not None:
        box = (SOURCE_TO_BLENDER @ np.asarray(mesh.box[0], float), mesh.box[1])
    return replace(mesh, verts=mesh.verts @ SOURCE_TO_BLENDER.T, box=box)


def blender_to_source(verts: np.ndarray) -> np.ndarray:
    return verts @ SOURCE_TO_BLENDER  # the inverse of a rotation is its transpose


def fit_to_size(mesh: PortraitMesh, head_width_cm: float) -> PortraitMesh:
    """Scale to the head width (metres, Blender frame) with the bottom centre at 0."""
    if not head_width_cm or head_width_cm <= 0 or len(mesh.verts) == 0:
        return mesh
    low, high = mesh.verts.min(0), mesh.verts.max(0)
    width = float(high[0] - low[0])
    if width <= 0:
        raise AniRenderError(f"{mesh.source} mesh has no width; cannot size it.")
    scale = head_width_cm / 100.0 / width
    anchor = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    box = None
    if mesh.box is not None:
        box = ((np.asarray(mesh.box[0]) - anchor) * scale, mesh.box[1] * scale)
    return replace(mesh, verts=(mesh.verts - anchor) * scale, box=box)


def prepare_portrait(path, options: PortraitImportOptions | None = None):
    """Read, mesh, clean, turn and size a reconstruction that is not a mesh file.

    Returns (PortraitFormat, PortraitMesh in the Blender frame)."""
    options = options or PortraitImportOptions()
    path = Path(path)
    fmt = detect_portrait_format(path)
    if fmt.kind in MESH_FILE_KINDS:
        raise AniRenderError(f"{path.name}: {fmt.description} must be read through Blender.")
    mesh = finish_portrait(path, read_portrait_source(path, fmt, options), options)
    return fmt, mesh


def finish_portrait(path, mesh: PortraitMesh, options: PortraitImportOptions) -> PortraitMesh:
    """The second half of ``prepare_portrait`` (clean, turn, size); a separate stage so
    Blender's import job can check for Esc between reading and cleaning."""
    mesh = clean_up(mesh, options)
    if len(mesh.verts) == 0:
        raise AniRenderError(f"{Path(path).name}: nothing left to import (no vertices).")
    return fit_to_size(source_to_blender(mesh), options.head_width_cm)


# --------------------------------------------------------------------- writing files
# Files are written in the source frame (y up, facing +z), the frame of glTF and of
# Blender's OBJ exporter defaults, so Blender's importers bring them back upright.


def _export_arrays(mesh: PortraitMesh):
    verts = blender_to_source(mesh.verts).astype(np.float32)
    colors = mesh.colors
    return verts, mesh.faces.astype(np.int64), colors


def write_obj(path, mesh: PortraitMesh):
    """OBJ with per-vertex colours as ``v x y z r g b`` (read by Blender, MeshLab, TripoSR)."""
    verts, faces, colors = _export_arrays(mesh)
    with open(path, "w") as f:
        f.write("# AniRender portrait import (y up, facing +z)\n")
        if colors is not None:
            np.savetxt(f, np.hstack([verts, colors]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        else:
            np.savetxt(f, verts, fmt="v %.6f %.6f %.6f")
        if len(faces):
            np.savetxt(f, faces + 1, fmt="f %d %d %d")


def write_ply(path, mesh: PortraitMesh):
    """Binary little-endian PLY with uchar vertex colours."""
    verts, faces, colors = _export_arrays(mesh)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(verts), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = verts.T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(verts)}"]
    header += ["property float x", "property float y", "property float z"]
    if colors is not None:
        rgb = np.clip(np.round(colors * 255), 0, 255).astype(np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = rgb.T
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    face = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vertex.tobytes())
        f.write(face.tobytes())


def write_glb(path, mesh: PortraitMesh):
    """Binary glTF 2.0: one mesh with POSITION, NORMAL, COLOR_0 and indices."""
    import json
    import struct

    from .recon_mesh import vertex_normals

    verts, faces, colors = _export_arrays(mesh)
    normals = vertex_normals(verts.astype(np.float64), faces).astype(np.float32)
    blobs, views, accessors = [], [], []

    def add(array, target, component, kind, minmax=False):
        data = np.ascontiguousarray(array).tobytes()
        offset = sum(len(b) for b in blobs)
        blobs.append(data + b"\0" * (-len(data) % 4))
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": target})
        accessor = {
            "bufferView": len(views) - 1,
            "componentType": component,
            "count": int(len(array)),
            "type": kind,
        }
        if minmax:
            accessor["min"] = array.min(0).tolist()
            accessor["max"] = array.max(0).tolist()
        accessors.append(accessor)
        return len(accessors) - 1

    attributes = {
        "POSITION": add(verts, 34962, 5126, "VEC3", minmax=True),
        "NORMAL": add(normals, 34962, 5126, "VEC3"),
    }
    if colors is not None:
        # glTF vertex colours are linear; ours are display (sRGB) values
        linear = np.where(colors <= 0.04045, colors / 12.92, ((colors + 0.055) / 1.055) ** 2.4)
        attributes["COLOR_0"] = add(linear.astype(np.float32), 34962, 5126, "VEC3")
    primitive = {"attributes": attributes, "mode": 4 if len(faces) else 0}
    if len(faces):
        primitive["indices"] = add(faces.astype(np.uint32).reshape(-1), 34963, 5125, "SCALAR")
    binary = b"".join(blobs)
    gltf = {
        "asset": {"version": "2.0", "generator": "AniRender portrait import"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "Portrait"}],
        "meshes": [{"name": "Portrait", "primitives": [primitive]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    with open(path, "wb") as f:
        f.write(struct.pack("<III", 0x46546C67, 2, 12 + 8 + len(text) + 8 + len(binary)))
        f.write(struct.pack("<II", len(text), 0x4E4F534A) + text)
        f.write(struct.pack("<II", len(binary), 0x004E4942) + binary)


MESH_WRITERS = {".obj": write_obj, ".ply": write_ply, ".glb": write_glb}
