"""The canonical frame: A-pose from T-pose rigs, stable colours, nothing else touched."""

import math

import numpy as np
import pytest

from anirender.addon.passes import canonical


def _colours(armature):
    out = {}
    for obj in canonical.deformed_meshes(armature):
        attr = obj.data.attributes[canonical.ATTRIBUTE]
        values = np.empty(len(attr.data) * 3, np.float32)
        attr.data.foreach_get("vector", values)
        out[obj.name] = values.reshape(-1, 3)
    return out


def _pose_state(armature):
    return [tuple(round(v, 6) for row in b.matrix_basis for v in row) for b in armature.pose.bones]


def test_t_pose_rig_gets_lowered_arms_inside_the_unit_cube(toy_character):
    bpy = pytest.importorskip("bpy")
    arm = toy_character
    scene = bpy.context.scene
    scene.frame_set(7)
    pose_before, frame_before = _pose_state(arm), scene.frame_current
    data_before = {n: len(getattr(bpy.data, n)) for n in ("objects", "scenes", "armatures")}

    recipe = canonical.set_canonical_pose(arm, "A_POSE")

    assert recipe["mode"] == "A_POSE" and abs(recipe["arm_angle"]) < 1.0  # modelled in T-pose
    assert sorted(recipe["meshes"]) == ["Body", "Hair", "Skirt"]
    colours = _colours(arm)
    stacked = np.concatenate(list(colours.values()))
    assert stacked.min() > 0.0 and stacked.max() < 1.0
    span = stacked.max(0) - stacked.min(0)
    # lowered arms: the height (1.68 m) is now the longest side, spanning 1 / 1.05
    assert span.argmax() == 2
    assert span[2] == pytest.approx(1 / canonical.MARGIN, abs=1e-5)
    rest = canonical.set_canonical_pose(arm, "REST")
    rest_span = np.ptp(np.concatenate(list(_colours(arm).values())), axis=0)
    assert rest["mode"] == "REST"
    assert rest_span[0] > span[0] + 0.15  # the T-pose arm span is much wider
    # the user's pose, frame and data are untouched
    assert _pose_state(arm) == pose_before and scene.frame_current == frame_before
    assert {n: len(getattr(bpy.data, n)) for n in data_before} == data_before


def test_colours_do_not_depend_on_frame_placement_or_expression(toy_character):
    bpy = pytest.importorskip("bpy")
    arm = toy_character
    scene = bpy.context.scene
    scene.frame_set(1)
    first = _colours(arm) if canonical.set_canonical_pose(arm) else None
    scene.frame_set(13)
    arm.location = (1.5, -0.7, 0.2)
    body = bpy.data.objects["Body"]
    for key in body.data.shape_keys.key_blocks[1:]:
        key.value = 1.0
    canonical.set_canonical_pose(arm)
    again = _colours(arm)
    for name in first:
        np.testing.assert_allclose(again[name], first[name], atol=1e-6)


def test_a_pose_rest_rig_is_not_lowered_twice(toy_character):
    """The T-pose toy and the same toy re-rigged with an A-pose rest give the same colours."""
    bpy = pytest.importorskip("bpy")
    from mathutils import Matrix, Vector

    arm = toy_character
    canonical.set_canonical_pose(arm)
    from_t_pose = _colours(arm)

    # pose both upper arms 45 degrees down about the forward axis ...
    arm.animation_data_clear()
    for pose_bone in arm.pose.bones:
        pose_bone.matrix_basis = Matrix.Identity(4)
    bpy.context.view_layer.update()
    for side, sign in (("L", 1.0), ("R", -1.0)):
        bone = arm.data.bones[f"upper_arm.{side}"]
        turn = Matrix.Rotation(math.radians(45.0), 4, Vector((0.0, sign, 0.0)))
        head = Matrix.Translation(bone.head_local)
        arm.pose.bones[bone.name].matrix = head @ turn @ head.inverted() @ bone.matrix_local
    bpy.context.view_layer.update()
    # ... bake that pose into the meshes (every shape key keeps its offset) ...
    depsgraph = bpy.context.evaluated_depsgraph_get()
    meshes = canonical.deformed_meshes(arm)
    baked = {}
    for obj in meshes:
        keys = obj.data.shape_keys
        if keys:
            obj.show_only_shape_key, obj.active_shape_key_index = True, 0
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in meshes:
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        baked[obj.name] = co
    for obj in meshes:
        old = np.empty(len(obj.data.vertices) * 3, np.float32)
        obj.data.vertices.foreach_get("co", old)
        new = baked[obj.name]
        obj.data.vertices.foreach_set("co", new)
        if obj.data.shape_keys:
            for key in obj.data.shape_keys.key_blocks:
                co = np.empty(len(key.data) * 3, np.float32)
                key.data.foreach_get("co", co)
                key.data.foreach_set("co", co + (new - old))
            obj.show_only_shape_key = False
        obj.data.update()
    # ... and make the pose the new rest pose
    view_layer = bpy.context.view_layer
    view_layer.objects.active = arm
    with bpy.context.temp_override(active_object=arm, object=arm):
        bpy.ops.object.mode_set(mode="POSE")
        bpy.ops.pose.armature_apply(selected=False)
        bpy.ops.object.mode_set(mode="OBJECT")
    assert canonical.arm_angle(arm, "upper_arm.L") == pytest.approx(45.0, abs=1e-3)

    recipe = canonical.set_canonical_pose(arm)
    assert recipe["arm_angle"] == pytest.approx(45.0, abs=1e-3)
    from_a_pose = _colours(arm)
    for name in from_t_pose:
        np.testing.assert_allclose(from_a_pose[name], from_t_pose[name], atol=1e-4)


