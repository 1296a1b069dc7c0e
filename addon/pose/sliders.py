"""The 20-value head pose vector on a rigged character: sliders, shape keys, head bone.

The sliders are plain custom properties on the character's armature (``Toy["mouth_a"]``),
named after ``POSE_NAMES``. Blender drivers with *simple expressions* (arithmetic, sin,
cos; no add-on functions, no Python) carry them to the shape keys and to the head bone,
so a saved file poses the same in plain Blender, on a render farm, and without the add-on.

Head angles are in degrees, in the armature's own frame (Blender Z up, the character
faces -Y, its left is +X), whatever the bone's roll:

* pitch: about +X (the character's left); positive nods the chin down,
* yaw: about +Z (up); positive turns the face to the character's left,
* roll: about +Y (the character's back); positive tilts the head to its left shoulder,

applied roll first, then pitch, then yaw (``R = Rz(yaw) Rx(pitch) Ry(roll)``) about the
head bone's head. The angles drive the rotation of a hidden empty ("<armature> Head
Pose", a child of the armature, Euler YXZ); a Copy Rotation constraint on the head bone
("AniRender Head Pose", pose space, mix "Before Original") puts that rotation in front of
the bone's own, so the head turns about the armature's axes whatever the bone's roll,
and keyframes on the head bone still play underneath.
"""

import math

import bpy
import numpy as np
from mathutils import Matrix, Quaternion

from ...errors import AniRenderError
from ...models.pose_vector import (
    ANGLE_LIMIT,
    ANGLE_NAMES,
    BROW_SEMANTICS,
    EXPRESSION_NAMES,
    EYE_SEMANTICS,
    MOUTH_NAMES,
    POSE_NAMES,
    POSE_SIZE,
    SAMPLE_ANGLE,
)
from ..characters.finding import Character, find_character
from ..core.helpers import move_to_helpers
from ..core.settings import morph_settings
from .names import match_key_names

# Sidebar grouping: (label, icon, names)
POSE_GROUPS = (
    ("Eyes", "HIDE_OFF", POSE_NAMES[0:6]),
    ("Eyebrows", "MOD_SMOOTH", POSE_NAMES[6:12]),
    ("Mouth", "MESH_CIRCLE", POSE_NAMES[12:17]),
    ("Head", "ORIENTATION_GIMBAL", ANGLE_NAMES),
)

# Head bones of common rigs, best first; then necks as a fallback.
HEAD_BONE_NAMES = (
    "head", "Head", "J_Bip_C_Head", "mixamorig:Head", "頭", "Bip01 Head", "Bip001 Head",
    "CC_Base_Head", "J_Head", "Head_M", "DEF-head", "ORG-head", "c_head.x", "head.x",
)  # fmt: skip
NECK_BONE_NAMES = (
    "neck", "Neck", "J_Bip_C_Neck", "mixamorig:Neck", "首", "Bip01 Neck", "Bip001 Neck",
    "neck01", "neck_01", "CC_Base_NeckTwist01", "DEF-neck", "c_neck.x",
)  # fmt: skip


def prop_path(name: str) -> str:
    return f'["{name}"]'


# ------------------------------------------------------------------------- detection


def find_shape_keys(objects) -> dict:
    """{target: [(object name, shape key name, weight), ...]} for the 17 targets.

    ``objects`` are the character's meshes (others are skipped). A target no mesh can
    express maps to an empty list.
    """
    result = {name: [] for name in EXPRESSION_NAMES}
    for obj in objects:
        if obj.type != "MESH" or obj.data.shape_keys is None:
            continue
        blocks = obj.data.shape_keys.key_blocks
        reference = obj.data.shape_keys.reference_key
        names = [kb.name for kb in blocks if kb != reference]
        for target, keys in match_key_names(names).items():
            result[target].extend((obj.name, key, float(w)) for key, w in keys)
    return result


