"""The canonical frame of a character: the pose and normalisation that define UDP colours.

Every vertex of every mesh the character's armature deforms gets one fixed position in a
shared canonical pose; rendered from any camera in any pose, that position (scaled into
[0, 1]^3) is the UDP colour of the surface point, so a body part keeps its colour.

Rule (stable: computed once, stored in the file):
- Pose. ``A_POSE`` (default, the CoNR convention): the armature's rest pose with both
  upper arms turned about their head, in the plane of the arm and the vertical, until
  they point 45 degrees below the horizontal. The angle is measured on the rest pose, so
  a T-pose rig is lowered 45 degrees and a rig modelled in an A-pose is left alone (no
  double lowering; a rig at 40 degrees turns 5). Upper-arm bones are found by name
  (MakeHuman ``upperarm01.L``, Rigify ``upper_arm.L``/``DEF-upper_arm.L``, Mixamo
  ``mixamorig:LeftArm``, VRM ``J_Bip_L_UpperArm``/``leftUpperArm``, MMD ``左腕``/``右腕``,
  ...); a rig without recognisable arms keeps its rest pose. ``REST``: the rest pose as
  modelled. ``CURRENT``: the pose at the scene's current frame.
  In every mode shape keys are at their basis and only armature modifiers apply, so
  a vertex's canonical position depends on the rig alone, never on an expression.
- Space. Positions are taken in the armature object's local space (Blender: +X is the
  character's left, -Y its front, +Z up), so moving the character does not change them.
- Normalisation. ``udp = 0.5 + (p - centre) * scale`` with ``centre`` the centre of the
  axis-aligned box around all canonical positions of all the character's meshes and
  ``scale = 1 / (1.05 * longest box side)``: uniform, centred, the whole character
  inside with a 2.5 % margin on its longest axis.

Storage: the normalised colour is a FLOAT_VECTOR point attribute ``anirender_canonical``
on each mesh (it follows the vertices through armature, shape keys and subdivision), and
the armature object keeps the recipe as the custom property ``anirender_canonical``
(mode, centre, scale, the arm angle found, the meshes covered).
"""

import math

import bpy
import numpy as np
from mathutils import Matrix, Vector

from ...errors import AniRenderError
from ..characters.finding import deformed_meshes
from ..core.mesh_arrays import vertex_positions

ATTRIBUTE = "anirender_canonical"
RECIPE = "anirender_canonical"
MODES = (
    ("A_POSE", "A-Pose", "Rest pose with the upper arms lowered to 45 degrees (CoNR)"),
    ("REST", "Rest Pose", "The armature's rest pose as modelled"),
    ("CURRENT", "Current Frame", "The pose at the current frame"),
)
A_POSE_ARM_ANGLE = 45.0  # degrees below the horizontal
_ANGLE_TOLERANCE = 1.0  # degrees; closer than this counts as already there
MARGIN = 1.05

# upper-arm bone names per rig family, left then right; compared case-insensitively
_UPPER_ARMS = (
    ("upperarm01.L", "upperarm01.R"),  # MakeHuman / MPFB
    ("upper_arm.L", "upper_arm.R"),  # Rigify metarig, toy character
    ("DEF-upper_arm.L", "DEF-upper_arm.R"),  # Rigify generated
    ("mixamorig:LeftArm", "mixamorig:RightArm"),  # Mixamo
    ("J_Bip_L_UpperArm", "J_Bip_R_UpperArm"),  # VRoid / VRM
    ("leftUpperArm", "rightUpperArm"),  # VRM humanoid names
    ("左腕", "右腕"),  # MMD
    ("腕.L", "腕.R"),  # MMD after mmd_tools name mirroring
    ("upperarm_l", "upperarm_r"),  # Unreal
    ("LeftArm", "RightArm"),  # Mixamo without prefix, BVH
    ("UpperArm.L", "UpperArm.R"),
    ("upper_arm_L", "upper_arm_R"),
)

_KEEP_MODIFIERS = {"ARMATURE"}


def find_upper_arms(armature) -> tuple:
    """(left, right) upper-arm bone names of the first rig family that has both, or ()."""
    names = {bone.name.lower(): bone.name for bone in armature.data.bones}
    for left, right in _UPPER_ARMS:
        if left.lower() in names and right.lower() in names:
            return names[left.lower()], names[right.lower()]
    return ()


def arm_angle(armature, bone_name: str) -> float:
    """Degrees the bone points below the armature's horizontal plane in the rest pose."""
    bone = armature.data.bones[bone_name]
    direction = (bone.tail_local - bone.head_local).normalized()
    return math.degrees(math.asin(max(-1.0, min(1.0, -direction.z))))


def has_canonical(armature, scene=None) -> bool:
    """True when the armature has a recipe and every mesh it deforms carries the colours."""
    if RECIPE not in armature.keys():
        return False
    for mesh_obj in deformed_meshes(armature, scene):
        attr = mesh_obj.data.attributes.get(ATTRIBUTE)
        if attr is None or attr.domain != "POINT" or attr.data_type != "FLOAT_VECTOR":
            return False
    return True


def ensure_canonical(armature, scene=None) -> None:
    """Compute the canonical frame (A-pose) unless the character already has one."""
    if not has_canonical(armature, scene):
        mode = armature.get(RECIPE, {}).get("mode", "A_POSE")
        set_canonical_pose(armature, mode=mode, scene=scene)


