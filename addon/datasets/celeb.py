"""Export an AnimeCeleb-style dataset: sampled poses of each character, rendered with Cycles.

Layout (as the AnimeCeleb release, so its loaders read it):

    OUT/combined_pose.csv          org_id, cluster, png_name, then the 20 pose values
    OUT/<org_id>/<cluster>/<png>   256 x 256 RGBA PNG, transparent background

``org_id`` is the character's armature name; ``cluster`` is ``<group>_<style>`` with
group ``frontal`` (head angles zeroed) or ``rotated``; ``png_name`` is ``00000.png`` for
the neutral pose (all zeros, the reenactment source) and ``00001.png``... for the
sampled poses (AnimeCeleb's Algorithm 1, seeded per character). Frontal and rotated
renders of one pose share the png name.

Staging: an orthographic camera looks at the head bone from the character's front (the
armature's -Y side), ``framing`` head-bone lengths wide, centred ``frame_centre`` of the
way up the bone; one sun shines along the
camera's view direction onto the face; other lights are hidden and the world is a dim
grey. Styles: ``SHADED`` (the character's own materials), ``TOON`` (Toon BSDF in the
base colour: hard cel terminator), ``FLAT`` (emission of the base colour: flat fill).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import bpy
from mathutils import Euler, Vector

from ...errors import AniRenderError
from ...models import pose_vector
from ..characters.finding import Character, meshes_deformed_by
from ..characters.toy import HEAD_CENTRE, HEAD_RADIUS, build_toy_character
from ..core.guard import SceneGuard
from ..core.jobs import Job
from ..pose import sliders as morphs

STYLES = ("SHADED", "TOON", "FLAT")
GROUPS = ("frontal", "rotated")
CSV_NAME = "combined_pose.csv"
# Defaults of the framing: image width in head-bone lengths, and where along the head bone
# (0 = its root, 1 = its tip) the image is centred. The shipped reenactment model was
# trained on 1.8 / 0.5 (toy heads); 2.4 / 0.25 keeps the chin and neck in the frame.
FRAMING = 2.4
FRAME_CENTRE = 0.25
TOON_THRESHOLD = 0.45  # cosine between normal and light above which TOON is lit
CSV_HEADER = ("org_id", "cluster", "png_name", *pose_vector.POSE_NAMES)


def scene_characters(scene, selected=None) -> list[Character]:
    """Characters to export: the armatures among ``selected``, else all in the scene."""
    pool = selected if selected else scene.objects
    armatures = [o for o in pool if o.type == "ARMATURE"]
    characters = [Character(a, meshes_deformed_by(a)) for a in armatures]
    characters = [c for c in characters if c.meshes]
    if not characters:
        raise AniRenderError(
            f'Scene "{scene.name}" has no armature that deforms meshes. '
            "The dataset export needs rigged characters."
        )
    return sorted(characters, key=lambda c: c.name)


def _base_colour(material):
    """The base colour socket's value and link source of a material (best effort)."""
    colour, source = (0.8, 0.8, 0.8, 1.0), None
    if material is None:
        return colour, source
    colour = tuple(material.diffuse_color)
    if material.node_tree is not None:
        for node in material.node_tree.nodes:
            socket = node.inputs.get("Base Color") or node.inputs.get("Color")
            if node.type in {"BSDF_PRINCIPLED", "BSDF_DIFFUSE", "BSDF_TOON"} and socket:
                colour = tuple(socket.default_value)
                if socket.is_linked:
                    source = socket.links[0].from_socket
                break
    return colour, source