def find_head_bone(armature) -> str | None:
    """The name of the bone head angles rotate: a head bone, else a neck bone."""
    if armature is None or armature.type != "ARMATURE":
        return None
    bones = armature.data.bones
    for group in (HEAD_BONE_NAMES, NECK_BONE_NAMES):
        for name in group:
            if name in bones:
                return name
        wanted = {n.lower() for n in group}
        for bone in bones:
            short = bone.name.rsplit(":", 1)[-1].lower()
            if short in wanted or short.replace("_", "").replace(" ", "") in wanted:
                return bone.name
    return None


# ------------------------------------------------------------------------- head angles


DEGREE = math.pi / 180.0


def _axis_quaternion(axis, degrees) -> Quaternion:
    return Quaternion(axis, math.radians(degrees))


def head_rotation(roll: float, pitch: float, yaw: float) -> Matrix:
    """The head rotation in the armature's frame, as a 3x3 matrix (degrees in)."""
    q = (
        _axis_quaternion((0, 0, 1), yaw)
        @ _axis_quaternion((1, 0, 0), pitch)
        @ _axis_quaternion((0, 1, 0), roll)
    )
    return q.to_matrix()


HEAD_CONSTRAINT = "AniRender Head Pose"
HEAD_EULER_ORDER = "YXZ"  # Blender's YXZ Euler = Rz @ Rx @ Ry: roll, then pitch, then yaw


def head_pose_empty_name(armature) -> str:
    return f"{armature.name} Head Pose"


def _ensure_head_pose_empty(armature, owner):
    """The hidden empty (child of the armature) whose rotation the sliders drive.

    It lives in the add-on's hidden helpers collection, not beside the character.
    """
    name = head_pose_empty_name(armature)
    empty = bpy.data.objects.get(name)
    if empty is None or empty.type != "EMPTY":
        empty = bpy.data.objects.new(name, None)
    scenes = armature.users_scene or (bpy.context.scene,)
    for scene in scenes:
        move_to_helpers(empty, scene)
    empty.parent = armature
    empty.matrix_parent_inverse.identity()
    empty.location = (0.0, 0.0, 0.0)
    empty.rotation_mode = HEAD_EULER_ORDER
    empty.empty_display_type = "ARROWS"
    empty.empty_display_size = 0.05
    empty.hide_render = False  # render depsgraphs skip hidden objects, constraints included
    anim = empty.animation_data
    if anim is not None:
        for fcurve in list(anim.drivers):
            anim.drivers.remove(fcurve)
    for index, name in ((0, "head_pitch"), (1, "head_roll"), (2, "head_yaw")):
        _new_driver(empty, "rotation_euler", index, owner, (name,), f"{name}*{DEGREE:.12f}")
    return empty


def _remove_head_constraints(armature) -> None:
    for pose_bone in armature.pose.bones:
        for constraint in list(pose_bone.constraints):
            if constraint.name.startswith(HEAD_CONSTRAINT):
                pose_bone.constraints.remove(constraint)


def _add_head_constraint(armature, bone_name, empty):
    """Copy the empty's rotation *before* the bone's own, in armature (pose) space.

    In pose space, "before original" makes the new rotation ``R @ R_bone`` about the
    bone's head: a turn about the armature's axes whatever the bone's roll, on top of
    any animation of the bone.
    """
    pose_bone = armature.pose.bones[bone_name]
    constraint = pose_bone.constraints.new("COPY_ROTATION")
    constraint.name = HEAD_CONSTRAINT
    constraint.target = empty
    constraint.target_space = "LOCAL"
    constraint.owner_space = "POSE"
    constraint.mix_mode = "BEFORE"
    constraint.euler_order = HEAD_EULER_ORDER
    return constraint


# ------------------------------------------------------------------------- the rig


