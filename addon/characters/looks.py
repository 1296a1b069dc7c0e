"""A seeded anime "look" for a rigged character: toon outfit colours, patterns, hair, skirt.

``dress_character(armature, seed)`` gives every mesh of the character a flat-shaded toon
material and per-vertex outfit colours chosen from the seed: skin, a top (with short or
long sleeves), trousers/shorts or a skirt, shoes, and a hair shell with a fringe, and a
stripe, check or dot pattern on one garment. Regions come from each vertex's dominant
bone, found by name, so the same code dresses the MakeHuman rig and the toy rig.

The shading is what anime cel shading does with one light: a lit and a shadow tone
split by a hard threshold on the normal, computed in the material (Cycles, no lights
needed), so renders are cheap and identical on every machine.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import bpy
import numpy as np

from ..core.mesh_arrays import vertex_positions
from .finding import meshes_deformed_by

LOOK_ATTRIBUTE = "toon_base"
PATTERN_COLOUR_ATTRIBUTE = "toon_pattern_colour"
PATTERN_MASK_ATTRIBUTE = "toon_pattern_mask"
LIGHT_DIRECTION = (-0.45, -0.75, 0.5)  # towards the light: front-left-above

# Bone-name fragments -> body region (first match wins, names lower-cased).
_REGION_RULES = (
    ("foot", "shoes"),
    ("toe", "shoes"),
    ("wrist", "hand"),
    ("finger", "hand"),
    ("metacarpal", "hand"),
    ("hand", "hand"),
    ("lowerarm", "forearm"),
    ("forearm", "forearm"),
    ("upperarm", "upper_arm"),
    ("upper_arm", "upper_arm"),
    ("shoulder", "upper_arm"),
    ("lowerleg", "shin"),
    ("shin", "shin"),
    ("calf", "shin"),
    ("upperleg", "thigh"),
    ("thigh", "thigh"),
    ("pelvis", "hips"),
    ("hips", "hips"),
    ("root", "hips"),
    ("spine05", "hips"),
    ("spine", "torso"),
    ("chest", "torso"),
    ("breast", "torso"),
    ("clavicle", "torso"),
    ("neck", "skin"),
    ("head", "skin"),
)

_HAIR_HUES = (0.95, 0.6, 0.12, 0.08, 0.75, 0.33, 0.55, 0.02)


@dataclass
class Outfit:
    """The colours and cut chosen for one character (all colours linear RGB)."""

    skin: tuple
    top: tuple
    bottom: tuple
    shoes: tuple
    hair: tuple
    pattern: tuple
    long_sleeves: bool
    long_legs: bool
    skirt: bool
    pattern_on: str  # "top", "bottom" or "none"
    long_hair: bool


def _srgb_to_linear(c):
    c = np.asarray(c, float)
    return tuple(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4))


def _hsv(h, s, v):
    return _srgb_to_linear(colorsys.hsv_to_rgb(h % 1.0, s, v))


def choose_outfit(seed: int) -> Outfit:
    """A reproducible outfit from ``seed``."""
    rng = np.random.default_rng(seed)
    skin_tones = ((1.0, 0.87, 0.78), (0.98, 0.8, 0.68), (0.86, 0.65, 0.5), (0.65, 0.45, 0.33))
    skin = _srgb_to_linear(skin_tones[rng.integers(len(skin_tones))])
    top_hue = rng.random()
    bottom_hue = (top_hue + rng.uniform(0.25, 0.75)) % 1.0
    return Outfit(
        skin=skin,
        top=_hsv(top_hue, rng.uniform(0.45, 0.85), rng.uniform(0.6, 0.95)),
        bottom=_hsv(bottom_hue, rng.uniform(0.35, 0.8), rng.uniform(0.25, 0.7)),
        shoes=_hsv(rng.random(), 0.3, rng.uniform(0.1, 0.35)),
        hair=_hsv(
            _HAIR_HUES[rng.integers(len(_HAIR_HUES))], rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.95)
        ),
        pattern=_hsv(top_hue + 0.5, 0.2, 0.97),
        long_sleeves=bool(rng.random() < 0.5),
        long_legs=bool(rng.random() < 0.5),
        skirt=bool(rng.random() < 0.5),
        pattern_on=("top", "bottom", "none")[rng.integers(3)],
        long_hair=bool(rng.random() < 0.5),
    )


def _region_of(bone_name: str) -> str:
    name = bone_name.lower()
    for fragment, region in _REGION_RULES:
        if fragment in name:
            return region
    return "skin"


def _dominant_groups(obj) -> np.ndarray:
    """Index of each vertex's heaviest vertex group (-1 where it has none)."""
    n = len(obj.data.vertices)
    best = np.full(n, -1, np.int64)
    best_w = np.zeros(n)
    for v in obj.data.vertices:
        for g in v.groups:
            if g.weight > best_w[v.index]:
                best_w[v.index], best[v.index] = g.weight, g.group
    return best


