"""Arrays -> Blender mesh objects and the materials that show their colours.

``create_portrait_object`` builds a mesh from (V,3)/(F,3) arrays with vertex colours in a
Color Attribute (so the head is coloured the moment it appears), ``add_front_projection``
adds the portrait-as-texture material, ``read_mesh_file`` runs Blender's own OBJ/PLY/glTF
importers and hands the result back as arrays, leaving nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from ...errors import AniRenderError
from ...models.recon.data import PortraitMesh

COLOR_ATTRIBUTE = "Col"
FACING_ATTRIBUTE = "PortraitFacing"
FRONT_UV = "PortraitFront"


def create_portrait_object(name: str, mesh: PortraitMesh, collection) -> bpy.types.Object:
    """A new object in ``collection`` with the mesh, its colours and a material."""
    data = bpy.data.meshes.new(name)
    verts = np.asarray(mesh.verts, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int32)
    data.vertices.add(len(verts))
    data.vertices.foreach_set("co", verts.reshape(-1))
    if len(faces):
        data.loops.add(faces.size)
        data.loops.foreach_set("vertex_index", faces.reshape(-1))
        data.polygons.add(len(faces))
        data.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        data.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
        data.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
    data.update()
    if data.validate(verbose=False):
        data.update()
    if mesh.colors is not None:
        set_point_colors(data, COLOR_ATTRIBUTE, mesh.colors)
        data.materials.append(vertex_color_material(f"{name} Colours", COLOR_ATTRIBUTE))
    obj = bpy.data.objects.new(name, data)
    collection.objects.link(obj)
    return obj


def set_point_colors(data, attribute_name: str, colors: np.ndarray):
    """Per-vertex display colours (sRGB, [0,1]) into a float Color Attribute."""
    attribute = data.color_attributes.get(attribute_name)
    if attribute is None:
        attribute = data.color_attributes.new(attribute_name, "FLOAT_COLOR", "POINT")
    rgba = np.ones((len(colors), 4), dtype=np.float32)
    rgba[:, :3] = np.clip(colors, 0.0, 1.0)
    attribute.data.foreach_set("color_srgb", rgba.reshape(-1))
    data.color_attributes.active_color = attribute
    data.color_attributes.render_color_index = data.color_attributes.find(attribute_name)
    return attribute


def _principled(tree):
    nodes = tree.nodes
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (400, 0)
    shader = nodes.new("ShaderNodeBsdfPrincipled")
    shader.location = (100, 0)
    shader.inputs["Roughness"].default_value = 0.7
    tree.links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    return shader


def vertex_color_material(name: str, attribute_name: str) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5 starts materials without nodes
        material.use_nodes = True
    tree = material.node_tree
    shader = _principled(tree)
    colors = tree.nodes.new("ShaderNodeVertexColor")
    colors.layer_name = attribute_name
    colors.location = (-300, 0)
    tree.links.new(colors.outputs["Color"], shader.inputs["Base Color"])
    return material


def add_front_projection(obj, uv: np.ndarray, facing: np.ndarray, image) -> bpy.types.Material:
    """Portrait on the front: a front orthographic UV map, the facing weight as a colour
    attribute, and a material mixing the image over the vertex colours by that weight."""
    data = obj.data
    layer = data.uv_layers.new(name=FRONT_UV)
    loop_verts = np.empty(len(data.loops), dtype=np.int32)
    data.loops.foreach_get("vertex_index", loop_verts)
    layer.data.foreach_set("uv", uv[loop_verts].astype(np.float32).reshape(-1))
    set_point_colors(data, FACING_ATTRIBUTE, np.repeat(facing[:, None], 3, axis=1))
    if data.color_attributes.get(COLOR_ATTRIBUTE) is None:
        set_point_colors(data, COLOR_ATTRIBUTE, np.full((len(data.vertices), 3), 0.8))
    data.color_attributes.active_color = data.color_attributes[COLOR_ATTRIBUTE]
    data.color_attributes.render_color_index = data.color_attributes.find(COLOR_ATTRIBUTE)

    material = bpy.data.materials.new(f"{obj.name} Portrait")
    if material.node_tree is None:  # Blender < 5 starts materials without nodes
        material.use_nodes = True
    tree = material.node_tree
    nodes, links = tree.nodes, tree.links
    shader = _principled(tree)
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = FRONT_UV
    uv_node.location = (-900, 200)
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.extension = "CLIP"
    texture.location = (-650, 250)
    links.new(uv_node.outputs["UV"], texture.inputs["Vector"])
    base = nodes.new("ShaderNodeVertexColor")
    base.layer_name = COLOR_ATTRIBUTE
    base.location = (-650, -50)
    weight = nodes.new("ShaderNodeVertexColor")
    weight.layer_name = FACING_ATTRIBUTE
    weight.location = (-650, -250)
    # where the portrait is transparent (background), keep the vertex colours
    factor = nodes.new("ShaderNodeMath")
    factor.operation = "MULTIPLY"
    factor.location = (-400, -200)
    links.new(weight.outputs["Color"], factor.inputs[0])
    links.new(texture.outputs["Alpha"], factor.inputs[1])
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.location = (-200, 0)
    links.new(factor.outputs["Value"], mix.inputs["Factor"])
    links.new(base.outputs["Color"], mix.inputs[6])  # A
    links.new(texture.outputs["Color"], mix.inputs[7])  # B
    links.new(mix.outputs[2], shader.inputs["Base Color"])
    data.materials.clear()
    data.materials.append(material)
    return material


def load_portrait_image(path) -> bpy.types.Image:
    path = Path(bpy.path.abspath(str(path)))
    if not path.is_file():
        raise AniRenderError(f"Portrait image {path}: no such file; choose the front view PNG.")
    try:
        return bpy.data.images.load(str(path), check_existing=True)
    except RuntimeError as exc:
        raise AniRenderError(
            f"Portrait image {path.name}: Blender cannot read it ({exc})."
        ) from None


# --------------------------------------------------------------------- mesh files


def read_mesh_file(path, kind: str) -> PortraitMesh:
    """Import OBJ/PLY/glTF with Blender's importer, return joined arrays in the Blender
    frame (files are taken as y up, facing +z), and remove everything the importer made."""
    path = Path(path)
    before = {name: set(getattr(bpy.data, name)) for name in _IMPORTED_DATA}
    try:
        _run_importer(path, kind)
        new_objects = [o for o in bpy.data.objects if o not in before["objects"]]
        meshes = [o for o in new_objects if o.type == "MESH"]
        if not meshes:
            raise AniRenderError(f"{path.name}: the file holds no mesh.")
        return _joined_arrays(meshes, path)
    finally:
        for name in _IMPORTED_DATA:
            collection = getattr(bpy.data, name)
            for idb in [i for i in collection if i not in before[name]]:
                collection.remove(idb)


_IMPORTED_DATA = ("objects", "meshes", "materials", "images", "textures", "collections")


def import_mesh_object(path, kind: str, name: str, collection) -> bpy.types.Object:
    """An ordinary mesh file as Blender's importer makes it, joined into one object.

    Faces (quads, n-gons), UVs, materials and shading are kept as the file has them;
    the importer's extras (empties, cameras, lights, its collections) are removed. The
    object is linked to ``collection`` only, at the importer's scale and orientation.
    """
    path = Path(path)
    before = {name_: set(getattr(bpy.data, name_)) for name_ in _IMPORTED_DATA}
    _run_importer(path, kind)
    new = {
        name_: [i for i in getattr(bpy.data, name_) if i not in before[name_]] for name_ in before
    }
    meshes = [o for o in new["objects"] if o.type == "MESH"]
    if not meshes:
        for name_ in _IMPORTED_DATA:
            for idb in new[name_]:
                getattr(bpy.data, name_).remove(idb)
        raise AniRenderError(f"{path.name}: the file holds no mesh.")
    target = meshes[0]
    if len(meshes) > 1:
        view_layer = bpy.context.view_layer
        with bpy.context.temp_override(
            active_object=target,
            selected_editable_objects=meshes,
            selected_objects=meshes,
            view_layer=view_layer,
        ):
            bpy.ops.object.join()
    for obj in [o for o in new["objects"] if o != target and o.name in bpy.data.objects]:
        bpy.data.objects.remove(obj)
    for other in list(target.users_collection):
        other.objects.unlink(target)
    for made in new["collections"]:
        bpy.data.collections.remove(made)
    collection.objects.link(target)
    target.parent = None
    target.name = name
    target.data.name = name
    return target


def set_shading(data, smooth: bool) -> None:
    data.polygons.foreach_set("use_smooth", np.full(len(data.polygons), smooth, dtype=bool))
    data.update()


def _run_importer(path, kind):
    try:
        if kind == "obj":
            result = bpy.ops.wm.obj_import(
                filepath=str(path), forward_axis="NEGATIVE_Z", up_axis="Y"
            )
        elif kind == "ply_mesh":
            result = bpy.ops.wm.ply_import(
                filepath=str(path), forward_axis="NEGATIVE_Z", up_axis="Y"
            )
        elif kind == "gltf":
            result = bpy.ops.import_scene.gltf(filepath=str(path))
        else:
            raise AniRenderError(f"{path.name}: {kind} is not a mesh file.")
    except RuntimeError as exc:
        raise AniRenderError(f"{path.name}: Blender could not import it ({exc}).") from None
    if "FINISHED" not in result:
        raise AniRenderError(f"{path.name}: Blender could not import it; is the file complete?")


def _joined_arrays(objects, path) -> PortraitMesh:
    all_verts, all_faces, all_colors, offset = [], [], [], 0
    any_colors = False
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in objects:
        evaluated = obj.evaluated_get(depsgraph)
        data = evaluated.to_mesh()
        try:
            data.calc_loop_triangles()
            verts = np.empty(len(data.vertices) * 3, dtype=np.float64)
            data.vertices.foreach_get("co", verts)
            verts = verts.reshape(-1, 3)
            matrix = np.array(obj.matrix_world)
            verts = verts @ matrix[:3, :3].T + matrix[:3, 3]
            tris = np.empty(len(data.loop_triangles) * 3, dtype=np.int64)
            data.loop_triangles.foreach_get("vertices", tris)
            colors = _point_colors(data)
            if colors is None:  # TripoSR/InstantMesh style: a texture instead of colours
                colors = _texture_colors(obj, data)
            any_colors |= colors is not None
            all_verts.append(verts)
            all_faces.append(tris.reshape(-1, 3) + offset)
            all_colors.append(colors)
            offset += len(verts)
        finally:
            evaluated.to_mesh_clear()
    colors = None
    if any_colors:
        colors = np.concatenate(
            [
                c if c is not None else np.full((len(v), 3), 0.8)
                for c, v in zip(all_colors, all_verts, strict=True)
            ]
        )
    verts = np.concatenate(all_verts)
    if not np.isfinite(verts).all():
        raise AniRenderError(f"{path.name}: vertices contain NaN or infinity.")
    return PortraitMesh(verts, np.concatenate(all_faces), f"{path.suffix[1:].upper()} mesh", colors)


def _point_colors(data):
    attribute = data.color_attributes.active_color or (
        data.color_attributes[0] if len(data.color_attributes) else None
    )
    if attribute is None:
        return None
    values = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color_srgb", values)
    values = values.reshape(-1, 4)[:, :3].astype(np.float64)
    if attribute.domain == "POINT":
        return values
    if attribute.domain == "CORNER":
        loop_verts = np.empty(len(data.loops), dtype=np.int64)
        data.loops.foreach_get("vertex_index", loop_verts)
        sums = np.zeros((len(data.vertices), 3))
        np.add.at(sums, loop_verts, values)
        counts = np.bincount(loop_verts, minlength=len(data.vertices))[:, None]
        return sums / np.maximum(counts, 1)
    return None


def _texture_colors(obj, data):
    """Per-vertex colours sampled from the first image texture at each corner's UV."""
    image = None
    for slot in obj.material_slots:
        tree = slot.material.node_tree if slot.material else None
        for node in tree.nodes if tree else ():
            if node.bl_idname == "ShaderNodeTexImage" and node.image and node.image.size[0]:
                image = node.image
                break
        if image is not None:
            break
    if image is None or data.uv_layers.active is None:
        return None
    width, height = image.size
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)  # display values for 8-bit sRGB images
    pixels = pixels.reshape(height, width, image.channels)[..., :3]
    uv = np.empty(len(data.loops) * 2, dtype=np.float32)
    data.uv_layers.active.data.foreach_get("uv", uv)
    uv = uv.reshape(-1, 2) % 1.0
    x = np.clip((uv[:, 0] * width).astype(np.int64), 0, width - 1)
    y = np.clip((uv[:, 1] * height).astype(np.int64), 0, height - 1)
    loop_verts = np.empty(len(data.loops), dtype=np.int64)
    data.loops.foreach_get("vertex_index", loop_verts)
    sums = np.zeros((len(data.vertices), 3))
    np.add.at(sums, loop_verts, pixels[y, x])
    counts = np.bincount(loop_verts, minlength=len(data.vertices))[:, None]
    return sums / np.maximum(counts, 1)


