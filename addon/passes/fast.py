"""Pass rendering without a renderer: evaluated meshes from the depsgraph, rasterised.

Per frame, every visible mesh of the character is evaluated (armature, shape keys,
modifiers with their viewport settings), its loop triangles, canonical colours, active
render UVs and corner normals are read with ``foreach_get``, and ``models.raster`` draws
them from the camera (pixel-centre samples, perspective-correct, nearest surface wins),
the same rule Cycles follows with one centred sample per pixel. Where this Python has no
torch (Blender's own), ``models.raster_numpy`` draws them by the same rule.
"""

from __future__ import annotations

import numpy as np

from ...errors import AniRenderError
from . import canonical
from .camera import rigid_inverse


def _raster_module():
    """``models.raster`` (torch: CUDA where there is one), else its numpy twin
    ``models.raster_numpy`` where this Python has no torch (Blender's own)."""
    try:
        from ...models import raster  # torch lives there; imported only when asked for
    except ImportError:
        from ...models import raster_numpy as raster  # numpy only: no torch here
    return raster


def _array(values) -> np.ndarray:
    """A torch tensor (on any device) or a numpy array, as numpy."""
    return values.cpu().numpy() if hasattr(values, "cpu") else np.asarray(values)


class FastBackend:
    def __init__(self, renderer, raster=None):
        raster = raster or _raster_module()
        self.renderer = renderer
        self.raster = raster
        self.device = raster.pick_device()
        self._static = {}  # per mesh: what stays the same from frame to frame

    def render(self, frame: int) -> dict[str, np.ndarray]:
        renderer = self.renderer
        passes = renderer.request.passes
        height, width = renderer.height, renderer.width
        with renderer.blender_busy():  # Blender's part: the rest is numpy and torch
            depsgraph = renderer.set_frame(frame)
            to_clip, to_world = renderer.camera_matrices(depsgraph)
            surface = _gather(depsgraph, renderer.visible_meshes(), passes, self._static)
            orthographic = "normal" in passes and renderer.camera.data.type == "ORTHO"
        if surface is None:
            return {name: np.zeros((height, width, 4), np.float32) for name in passes}

        vertices, tris = surface["vertices"], surface["tris"]
        to_clip = to_clip.astype(np.float32)
        # projected once per vertex, then spread to the triangles' corners (``np.take``
        # is several times faster than ``array[tris]``)
        clip = np.take(_affine(vertices, to_clip[:, :3], to_clip[:, 3]), tris, axis=0)
        view = rigid_inverse(to_world)
        rotation = view[:3, :3]
        # only the corner values the requested passes need are interpolated
        columns, channels = {}, []
        if "udp" in passes:
            columns["udp"] = _add(channels, surface["canonical"])
        if "uv" in passes:
            columns["uv"] = _add(channels, surface["uv"])
        if "normal" in passes:
            columns["normal"] = _add(channels, _affine(surface["normal"], rotation))
        if "normal" in passes or "depth" in passes:
            position = np.take(_affine(vertices, rotation, view[:3, 3]), tris, axis=0)
            columns["position"] = _add(channels, position)
        threads = 1 if self.device.type == "cpu" else None  # see models.raster.rasterise
        with self.raster.cpu_threads(threads):
            fragments = self.raster.rasterise(clip, height, width, device=self.device)
            hits = fragments.hits()  # the covered pixels, flat indices
            values = None
            if channels:
                values = _array(fragments.interpolate_at(np.concatenate(channels, axis=2), hits))
            tri = _array(fragments.triangle.reshape(-1)[hits]) if "normal" in passes else None
            hits = _array(hits)
        # every image is background 0 but at the covered pixels: colour and occupancy 1
        images = {}
        for name in passes:
            covered = np.ones((hits.size, 4), np.float32)
            if name == "udp":
                covered[:, :3] = values[:, columns["udp"]]
            elif name == "uv":
                covered[:, :2] = values[:, columns["uv"]]
                covered[:, 2] = 0.0
            elif name == "normal":
                covered[:, :3] = _facing_normals(
                    values[:, columns["normal"]], values[:, columns["position"]],
                    tri, surface["face"], rotation, orthographic,
                )  # fmt: skip
            elif name == "depth":
                covered[:, :3] = 0.0 - values[:, columns["position"]][:, 2:3]
            image = np.zeros((height * width, 4), np.float32)
            image[hits] = covered
            images[name] = image.reshape(height, width, 4)
        return images

    def wrote_exr(self, name: str, frame: int) -> bool:
        return False

    def close(self):
        pass


