"""Pass rendering without a renderer: evaluated meshes from the depsgraph, rasterised.

Per frame, every visible mesh of the character is evaluated (armature, shape keys,
modifiers with their viewport settings), its loop triangles, canonical colours, active
render UVs and corner normals are read with ``foreach_get``, and ``models.raster`` draws
them from the camera (pixel-centre samples, perspective-correct, nearest surface wins),
the same rule Cycles follows with one centred sample per pixel.
"""

from __future__ import annotations

import numpy as np

from . import canonical
from .passes import rigid_inverse


class FastBackend:
    def __init__(self, renderer):
        from ..models import raster  # torch lives there; imported only when asked for

        self.renderer = renderer
        self.raster = raster
        self.device = raster.pick_device()

    def render(self, frame: int) -> dict[str, np.ndarray]:
        renderer = self.renderer
        depsgraph = renderer.set_frame(frame)
        to_clip, to_world = renderer.camera_matrices(depsgraph)
        passes = renderer.request.passes
        surface = _gather(depsgraph, renderer.visible_meshes(), "udp" in passes)
        height, width = renderer.height, renderer.width
        if surface is None:
            return {name: np.zeros((height, width, 4), np.float32) for name in passes}
        corners, canonical_colours, uvs, normals, geometric = surface

        world_h = np.concatenate([corners, np.ones_like(corners[..., :1])], axis=2)
        clip = world_h @ to_clip.T
        view = rigid_inverse(to_world)
        camera_pos = world_h @ view.T  # (T, 3, 4) camera space
        rotation = view[:3, :3]
        # corner values to interpolate: canonical 3 | uv 2 | normal 3 | camera position 3
        values = np.concatenate(
            [canonical_colours, uvs, normals @ rotation.T, camera_pos[..., :3]], axis=2
        )
        threads = 1 if self.device.type == "cpu" else None  # see models.raster.rasterise
        with self.raster.cpu_threads(threads):
            fragments = self.raster.rasterise(clip, height, width, device=self.device)
            image = fragments.interpolate(values).cpu().numpy()
            hit = fragments.coverage.cpu().numpy()
            tri = fragments.triangle.cpu().numpy()
        occupancy = hit[..., None].astype(np.float32)

        images = {}
        for name in passes:
            if name == "udp":
                rgb = image[..., 0:3]
            elif name == "uv":
                rgb = np.concatenate([image[..., 3:5], np.zeros_like(image[..., :1])], axis=2)
            elif name == "normal":
                ortho = renderer.camera.data.type == "ORTHO"
                rgb = _facing_normals(image[..., 5:8], image[..., 8:11], tri, hit, geometric,
                                      rotation, ortho)  # fmt: skip
            elif name == "depth":
                rgb = np.repeat(-image[..., 10:11], 3, axis=2)
            else:
                rgb = np.ones_like(image[..., :3])
            pixels = np.concatenate([rgb * occupancy, occupancy], axis=2)
            images[name] = pixels.astype(np.float32)
        return images

    def wrote_exr(self, name: str, frame: int) -> bool:
        return False

    def close(self):
        pass


def _facing_normals(normal, position, tri, hit, geometric, rotation, orthographic):
    """Unit shading normals turned towards the camera where the face looks away (Cycles)."""
    out = np.zeros_like(normal)
    n = normal[hit]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    face = geometric[tri[hit]] @ rotation.T  # camera space geometric normals
    if orthographic:
        ray = np.broadcast_to([0.0, 0.0, -1.0], face.shape)
    else:
        ray = position[hit]  # from the camera (origin) to the surface
    back = (face * ray).sum(axis=1) > 0
    n[back] *= -1.0
    out[hit] = n
    return out


def _gather(depsgraph, meshes, need_canonical):
    """Per-corner world positions, canonical colours, UVs, normals (T, 3, C) and per-face
    geometric normals (T, 3) of all ``meshes``, evaluated; None when there are none."""
    parts = []
    for mesh_obj in meshes:
        evaluated = mesh_obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            part = _mesh_arrays(mesh, need_canonical, mesh_obj.name)
        finally:
            evaluated.to_mesh_clear()
        if part is None:
            continue
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
        linear = matrix[:3, :3]
        positions, tris, loops, colours, uvs, normals = part
        world = positions @ linear.T + matrix[:3, 3]
        normal_matrix = np.array(evaluated.matrix_world.to_3x3().inverted_safe()).T
        corners = world[tris]
        face = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        parts.append((corners, colours[tris], uvs[loops], (normals @ normal_matrix.T)[loops], face))
    if not parts:
        return None
    return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))


def _mesh_arrays(mesh, need_canonical, name):
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    if count == 0:
        return None
    positions = _read(mesh.vertices, "co", len(mesh.vertices), 3)
    tris = _read(mesh.loop_triangles, "vertices", count, 3, np.int32)
    loops = _read(mesh.loop_triangles, "loops", count, 3, np.int32)
    if need_canonical:
        attribute = mesh.attributes.get(canonical.ATTRIBUTE)
        if attribute is None or attribute.domain != "POINT":
            from ..errors import AniRenderError

            raise AniRenderError(
                f'Mesh "{name}" lost its canonical colours; run Set Canonical Pose again.'
            )
        colours = _read(attribute.data, "vector", len(mesh.vertices), 3)
    else:
        colours = np.zeros((len(mesh.vertices), 3))
    uv_layer = next((uv for uv in mesh.uv_layers if uv.active_render), mesh.uv_layers.active)
    if uv_layer is not None:
        uvs = _read(uv_layer.uv, "vector", len(mesh.loops), 2)
    else:
        uvs = np.zeros((len(mesh.loops), 2))
    normals = _read(mesh.corner_normals, "vector", len(mesh.loops), 3)
    return positions, tris, loops, colours, uvs, normals


def _read(collection, attr, count, width, dtype=np.float32):
    flat = np.empty(count * width, dtype=dtype)
    collection.foreach_get(attr, flat)
    return flat.reshape(count, width).astype(np.float64 if dtype == np.float32 else np.int64)