def _vertex_regions(obj) -> np.ndarray:
    groups = [_region_of(g.name) for g in obj.vertex_groups]
    dominant = _dominant_groups(obj)
    return np.array([groups[g] if g >= 0 else "skin" for g in dominant], dtype=object)


GARMENTS = ("top", "bottom", "skin", "shoes", "hair")  # what a look's parts are called


def _garments(outfit: Outfit) -> dict:
    """Body region -> the garment (a name in GARMENTS) the outfit puts there."""
    return {
        "shoes": "shoes",
        "hand": "skin",
        "forearm": "top" if outfit.long_sleeves else "skin",
        "upper_arm": "top",
        "torso": "top",
        "hips": "bottom",
        "thigh": "bottom",
        "shin": "bottom" if outfit.long_legs and not outfit.skirt else "skin",
        "skin": "skin",
    }


def garment_labels(obj, outfit: Outfit) -> np.ndarray:
    """Index into GARMENTS of the garment each vertex of a body mesh wears in ``outfit``
    (the regions an artist judges a look by: shirt, skirt or trousers, skin, shoes)."""
    garment = _garments(outfit)
    return np.array([GARMENTS.index(garment[r]) for r in _vertex_regions(obj)], np.int64)


def _colours_for(regions: np.ndarray, outfit: Outfit):
    garment = _garments(outfit)
    colours = np.array([getattr(outfit, garment[r]) for r in regions], float)
    on_top = {"torso", "upper_arm"} | ({"forearm"} if outfit.long_sleeves else set())
    on_bottom = {"hips", "thigh"} | ({"shin"} if outfit.long_legs else set())
    wanted = {"top": on_top, "bottom": on_bottom, "none": set()}[outfit.pattern_on]
    mask = np.array([r in wanted for r in regions], float)
    return colours, mask


def _set_point_colours(mesh, name, rgb: np.ndarray):
    attr = mesh.color_attributes.get(name) or mesh.color_attributes.new(
        name, "FLOAT_COLOR", "POINT"
    )
    rgba = np.ones((len(rgb), 4), np.float32)
    rgba[:, :3] = rgb
    attr.data.foreach_set("color", rgba.ravel())


def _set_point_float(mesh, name, values: np.ndarray):
    attr = mesh.attributes.get(name) or mesh.attributes.new(name, "FLOAT", "POINT")
    attr.data.foreach_set("value", np.asarray(values, np.float32))