def _facing_normals(normal, position, tri, geometric, rotation, orthographic):
    """Unit shading normals (N, 3) at covered pixels, turned towards the camera where the
    face looks away (Cycles)."""
    n = normal.copy()
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    face = geometric[tri] @ rotation.T  # camera space geometric normals
    if orthographic:
        ray = np.broadcast_to([0.0, 0.0, -1.0], face.shape)
    else:
        ray = position  # from the camera (origin) to the surface
    back = (face * ray).sum(axis=1) > 0
    n[back] *= -1.0
    return n


def _affine(points: np.ndarray, linear: np.ndarray, offset=None) -> np.ndarray:
    """``points @ linear.T + offset`` over the last axis, as one 2-D product (numpy runs a
    3-D ``@`` as one tiny product per row)."""
    flat = points.reshape(-1, points.shape[-1]) @ linear.T.astype(points.dtype)
    if offset is not None:
        flat += offset.astype(points.dtype)
    return flat.reshape(*points.shape[:-1], linear.shape[0])


def _add(channels: list, values: np.ndarray) -> slice:
    """Append (T, 3, C) corner values; return the slice of their channels."""
    first = sum(c.shape[2] for c in channels)
    channels.append(values)
    return slice(first, first + values.shape[2])


def _gather(depsgraph, meshes, passes, cache=None):
    """What the passes need of all evaluated ``meshes``: world ``vertices`` (V, 3) and the
    triangles ``tris`` (T, 3) indexing them, always; per-corner (T, 3, C) ``canonical``
    colours, ``uv``, world ``normal`` and per-face world ``face`` normals (T, 3) only when
    a requested pass needs them. None when there are no triangles.

    ``cache`` (a dict kept between frames) holds what does not move: triangles, canonical
    colours and UVs per mesh, reused while the mesh keeps its vertex/loop/triangle counts.
    """
    cache = {} if cache is None else cache
    parts = []
    first_vertex = 0
    for mesh_obj in meshes:
        evaluated = mesh_obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            mesh.calc_loop_triangles()
            key = (len(mesh.vertices), len(mesh.loops), len(mesh.loop_triangles))
            if key[2] == 0:
                continue
            _check_canonical(mesh, passes, mesh_obj.name)
            static = cache.get(mesh_obj.name)
            if static is None or static["key"] != key:
                static = cache[mesh_obj.name] = _static_arrays(mesh, key, passes, mesh_obj.name)
            positions = _read(mesh.vertices, "co", key[0], 3)
            normals = (
                _read(mesh.corner_normals, "vector", key[1], 3) if "normal" in passes else None
            )
        finally:
            evaluated.to_mesh_clear()
        matrix = np.array(evaluated.matrix_world, dtype=np.float32)
        world = positions @ matrix[:3, :3].T + matrix[:3, 3]
        out = {"vertices": world, "tris": static["tris"] + first_vertex}
        first_vertex += len(world)
        for name in ("canonical", "uv"):
            if name in static:
                out[name] = static[name]
        if normals is not None:
            corners = np.take(world, static["tris"], axis=0)
            normal_matrix = np.array(evaluated.matrix_world.to_3x3().inverted_safe()).T
            out["normal"] = np.take(normals @ normal_matrix.T, static["loops"], axis=0)
            out["face"] = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        parts.append(out)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _check_canonical(mesh, passes, name):
    if "udp" not in passes:
        return
    attribute = mesh.attributes.get(canonical.ATTRIBUTE)
    if attribute is None or attribute.domain != "POINT":
        raise AniRenderError(
            f'Mesh "{name}" lost its canonical colours; run Set Canonical Pose again.'
        )


def _static_arrays(mesh, key, passes, name):
    """Triangles and the per-corner values that do not change from frame to frame."""
    vertices, loops, count = key
    tris = _read(mesh.loop_triangles, "vertices", count, 3, np.int32)
    tri_loops = _read(mesh.loop_triangles, "loops", count, 3, np.int32)
    static = {"key": key, "tris": tris, "loops": tri_loops}
    if "udp" in passes:
        attribute = mesh.attributes[canonical.ATTRIBUTE]
        static["canonical"] = _read(attribute.data, "vector", vertices, 3)[tris]
    if "uv" in passes:
        layer = next((uv for uv in mesh.uv_layers if uv.active_render), mesh.uv_layers.active)
        if layer is not None:
            static["uv"] = _read(layer.uv, "vector", loops, 2)[tri_loops]
        else:
            static["uv"] = np.zeros((count, 3, 2))
    return static


def _read(collection, attr, count, width, dtype=np.float32):
    flat = np.empty(count * width, dtype=dtype)
    collection.foreach_get(attr, flat)
    return flat.reshape(count, width)