def ensure_pose_properties(owner) -> None:
    """Create the 20 slider custom properties (0 by default) with ranges and tooltips."""
    for name in POSE_NAMES:
        if name not in owner.keys():
            owner[name] = 0.0
        ui = owner.id_properties_ui(name)
        if name in ANGLE_NAMES:
            ui.update(
                min=-ANGLE_LIMIT,
                max=ANGLE_LIMIT,
                soft_min=-45.0,
                soft_max=45.0,
                default=0.0,
                description=f"Head {name[5:]} in degrees (AniRender pose vector)",
            )
        else:
            ui.update(
                min=0.0,
                max=1.0,
                soft_min=0.0,
                soft_max=1.0,
                default=0.0,
                description=f"{name.replace('_', ' ')} (AniRender pose vector)",
            )
        owner.property_overridable_library_set(prop_path(name), True)


def _is_pose_driver(fcurve, owner) -> bool:
    paths = {prop_path(n) for n in POSE_NAMES}
    for var in fcurve.driver.variables:
        for target in var.targets:
            if target.id == owner and target.data_path in paths:
                return True
    return False


def remove_pose_drivers(character: Character) -> int:
    """Remove every driver that reads the pose sliders (shape keys and head bone)."""
    owner = character.owner
    holders = [m.data.shape_keys for m in character.meshes if m.data.shape_keys]
    if character.armature is not None:
        holders.append(character.armature)
        empty = bpy.data.objects.get(head_pose_empty_name(character.armature))
        if empty is not None:
            holders.append(empty)
    removed = 0
    for holder in holders:
        anim = holder.animation_data
        if anim is None:
            continue
        for fcurve in list(anim.drivers):
            if _is_pose_driver(fcurve, owner):
                path = fcurve.data_path
                anim.drivers.remove(fcurve)
                removed += 1
                if isinstance(holder, bpy.types.Key) and path.endswith(".value"):
                    holder.path_resolve(path[: -len(".value")]).value = 0.0  # undriven: neutral
    return removed


def remove_morph_rig(character: Character) -> None:
    """Undo ``setup_morph_rig``: drivers, head constraint and empty, sliders, bindings."""
    owner = character.owner
    remove_pose_drivers(character)
    if character.armature is not None:
        _remove_head_constraints(character.armature)
        empty = bpy.data.objects.get(head_pose_empty_name(character.armature))
        if empty is not None:
            bpy.data.objects.remove(empty)
    for name in (*POSE_NAMES, "anirender_morph_rig"):
        if name in owner.keys():
            del owner[name]
    settings = morph_settings(owner)
    if settings is not None:
        settings.bindings.clear()
    refresh(character)


def _add_variable(driver, owner, name):
    var = driver.variables.new()
    var.name = name
    var.type = "SINGLE_PROP"
    target = var.targets[0]
    target.id_type = "OBJECT"
    target.id = owner
    target.data_path = prop_path(name)


def _new_driver(holder, data_path, index, owner, names, expression):
    fcurve = holder.driver_add(data_path, index) if index >= 0 else holder.driver_add(data_path)
    for modifier in list(fcurve.modifiers):
        fcurve.modifiers.remove(modifier)
    driver = fcurve.driver
    driver.type = "SCRIPTED"
    for name in names:
        _add_variable(driver, owner, name)
    driver.expression = expression
    return fcurve