def toon_material(name: str = "AniRender Toon", pattern_kind: int = 0) -> bpy.types.Material:
    """Flat cel-shaded emission material reading the outfit attributes.

    ``pattern_kind``: 0 stripes, 1 checks, 2 dots (drawn on the rest position, so the
    pattern sticks to the cloth whatever the pose).
    """
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 makes materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    emission = nodes.new("ShaderNodeEmission")
    links.new(emission.outputs[0], out.inputs["Surface"])

    base = nodes.new("ShaderNodeAttribute")
    base.attribute_name = LOOK_ATTRIBUTE
    pattern_colour = nodes.new("ShaderNodeAttribute")
    pattern_colour.attribute_name = PATTERN_COLOUR_ATTRIBUTE
    pattern_mask = nodes.new("ShaderNodeAttribute")
    pattern_mask.attribute_name = PATTERN_MASK_ATTRIBUTE
    rest = nodes.new("ShaderNodeAttribute")
    rest.attribute_name = "rest_position"

    if pattern_kind == 1:
        texture = nodes.new("ShaderNodeTexChecker")
        texture.inputs["Scale"].default_value = 12.0
        links.new(rest.outputs["Vector"], texture.inputs["Vector"])
        texture.inputs["Color1"].default_value = (1, 1, 1, 1)
        texture.inputs["Color2"].default_value = (0, 0, 0, 1)
        pattern_value = texture.outputs["Fac"]
    elif pattern_kind == 2:
        texture = nodes.new("ShaderNodeTexVoronoi")
        texture.inputs["Scale"].default_value = 18.0
        texture.inputs["Randomness"].default_value = 0.0
        links.new(rest.outputs["Vector"], texture.inputs["Vector"])
        step = nodes.new("ShaderNodeMath")
        step.operation = "LESS_THAN"
        step.inputs[1].default_value = 0.22
        links.new(texture.outputs["Distance"], step.inputs[0])
        pattern_value = step.outputs[0]
    else:
        texture = nodes.new("ShaderNodeTexWave")
        texture.wave_type = "BANDS"
        texture.bands_direction = "Z"
        texture.inputs["Scale"].default_value = 6.0
        links.new(rest.outputs["Vector"], texture.inputs["Vector"])
        step = nodes.new("ShaderNodeMath")
        step.operation = "GREATER_THAN"
        step.inputs[1].default_value = 0.5
        links.new(texture.outputs["Fac"], step.inputs[0])
        pattern_value = step.outputs[0]

    amount = nodes.new("ShaderNodeMath")
    amount.operation = "MULTIPLY"
    links.new(pattern_value, amount.inputs[0])
    links.new(pattern_mask.outputs["Fac"], amount.inputs[1])
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    links.new(amount.outputs[0], mix.inputs["Factor"])
    links.new(base.outputs["Color"], mix.inputs["A"])
    links.new(pattern_colour.outputs["Color"], mix.inputs["B"])

    geometry = nodes.new("ShaderNodeNewGeometry")
    light = nodes.new("ShaderNodeVectorMath")
    light.operation = "DOT_PRODUCT"
    direction = np.asarray(LIGHT_DIRECTION) / np.linalg.norm(LIGHT_DIRECTION)
    light.inputs[1].default_value = tuple(direction)
    links.new(geometry.outputs["Normal"], light.inputs[0])
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.interpolation = "CONSTANT"
    ramp.color_ramp.elements[0].position = 0.0
    ramp.color_ramp.elements[0].color = (0.55, 0.55, 0.62, 1.0)  # cool shadow tone
    ramp.color_ramp.elements[1].position = 0.05
    ramp.color_ramp.elements[1].color = (1.0, 1.0, 1.0, 1.0)
    links.new(light.outputs["Value"], ramp.inputs["Fac"])
    shade = nodes.new("ShaderNodeMix")
    shade.data_type = "RGBA"
    shade.blend_type = "MULTIPLY"
    shade.inputs["Factor"].default_value = 1.0
    links.new(mix.outputs["Result"], shade.inputs["A"])
    links.new(ramp.outputs["Color"], shade.inputs["B"])
    links.new(shade.outputs["Result"], emission.inputs["Color"])
    return mat


def _copy_weights(target, source, points_world: np.ndarray, allowed: np.ndarray | None = None):
    """Give ``target`` the vertex-group weights of the nearest (allowed) vertices of ``source``.

    ``allowed`` masks the source vertices to copy from: a skirt must not pick up the
    weights of the hands hanging next to it in an A-pose.
    """
    from scipy.spatial import cKDTree

    src = vertex_positions(source)
    candidates = np.flatnonzero(allowed) if allowed is not None else np.arange(len(src))
    _, nearest = cKDTree(src[candidates]).query(points_world, k=1)
    nearest = candidates[nearest]
    names = [g.name for g in source.vertex_groups]
    per_vertex = {}
    for v in source.data.vertices:
        per_vertex[v.index] = [(names[g.group], g.weight) for g in v.groups]
    for i, j in enumerate(nearest):
        for name, weight in per_vertex[int(j)]:
            group = target.vertex_groups.get(name) or target.vertex_groups.new(name=name)
            group.add([i], weight, "REPLACE")


def _head_box(body: bpy.types.Object, regions: np.ndarray):
    co = vertex_positions(body)
    names = [g.name.lower() for g in body.vertex_groups]
    dominant = _dominant_groups(body)
    is_head = np.array([d >= 0 and names[d] == "head" for d in dominant])
    if not is_head.any():
        is_head = (regions == "skin") & (co[:, 2] > np.percentile(co[:, 2], 90))
    head = co[is_head]
    return head.min(0), head.max(0)


def _shell_mesh(name, centre, radii, keep) -> bpy.types.Mesh:
    """A UV-sphere shell around ``centre`` keeping the faces whose centre passes ``keep``."""
    rings, segments = 16, 32
    theta = np.linspace(0, np.pi, rings + 1)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    verts = centre + unit * radii
    faces = []
    for r in range(rings):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            quad = (a, b, b + segments, a + segments)
            if keep(unit[list(quad)].mean(0)):
                faces.append(quad)
    used = np.unique(np.array(faces))
    remap = -np.ones(len(verts), int)
    remap[used] = np.arange(len(used))
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts[used].tolist(), [], [tuple(remap[list(f)]) for f in faces])
    mesh.update()
    return mesh


def _skinned_object(scene, armature, name, mesh, source_body, allowed=None):
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    co = np.array([v.co[:] for v in mesh.vertices])
    _copy_weights(obj, source_body, co, allowed)
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = armature
    obj.add_rest_position_attribute = True
    return obj