def set_canonical_pose(armature, mode: str = "A_POSE", scene=None) -> dict:
    """(Re)compute and store the canonical frame of ``armature``; return its recipe.

    Works on temporary copies in a temporary scene: the user's pose, frame, shape keys
    and modifiers are never touched. Only the attribute and the recipe are written.
    """
    scene = scene or bpy.context.scene
    if armature is None or armature.type != "ARMATURE":
        raise AniRenderError("Select the character's armature to set its canonical pose.")
    if mode not in {m[0] for m in MODES}:
        raise AniRenderError(f"Unknown canonical pose mode {mode!r}.")
    meshes = deformed_meshes(armature, scene)
    if not meshes:
        raise AniRenderError(
            f"Armature '{armature.name}' deforms no mesh in scene '{scene.name}'. Give the "
            "body, hair and clothes an Armature modifier pointing at it, or parent them to it."
        )
    positions, angle = _canonical_positions(armature, meshes, mode, scene)
    stacked = np.concatenate(list(positions.values()))
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    centre = (low + high) / 2.0
    extent = float((high - low).max())
    if not np.isfinite(extent) or extent <= 0.0:
        raise AniRenderError(f"The meshes of '{armature.name}' have no size; nothing to colour.")
    scale = 1.0 / (MARGIN * extent)
    for mesh_obj in meshes:
        colours = 0.5 + (positions[mesh_obj.name] - centre) * scale
        _store_attribute(mesh_obj.data, colours.astype(np.float32))
    recipe = {
        "mode": mode,
        "centre": [float(c) for c in centre],
        "scale": float(scale),
        "arm_angle": float(angle) if angle is not None else -1.0,
        "meshes": [m.name for m in meshes],
    }
    armature[RECIPE] = recipe
    return recipe


def canonical_recipe(armature) -> dict:
    """The stored recipe as plain Python values (empty when none)."""
    stored = armature.get(RECIPE)
    return stored.to_dict() if hasattr(stored, "to_dict") else dict(stored or {})


def _store_attribute(mesh, colours: np.ndarray) -> None:
    existing = mesh.attributes.get(ATTRIBUTE)
    if existing is not None and (
        existing.domain != "POINT" or existing.data_type != "FLOAT_VECTOR"
    ):
        mesh.attributes.remove(existing)
        existing = None
    attr = existing or mesh.attributes.new(ATTRIBUTE, "FLOAT_VECTOR", "POINT")
    attr.data.foreach_set("vector", colours.ravel())
    mesh.update()


def _canonical_positions(armature, meshes, mode, scene):
    """Per-mesh (N, 3) vertex positions in armature space under the canonical pose."""
    temp = bpy.data.scenes.new("AniRender canonical (temporary)")
    made_objects, made_armature_data = [], None
    try:
        temp.frame_current = scene.frame_current
        rig = armature.copy()
        made_objects.append(rig)
        rig.data = made_armature_data = armature.data.copy()
        temp.collection.objects.link(rig)
        angle = None
        if mode != "CURRENT":
            rig.animation_data_clear()
            for bone in rig.pose.bones:
                bone.matrix_basis = Matrix.Identity(4)
                for constraint in bone.constraints:
                    constraint.enabled = False
        if mode == "REST":
            rig.data.pose_position = "REST"
        else:
            rig.data.pose_position = "POSE"
        copies = {}
        for mesh_obj in meshes:
            copy = mesh_obj.copy()  # shares the mesh data; the data is only read
            made_objects.append(copy)
            copy.animation_data_clear()
            if copy.parent == armature:
                copy.parent = rig
            for mod in copy.modifiers:
                if mod.type == "ARMATURE" and mod.object == armature:
                    mod.object = rig
                mod.show_viewport = mod.type in _KEEP_MODIFIERS
            if mesh_obj.data.shape_keys is not None:
                copy.show_only_shape_key = True
                copy.active_shape_key_index = 0  # the basis
            temp.collection.objects.link(copy)
            copies[mesh_obj.name] = copy
        view_layer = temp.view_layers[0]
        view_layer.update()
        if mode == "A_POSE":
            angle = _lower_arms(rig, armature)
            view_layer.update()
        depsgraph = view_layer.depsgraph
        to_armature = np.array(rig.matrix_world.inverted(), dtype=np.float64)
        positions = {}
        for name, copy in copies.items():
            positions[name] = vertex_positions(copy, depsgraph, to_space=to_armature)
            expected = len(bpy.data.objects[name].data.vertices)
            if len(positions[name]) != expected:
                raise AniRenderError(
                    f"Mesh '{name}' changes its vertex count with only its Armature modifier "
                    "on; apply or remove the modifier that adds or removes vertices."
                )
        return positions, angle
    finally:
        for obj in made_objects:
            bpy.data.objects.remove(obj, do_unlink=True)
        if made_armature_data is not None:
            bpy.data.armatures.remove(made_armature_data)
        bpy.data.scenes.remove(temp)


def _lower_arms(rig, original):
    """Turn both upper arms to A_POSE_ARM_ANGLE below horizontal; return the rest angle."""
    arms = find_upper_arms(original)
    if not arms:
        return None
    angles = []
    down = Vector((0.0, 0.0, -1.0))
    for name in arms:
        bone = rig.data.bones[name]
        rest_angle = arm_angle(rig, name)
        angles.append(rest_angle)
        turn = A_POSE_ARM_ANGLE - rest_angle
        if abs(turn) < _ANGLE_TOLERANCE:
            continue
        direction = (bone.tail_local - bone.head_local).normalized()
        axis = direction.cross(down)
        if axis.length < 1e-6:  # arm hangs straight down: nothing sensible to do
            continue
        rotation = Matrix.Rotation(math.radians(turn), 4, axis.normalized())
        head = Matrix.Translation(bone.head_local)
        pose_bone = rig.pose.bones[name]
        pose_bone.matrix = head @ rotation @ head.inverted() @ bone.matrix_local
    return float(np.mean(angles))