def build_drivers(character: Character, bindings: dict, head_bone: str | None) -> dict:
    """Replace the pose drivers: shape keys from ``bindings``, the head from ``head_bone``.

    ``bindings`` is ``find_shape_keys``' form. Returns {"shape_keys": n, "head": bool}.
    """
    owner = character.owner
    ensure_pose_properties(owner)
    remove_pose_drivers(character)
    per_key: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for target, entries in bindings.items():
        if target not in EXPRESSION_NAMES:
            raise AniRenderError(f'"{target}" is not a pose target; use one of {POSE_NAMES}.')
        for obj_name, key_name, weight in entries:
            per_key.setdefault((obj_name, key_name), []).append((target, float(weight)))
    meshes = {m.name: m for m in character.meshes}
    for (obj_name, key_name), sources in per_key.items():
        obj = meshes.get(obj_name) or bpy.data.objects.get(obj_name)
        keys = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
        if keys is None or key_name not in keys.key_blocks:
            raise AniRenderError(
                f'Shape key "{key_name}" was not found on mesh "{obj_name}". '
                "Fix the morph binding (or run Detect Shape Keys again)."
            )
        names = sorted({t for t, _ in sources}, key=POSE_NAMES.index)
        weight = {t: 0.0 for t in names}
        for t, w in sources:
            weight[t] += w
        expression = "+".join(f"{t}*{weight[t]:.6g}" for t in names)
        path = f'key_blocks["{bpy.utils.escape_identifier(key_name)}"].value'
        _new_driver(keys, path, -1, owner, names, expression)
    has_head = False
    armature = character.armature
    if armature is not None:
        _remove_head_constraints(armature)
    if head_bone and armature is not None:
        if head_bone not in armature.pose.bones:
            raise AniRenderError(
                f'Bone "{head_bone}" is not in armature "{armature.name}". '
                "Pick the head (or neck) bone in the Morphs panel."
            )
        empty = _ensure_head_pose_empty(armature, owner)
        _add_head_constraint(armature, head_bone, empty)
        has_head = True
    refresh(character)
    return {"shape_keys": len(per_key), "head": has_head}


def refresh(character: Character) -> None:
    """Tag what the sliders drive so the next depsgraph evaluation picks new values."""
    character.owner.update_tag()
    if character.armature is not None:
        character.armature.update_tag(refresh={"OBJECT", "DATA"})
    for mesh in character.meshes:
        mesh.update_tag(refresh={"DATA"})
        if mesh.data.shape_keys is not None:
            mesh.data.shape_keys.update_tag()


def stored_bindings(owner) -> dict | None:
    """The bindings edited in the Morphs panel, or None when there are none."""
    settings = morph_settings(owner)
    if settings is None or not settings.bindings:
        return None
    result = {name: [] for name in EXPRESSION_NAMES}
    for item in settings.bindings:
        if item.object is not None and item.shape_key:
            result[item.target].append((item.object.name, item.shape_key, item.weight))
    return result


def store_bindings(owner, bindings: dict, head_bone: str | None) -> None:
    settings = morph_settings(owner)
    if settings is None:
        return
    settings.bindings.clear()
    for target in EXPRESSION_NAMES:
        for obj_name, key_name, weight in bindings.get(target, ()):
            item = settings.bindings.add()
            item.target = target
            item.object = bpy.data.objects.get(obj_name)
            item.shape_key = key_name
            item.weight = weight
    settings.head_bone = head_bone or ""


def setup_morph_rig(target, detect: bool = False) -> dict:
    """Create the sliders and drivers on a character (armature, mesh or Character).

    Uses the bindings stored in the panel unless ``detect`` is set or none are stored;
    returns the bindings used.
    """
    character = target if isinstance(target, Character) else find_character(target)
    owner = character.owner
    bindings = None if detect else stored_bindings(owner)
    settings = morph_settings(owner)
    head_bone = settings.head_bone if settings is not None and not detect else ""
    if bindings is None:
        bindings = find_shape_keys(character.meshes)
        head_bone = find_head_bone(character.armature)
        store_bindings(owner, bindings, head_bone)
    head_bone = head_bone or find_head_bone(character.armature)
    build_drivers(character, bindings, head_bone)
    owner["anirender_morph_rig"] = 1
    return bindings


def is_rigged(owner) -> bool:
    return bool(owner.get("anirender_morph_rig")) and all(n in owner.keys() for n in POSE_NAMES)


def _head_target_lost(character: Character) -> bool:
    """True when a head constraint lost its empty (deleted by hand or by an undo)."""
    if character.armature is None:
        return False
    return any(
        c.name.startswith(HEAD_CONSTRAINT) and c.target is None
        for b in character.armature.pose.bones
        for c in b.constraints
    )