def place_at_head_bone(obj, armature, bone_name: str):
    """Parent to the bone and put the object's origin at the bone's head."""
    bone = armature.data.bones.get(bone_name)
    if bone is None:
        raise AniRenderError(f"Armature {armature.name} has no bone named {bone_name!r}.")
    pose_bone = armature.pose.bones.get(bone_name) if armature.pose else None
    local_head = pose_bone.head if pose_bone is not None else bone.head_local  # as posed now
    head = armature.matrix_world @ local_head
    obj.parent = armature
    obj.parent_type = "BONE"
    obj.parent_bone = bone_name
    bpy.context.view_layer.update()
    obj.matrix_world = Matrix.Translation(head)  # upright, true size, whatever the rig


def find_head_bone(armature) -> str:
    """The bone an artist would call the head: 'head', VRM's J_Bip_C_Head, MMD's 頭."""
    names = [b.name for b in armature.data.bones]
    for wanted in ("head", "j_bip_c_head", "頭", "def-head", "mixamorig:head"):
        for name in names:
            if name.lower() == wanted:
                return name
    for name in names:
        lower = name.lower()
        if "head" in lower and "end" not in lower and "top" not in lower:
            return name
    raise AniRenderError(
        f"Armature {armature.name} has no head bone (looked for 'Head', 'J_Bip_C_Head', '頭'); "
        "type the bone name in the import options."
    )