def test_colours_survive_saving_and_reopening(toy_character, tmp_path):
    bpy = pytest.importorskip("bpy")
    recipe = canonical.set_canonical_pose(toy_character)
    colours = _colours(toy_character)
    path = tmp_path / "toy.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    arm = bpy.data.objects["Toy"]
    assert canonical.has_canonical(arm)
    assert canonical.canonical_recipe(arm)["centre"] == pytest.approx(recipe["centre"])
    reopened = _colours(arm)
    for name in colours:
        np.testing.assert_array_equal(reopened[name], colours[name])


@pytest.mark.parametrize(
    "left,right",
    [
        ("upperarm01.L", "upperarm01.R"),
        ("DEF-upper_arm.L", "DEF-upper_arm.R"),
        ("mixamorig:LeftArm", "mixamorig:RightArm"),
        ("J_Bip_L_UpperArm", "J_Bip_R_UpperArm"),
        ("左腕", "右腕"),
    ],
)
def test_upper_arms_are_found_across_rig_families(blender, left, right):
    bpy = blender
    data = bpy.data.armatures.new("Rig")
    rig = bpy.data.objects.new("Rig", data)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    with bpy.context.temp_override(active_object=rig, object=rig):
        bpy.ops.object.mode_set(mode="EDIT")
        for name, sign in (("spine", 0), (left, 1), (right, -1)):
            bone = data.edit_bones.new(name)
            bone.head = (0.2 * sign, 0, 1.4)
            bone.tail = (0.5 * sign, 0, 1.4 - 0.3 * abs(sign)) if sign else (0, 0, 1.6)
        bpy.ops.object.mode_set(mode="OBJECT")
    assert canonical.find_upper_arms(rig) == (left, right)
    assert canonical.arm_angle(rig, left) == pytest.approx(45.0)


def test_set_canonical_pose_operator(addon, toy_character):
    bpy = pytest.importorskip("bpy")
    bpy.context.view_layer.objects.active = toy_character
    assert bpy.ops.anirender.set_canonical_pose(mode="REST") == {"FINISHED"}
    assert canonical.canonical_recipe(toy_character)["mode"] == "REST"
    empty = bpy.data.objects.new("Lonely", bpy.data.armatures.new("Lonely"))
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    with pytest.raises(RuntimeError, match="deforms no meshes"):
        bpy.ops.anirender.set_canonical_pose(mode="A_POSE")


def test_current_frame_mode_uses_the_pose_on_screen(toy_character):
    bpy = pytest.importorskip("bpy")
    arm = toy_character
    scene = bpy.context.scene
    scene.frame_set(9)
    recipe = canonical.set_canonical_pose(arm, "CURRENT")
    assert recipe["mode"] == "CURRENT"
    body = bpy.data.objects["Body"]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = body.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    to_armature = np.array(arm.matrix_world.inverted() @ evaluated.matrix_world)
    posed = co.reshape(-1, 3) @ to_armature[:3, :3].T + to_armature[:3, 3]
    expected = 0.5 + (posed - recipe["centre"]) * recipe["scale"]
    np.testing.assert_allclose(_colours(arm)["Body"], expected, atol=1e-5)
    canonical.set_canonical_pose(arm, "A_POSE")
    assert np.abs(_colours(arm)["Body"] - expected).max() > 0.05  # the wave is not the A-pose