# ------------------------------------------------------------------------- pose values


def _as_pose(pose) -> list[float]:
    values = [float(v) for v in pose]
    if len(values) != POSE_SIZE:
        raise AniRenderError(
            f"A pose has {POSE_SIZE} values ({', '.join(POSE_NAMES)}); got {len(values)}."
        )
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise AniRenderError(f"Pose value {POSE_NAMES[i]} is not a number ({v}).")
    return values


def apply_pose(armature, pose) -> None:
    """Set a character's 20 sliders (what the panel does); sets up the rig on first use.

    ``armature`` may be the armature, one of its meshes, or a ``Character``.
    """
    character = armature if isinstance(armature, Character) else find_character(armature)
    values = _as_pose(pose)
    owner = character.owner
    if not is_rigged(owner) or _head_target_lost(character):
        setup_morph_rig(character)
    for name, value in zip(POSE_NAMES, values):
        if name in ANGLE_NAMES:
            value = max(-ANGLE_LIMIT, min(ANGLE_LIMIT, value))
        else:
            value = max(0.0, min(1.0, value))
        owner[name] = value
    refresh(character)


def get_pose(owner) -> list[float]:
    return [float(owner.get(name, 0.0)) for name in POSE_NAMES]


def keyframe_pose(owner, frame: float | None = None) -> int:
    """Insert keys on all 20 sliders at ``frame`` (default: the current frame)."""
    ensure_pose_properties(owner)
    kwargs = {} if frame is None else {"frame": frame}
    for name in POSE_NAMES:
        owner.keyframe_insert(prop_path(name), group="AniRender Pose", **kwargs)
    return POSE_SIZE


def pose_to_text(pose) -> str:
    """One line of 20 comma-separated numbers, in ``POSE_NAMES`` order (the CSV order)."""
    return ",".join(f"{v:.8g}" for v in _as_pose(pose))


def pose_from_text(text: str) -> list[float]:
    """Parse what ``pose_to_text`` wrote (commas, spaces or tabs between values)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise AniRenderError(
            "The clipboard does not hold a pose: expected 20 numbers separated by commas."
        ) from None
    return _as_pose(values)


def _separate_sides(bindings, semantic) -> bool:
    left = {(o, k) for o, k, _ in bindings.get(f"{semantic}_l", ())}
    right = {(o, k) for o, k, _ in bindings.get(f"{semantic}_r", ())}
    return bool(left) and bool(right) and left != right


def random_pose(bindings: dict, seed: int | None = None, max_angle: float = SAMPLE_ANGLE):
    """A pose sampled as in AnimeCeleb's Algorithm 1, from the semantics the rig has.

    One eye, one eyebrow and one mouth semantic among the bound ones; two independent
    U(0,1) values for a semantic with separate left/right morphs, else one for both;
    roll, pitch and yaw from U(-max_angle, max_angle); everything else 0.
    """
    rng = np.random.default_rng(seed)
    pose = [0.0] * POSE_SIZE

    def bound(name):
        return bool(bindings.get(name))

    for semantics in (EYE_SEMANTICS, BROW_SEMANTICS):
        have = [s for s in semantics if bound(f"{s}_l") or bound(f"{s}_r")]
        if not have:
            continue
        semantic = have[int(rng.integers(len(have)))]
        left = POSE_NAMES.index(f"{semantic}_l")
        if _separate_sides(bindings, semantic):
            pose[left], pose[left + 1] = float(rng.random()), float(rng.random())
        else:
            pose[left] = pose[left + 1] = float(rng.random())
    mouths = [m for m in MOUTH_NAMES if bound(m)]
    if mouths:
        pose[POSE_NAMES.index(mouths[int(rng.integers(len(mouths)))])] = float(rng.random())
    for name in ANGLE_NAMES:
        pose[POSE_NAMES.index(name)] = float(rng.uniform(-max_angle, max_angle))
    return pose


# ------------------------------------------------------------------------- properties