def _style_material(material, style, light_direction=(0.0, -1.0, 0.0)):
    """A temporary material drawing ``material``'s base colour in ``style``."""
    colour, source = _base_colour(material)
    name = f"AniRender {style.title()} {material.name if material else 'Default'}"
    result = bpy.data.materials.new(name)
    if result.node_tree is None:
        result.use_nodes = True
    nodes, links = result.node_tree.nodes, result.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    if style == "FLAT":
        shader = nodes.new("ShaderNodeEmission")
        shader.inputs["Strength"].default_value = 1.0
        colour_input = shader.inputs["Color"]
    else:
        # Cel shading without light sampling (noise-free): lit where the normal faces the
        # sun by more than TOON_THRESHOLD, 60% of the base colour elsewhere.
        shader = nodes.new("ShaderNodeEmission")
        geometry = nodes.new("ShaderNodeNewGeometry")
        facing = nodes.new("ShaderNodeVectorMath")
        facing.operation = "DOT_PRODUCT"
        facing.inputs[1].default_value = light_direction
        links.new(geometry.outputs["Normal"], facing.inputs[0])
        step = nodes.new("ShaderNodeMath")
        step.operation = "GREATER_THAN"
        step.inputs[1].default_value = TOON_THRESHOLD
        links.new(facing.outputs["Value"], step.inputs[0])
        tone = nodes.new("ShaderNodeMapRange")
        tone.inputs["To Min"].default_value = 0.6
        links.new(step.outputs[0], tone.inputs["Value"])
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.blend_type = "MULTIPLY"
        mix.inputs["Factor"].default_value = 1.0
        links.new(tone.outputs["Result"], mix.inputs["B"])
        links.new(mix.outputs["Result"], shader.inputs["Color"])
        colour_input = mix.inputs["A"]
    colour_input.default_value = colour
    if source is not None and material is not None:
        # copy the texture node that feeds the colour (one level: image textures)
        node = source.node
        if node.type == "TEX_IMAGE":
            tex = nodes.new("ShaderNodeTexImage")
            tex.image = node.image
            links.new(tex.outputs["Color"], colour_input)
    links.new(shader.outputs[0], out.inputs["Surface"])
    return result


class _MaterialSwap:
    """Swap the meshes' material slots to a style's materials; undo on restore."""

    def __init__(self, meshes, light_direction):
        self.meshes = meshes
        self.light_direction = tuple(light_direction)
        self.saved = [
            (m, i, s.link, s.material) for m in meshes for i, s in enumerate(m.material_slots)
        ]
        self.cache = {}

    def apply(self, style):
        self.restore()
        if style == "SHADED":
            return
        for obj, index, _link, material in self.saved:
            key = (material.name if material else None, style)
            if key not in self.cache:
                self.cache[key] = _style_material(material, style, self.light_direction)
            obj.material_slots[index].material = self.cache[key]

    def restore(self):
        for obj, index, link, material in self.saved:
            slot = obj.material_slots[index]
            if slot.material != material:
                slot.material = material
            if slot.link != link:
                slot.link = link


def _pose_fcurves(owner):
    """F-curves animating the pose sliders (muted during the export)."""
    anim = owner.animation_data
    if anim is None or anim.action is None:
        return []
    from bpy_extras import anim_utils

    bag = anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot)
    if bag is None:
        return []
    paths = {morphs.prop_path(n) for n in pose_vector.POSE_NAMES}
    return [fc for fc in bag.fcurves if fc.data_path in paths]


def head_frame(character: Character, depsgraph, framing: float, centre: float = FRAME_CENTRE):
    """World centre, camera rotation and ortho scale that frame the head bone."""
    armature = character.armature
    bone_name = morphs.find_head_bone(armature)
    rotation = armature.matrix_world.to_quaternion()
    if bone_name is None:
        raise AniRenderError(
            f'Armature "{armature.name}" has no head or neck bone the export can frame '
            "(looked for head, Head, J_Bip_C_Head, mixamorig:Head, 頭, neck ...)."
        )
    evaluated = armature.evaluated_get(depsgraph)
    bone = evaluated.pose.bones[bone_name]
    world = armature.matrix_world
    head, tail = world @ bone.head, world @ bone.tail
    length = max((tail - head).length, 1e-3)
    return head + (tail - head) * centre, rotation, length * framing