def _add_hair(scene, armature, body, regions, outfit, rng):
    low, high = _head_box(body, regions)
    centre = (low + high) / 2 + np.array([0.0, 0.01, 0.015 * (high[2] - low[2]) / 0.25])
    radii = (high - low) / 2 * np.array([1.12, 1.12, 1.08])
    fringe = rng.uniform(0.05, 0.35)  # how far the fringe falls down the forehead
    back = -0.95 if outfit.long_hair else -0.2

    def keep(u):
        facing_front = u[1] < -0.35  # -Y is the face
        if facing_front:
            return u[2] > fringe
        return u[2] > back

    mesh = _shell_mesh("Hair", centre, radii, keep)
    hair = _skinned_object(
        scene, armature, "Hair", mesh, body, allowed=np.isin(regions, ("skin", "torso"))
    )
    if outfit.long_hair:
        # long hair behind the neck follows the head, not the shoulders
        head_group = hair.vertex_groups.get("head")
        if head_group is not None:
            for group in list(hair.vertex_groups):
                if group != head_group:
                    hair.vertex_groups.remove(group)
            head_group.add(list(range(len(mesh.vertices))), 1.0, "REPLACE")
    return hair


def _add_skirt(scene, armature, body, regions):
    co = vertex_positions(body)
    hips = co[regions == "hips"]
    thighs = co[regions == "thigh"]
    if not len(hips) or not len(thighs):
        return None
    top_z = np.percentile(hips[:, 2], 85)
    bottom_z = np.percentile(thighs[:, 2], 35)
    centre = np.array([hips[:, 0].mean(), hips[:, 1].mean(), 0.0])
    # only the trunk: in an A-pose the hands hang at waist height, and a skirt sized to
    # reach them turns into a metre-wide disc
    trunk = np.isin(regions, ("hips", "torso", "thigh"))
    waist = co[trunk & (np.abs(co[:, 2] - top_z) < 0.02)]
    r_top = np.max(np.hypot(waist[:, 0] - centre[0], waist[:, 1] - centre[1])) * 1.05
    r_bottom = r_top * 1.7
    segments, rings = 32, 6
    verts, faces = [], []
    for r in range(rings + 1):
        t = r / rings
        z = top_z + (bottom_z - top_z) * t
        radius = r_top + (r_bottom - r_top) * t
        for s in range(segments):
            a = 2 * np.pi * s / segments
            verts.append((centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a), z))
    for r in range(rings):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            faces.append((a, a + segments, b + segments, b))
    mesh = bpy.data.meshes.new("Skirt")
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    return _skinned_object(
        scene, armature, "Skirt", mesh, body, allowed=np.isin(regions, ("hips", "thigh"))
    )


def dress_character(armature: bpy.types.Object, seed: int, scene=None) -> Outfit:
    """Give the character a seeded toon outfit, hair and (maybe) a skirt."""
    scene = scene or bpy.context.scene
    # hair and skirt are shaped around the body's world position: make it current (an
    # armature just moved has a stale matrix_world until the view layer updates)
    scene.view_layers[0].update()
    rng = np.random.default_rng(seed + 7919)
    outfit = choose_outfit(seed)
    meshes = meshes_deformed_by(armature)
    body = max(meshes, key=lambda m: len(m.data.vertices))
    regions = _vertex_regions(body)
    material = toon_material(f"Toon {armature.name}", pattern_kind=int(rng.integers(3)))
    added = [_add_hair(scene, armature, body, regions, outfit, rng)]
    if outfit.skirt:
        added.append(_add_skirt(scene, armature, body, regions))
    for obj in [m for m in meshes if m not in added] + [a for a in added if a]:
        mesh = obj.data
        if obj.name.startswith("Hair"):
            colours = np.tile(outfit.hair, (len(mesh.vertices), 1))
            mask = np.zeros(len(mesh.vertices))
        elif obj.name.startswith("Skirt"):
            colours = np.tile(outfit.bottom, (len(mesh.vertices), 1))
            mask = np.full(len(mesh.vertices), float(outfit.pattern_on == "bottom"))
        else:
            colours, mask = _colours_for(_vertex_regions(obj), outfit)
        _set_point_colours(mesh, LOOK_ATTRIBUTE, colours)
        _set_point_colours(
            mesh, PATTERN_COLOUR_ATTRIBUTE, np.tile(outfit.pattern, (len(colours), 1))
        )
        _set_point_float(mesh, PATTERN_MASK_ATTRIBUTE, mask)
        obj.add_rest_position_attribute = True
        mesh.materials.clear()
        mesh.materials.append(material)
    return outfit
