"""Meshes to files Blender and other tools import: OBJ with ``v x y z r g b`` colours,
binary PLY with uchar colours, GLB with COLOR_0. All in the source frame (y up, facing
+z), which is what Blender's importers expect."""

from __future__ import annotations

import numpy as np

from .data import PortraitMesh
from .meshing import vertex_normals
from .portrait import blender_to_source


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