def _stage(scene, character, depsgraph, framing, resolution, samples, centre=FRAME_CENTRE):
    centre, rotation, scale = head_frame(character, depsgraph, framing, centre)
    cam_data = bpy.data.cameras.new("AniRender Celeb Camera")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = scale
    cam_data.clip_start, cam_data.clip_end = 0.01, scale * 40
    camera = bpy.data.objects.new("AniRender Celeb Camera", cam_data)
    scene.collection.objects.link(camera)
    view = rotation @ Euler((math.pi / 2, 0.0, 0.0)).to_quaternion()
    camera.rotation_euler = view.to_euler()
    camera.location = centre + rotation @ Vector((0.0, -scale * 10, 0.0))
    scene.camera = camera

    for obj in scene.objects:
        if obj.type == "LIGHT":
            obj.hide_render = True
    sun_data = bpy.data.lights.new("AniRender Celeb Sun", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("AniRender Celeb Sun", sun_data)
    scene.collection.objects.link(sun)
    sun.rotation_euler = view.to_euler()  # shines along the view direction, onto the face

    world = bpy.data.worlds.new("AniRender Celeb World")
    world.color = (0.3, 0.3, 0.3)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    return camera


def render_still(scene, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)


def export_celeb_dataset(
    context,
    out_dir,
    poses: int,
    characters: list[Character] | None = None,
    styles=("SHADED",),
    seed: int = 0,
    resolution: int = 256,
    framing: float = FRAMING,
    frame_centre: float = FRAME_CENTRE,
    samples: int = 16,
    overwrite: bool = False,
) -> Job:
    """A ``Job`` rendering ``poses`` sampled poses per character (run it under a SceneGuard).

    Each character gets the neutral pose plus ``poses`` poses, each rendered frontalised
    and rotated, once per style; rows go to ``combined_pose.csv`` as images are written.
    """
    scene = context.scene
    out = Path(bpy.path.abspath(str(out_dir)))
    styles = tuple(styles)
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise AniRenderError(f"Unknown shading style {unknown}; choose from {STYLES}.")
    if poses < 1:
        raise AniRenderError("Export at least one pose per character.")
    characters = characters or scene_characters(scene)
    csv_path = out / CSV_NAME
    if csv_path.exists() and not overwrite:
        raise AniRenderError(
            f"{csv_path} already exists. Choose an empty folder or allow overwriting."
        )
    for character in characters:
        if character.armature is None:
            raise AniRenderError(
                f'Character "{character.name}" has no armature; the export frames the head bone.'
            )
        if morphs.find_head_bone(character.armature) is None:
            raise AniRenderError(
                f'Armature "{character.name}" has no head or neck bone the export can frame '
                "(looked for head, Head, J_Bip_C_Head, mixamorig:Head, 頭, neck ...)."
            )
    per_character = len(styles) * (1 + 2 * poses)
    total = per_character * len(characters)

    def steps(job):
        out.mkdir(parents=True, exist_ok=True)
        handle = open(csv_path, "w", newline="", encoding="utf-8")
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        try:
            for index, character in enumerate(characters):
                yield from _character_steps(job, character, index, writer, handle)
        finally:
            handle.close()
        job.summary = f"Wrote {job.done} images of {len(characters)} characters to {out}"

    def _character_steps(job, character, index, writer, handle):
        owner = character.owner
        was_rigged = morphs.is_rigged(owner)
        saved_pose = morphs.get_pose(owner) if was_rigged else None
        muted = [(fc, fc.mute) for fc in _pose_fcurves(owner)]
        to_light = character.armature.matrix_world.to_quaternion() @ Vector((0, -1, 0))
        swap = _MaterialSwap(character.meshes, to_light)
        others = [c for c in characters if c is not character]
        hidden = [m for c in others for m in c.meshes if not m.hide_render]
        try:
            for fc, _ in muted:
                fc.mute = True
            if not was_rigged:
                morphs.setup_morph_rig(character)
            bindings = morphs.stored_bindings(owner) or morphs.find_shape_keys(character.meshes)
            for mesh in hidden:
                mesh.hide_render = True
            morphs.apply_pose(character, [0.0] * pose_vector.POSE_SIZE)
            depsgraph = context.evaluated_depsgraph_get()
            _stage(scene, character, depsgraph, framing, resolution, samples, frame_centre)
            org_id = bpy.path.clean_name(character.name)
            sampled = [
                morphs.random_pose(bindings, seed=seed * 100003 + index * 7919 + i)
                for i in range(poses)
            ]
            jobs = [(0, "frontal", [0.0] * pose_vector.POSE_SIZE)]
            for i, pose in enumerate(sampled, start=1):
                frontal = pose[:17] + [0.0, 0.0, 0.0]
                jobs += [(i, "frontal", frontal), (i, "rotated", pose)]
            for style in styles:
                swap.apply(style)
                for number, group, pose in jobs:
                    morphs.apply_pose(character, pose)
                    cluster = f"{group}_{style.lower()}"
                    png_name = f"{number:05d}.png"
                    render_still(scene, out / org_id / cluster / png_name)
                    writer.writerow([org_id, cluster, png_name, *(f"{v:.6f}" for v in pose)])
                    handle.flush()
                    yield f"{org_id} {cluster} {png_name}"
        finally:
            for mesh in hidden:
                mesh.hide_render = False
            swap.restore()
            for fc, mute in muted:
                fc.mute = mute
            if was_rigged:
                morphs.apply_pose(character, saved_pose)
            else:
                morphs.remove_morph_rig(character)

    return Job("Export AnimeCeleb Dataset", steps, total)


def read_pose_csv(path) -> list[dict]:
    """Rows of a ``combined_pose.csv`` as dicts with a ``pose`` list of 20 floats."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if tuple(header[:3]) != CSV_HEADER[:3] or len(header) != len(CSV_HEADER):
            raise AniRenderError(
                f"{path} is not a combined_pose.csv: expected columns {', '.join(CSV_HEADER)}."
            )
        for row in reader:
            rows.append(
                {
                    "org_id": row[0],
                    "cluster": row[1],
                    "png_name": row[2],
                    "pose": [float(v) for v in row[3:]],
                }
            )
    return rows


# ---------------------------------------------------------------------- training cast


def _face_centre(azimuth_deg, elevation_deg):

    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    scale = Vector((0.9, 1.0, 1.1)) * HEAD_RADIUS
    return Vector(HEAD_CENTRE) + direction * scale


def _paint_face(body, colour):
    """Give the toy's face painted eyes, brows and a mouth (a second material)."""
    features = (  # (azimuth, elevation, radius)
        (28, 8, 0.024), (-28, 8, 0.024), (25, 24, 0.014), (-25, 24, 0.014), (0, -35, 0.022)
    )  # fmt: skip
    material = bpy.data.materials.new(f"{body.name}_Face")
    material.diffuse_color = colour
    if material.node_tree is None:
        material.use_nodes = True
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = colour
    body.data.materials.append(material)
    index = len(body.data.materials) - 1
    centres = [(_face_centre(a, e), r) for a, e, r in features]
    for poly in body.data.polygons:
        if poly.center.y < -0.04 and any((poly.center - c).length < r for c, r in centres):
            poly.material_index = index


def build_toy_cast(scene, count: int, seed: int = 0) -> list:
    """``count`` recoloured toys with painted faces, one metre apart: a training cast.

    The shipped reenactment model was trained on images of this cast (see BENCHMARKS.md).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    armatures = []
    for i in range(count):
        armature = build_toy_character(scene, name=f"Toy{i:02d}")
        armature.location.x = 1.2 * i
        skin = (*rng.uniform([0.75, 0.55, 0.45], [1.0, 0.85, 0.75]), 1.0)
        hair = (*rng.uniform(0.05, 0.95, 3), 1.0)
        cloth = (*rng.uniform(0.05, 0.9, 3), 1.0)
        face = (*rng.uniform(0.0, 0.25, 3), 1.0)
        for mesh in meshes_deformed_by(armature):
            material = mesh.data.materials[0]
            colour = {"Body": skin, "Hair": hair, "Skirt": cloth}[mesh.name.split(".")[0]]
            material.diffuse_color = colour
            material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = colour
            if mesh.name.startswith("Body"):
                _paint_face(mesh, face)
        armatures.append(armature)
    return armatures


def render_pose_image(
    context,
    character: Character,
    pose,
    path,
    style: str = "SHADED",
    resolution: int = 256,
    framing: float = FRAMING,
    frame_centre: float = FRAME_CENTRE,
    samples: int = 16,
) -> Path:
    """Render one pose of one character exactly as the export stages it.

    The scene is restored afterwards (the sliders get their values back; an unrigged
    character keeps the rig ``apply_pose`` sets up).
    Used to check a dataset row: render its pose again and compare with the PNG.
    """

    path = Path(path)
    owner = character.owner
    saved = morphs.get_pose(owner) if morphs.is_rigged(owner) else None
    morphs.apply_pose(character, saved or [0.0] * pose_vector.POSE_SIZE)  # rig outside the guard
    others = [o for o in context.scene.objects if o.type == "MESH" and o not in character.meshes]
    with SceneGuard(context):
        to_light = character.armature.matrix_world.to_quaternion() @ Vector((0, -1, 0))
        swap = _MaterialSwap(character.meshes, to_light)
        try:
            for mesh in others:
                mesh.hide_render = True
            morphs.apply_pose(character, [0.0] * pose_vector.POSE_SIZE)
            depsgraph = context.evaluated_depsgraph_get()
            _stage(context.scene, character, depsgraph, framing, resolution, samples, frame_centre)
            swap.apply(style)
            morphs.apply_pose(character, pose)
            render_still(context.scene, path)
        finally:
            swap.restore()
            if saved is not None:
                morphs.apply_pose(character, saved)
    return path
