"""Pose sliders on real rigs: name tables, shape-key drivers, head bone, save/reload, renders."""

import math

import numpy as np
import pytest

from anirender.addon.pose.names import match_key_names, normalise_name


def test_names_fold_width_suffix_and_case():
    assert normalise_name("ウィンク２右.001") == normalise_name("ウィンク2右")
    assert normalise_name("Blink_L") == normalise_name("blink.l") == "blinkl"
    found = match_key_names(["ウィンク.001", "ウィンク２右", "あ", "怒り左", "怒り右", "困る"])
    assert found["eye_closed_l"] == [("ウィンク.001", 1.0)]
    assert found["eye_closed_r"] == [("ウィンク２右", 1.0)]
    assert found["mouth_a"] == [("あ", 1.0)]
    assert found["brow_angry_l"] == [("怒り左", 1.0)]
    # a both-morph serves both sides at half weight
    assert found["brow_lowered_l"] == found["brow_lowered_r"] == [("困る", 0.5)]
    assert "mouth_o" not in found


def test_separate_left_right_beats_both_morph():
    found = match_key_names(["まばたき", "ウィンク", "ウィンク右"])
    assert found["eye_closed_l"] == [("ウィンク", 1.0)]
    assert found["eye_closed_r"] == [("ウィンク右", 1.0)]


@pytest.mark.parametrize(
    "names, target, expected",
    [
        (["blinkLeft", "blinkRight", "aa", "oh"], "eye_closed_l", "blinkLeft"),  # VRM 1.0
        (["Blink", "A", "I"], "mouth_i", "I"),  # VRM 0.x
        (["eyeBlinkLeft", "eyeBlinkRight", "jawOpen"], "mouth_a", "jawOpen"),  # ARKit
        (["browDownLeft", "browDownRight"], "brow_angry_r", "browDownRight"),
        (["eyebrows-left-up", "eyebrows-right-up"], "brow_raised_l", "eyebrows-left-up"),
        (["Eyes Closed", "Mouth A"], "eye_closed_r", "Eyes Closed"),  # plain English
    ],
)
def test_conventions(names, target, expected):
    assert expected in [k for k, _ in match_key_names(names)[target]]


# ---------------------------------------------------------------------------- helpers


def _key_values(bpy, meshes):
    """Evaluated shape-key values of every key on ``meshes``: {(mesh, key): value}."""
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    values = {}
    for mesh in meshes:
        keys = mesh.data.shape_keys
        if keys is None:
            continue
        evaluated = keys.evaluated_get(depsgraph)
        for block in evaluated.key_blocks:
            values[(mesh.name, block.name)] = block.value
    return values


def _head_delta(bpy, armature, bone):
    """The head bone's rotation relative to its rest orientation, in armature space."""
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = armature.evaluated_get(depsgraph)
    posed = evaluated.pose.bones[bone].matrix.to_3x3()
    rest = armature.data.bones[bone].matrix_local.to_3x3()
    return np.array(posed @ rest.inverted())


def _rotation(axis, degrees):
    from mathutils import Matrix

    return np.array(Matrix.Rotation(math.radians(degrees), 3, axis))


# ---------------------------------------------------------------------------- the toy


def test_toy_japanese_keys_map(toy_character):
    from anirender.addon.characters.finding import find_character
    from anirender.addon.pose import sliders as morphs

    found = morphs.find_shape_keys(find_character(toy_character).meshes)
    assert set(found) == set(morphs.EXPRESSION_NAMES)
    assert found["mouth_a"] == [("Body", "あ", 1.0)]
    # the toy has a both-eyes blink and a left wink only: the both morph serves both sides
    assert found["eye_closed_l"] == found["eye_closed_r"] == [("Body", "まばたき", 0.5)]
    assert found["brow_angry_l"] == [("Body", "怒り", 0.5)]
    assert found["mouth_u"] == [] and found["eye_surprised_l"] == []
    assert morphs.find_head_bone(toy_character) == "head"


def test_sliders_drive_keys_and_head_with_simple_expressions(toy_character):
    import bpy

    from anirender.addon.characters.finding import find_character
    from anirender.addon.pose import sliders as morphs

    character = find_character(toy_character)
    morphs.apply_pose(toy_character, [0.0] * 20)
    drivers = list(character.meshes[0].data.shape_keys.animation_data.drivers)
    empty = bpy.data.objects[morphs.head_pose_empty_name(toy_character)]
    drivers += list(empty.animation_data.drivers)
    assert len(drivers) == 3 + 3
    assert all(d.driver.is_simple_expression and d.driver.is_valid for d in drivers)

    pose = [0.0] * 20
    pose[morphs.POSE_NAMES.index("mouth_a")] = 0.7
    pose[morphs.POSE_NAMES.index("eye_closed_l")] = 1.0
    pose[morphs.POSE_NAMES.index("eye_closed_r")] = 0.5
    morphs.apply_pose(toy_character, pose)
    values = _key_values(bpy, character.meshes)
    assert values[("Body", "あ")] == pytest.approx(0.7, abs=1e-5)
    assert values[("Body", "まばたき")] == pytest.approx(0.75, abs=1e-5)
    assert values[("Body", "怒り")] == pytest.approx(0.0, abs=1e-6)
    assert values[("Body", "ウィンク")] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "name, axis, degrees",
    [("head_yaw", "Z", 20.0), ("head_pitch", "X", 20.0), ("head_roll", "Y", -15.0)],
)
def test_head_angle_turns_the_head_bone_about_the_documented_axis(
    toy_character, name, axis, degrees
):
    import bpy

    from anirender.addon.pose import sliders as morphs

    pose = [0.0] * 20
    pose[morphs.POSE_NAMES.index(name)] = degrees
    morphs.apply_pose(toy_character, pose)
    delta = _head_delta(bpy, toy_character, "head")
    np.testing.assert_allclose(delta, _rotation(axis, degrees), atol=1e-4)


def test_head_angles_ignore_the_bone_roll(blender):
    """A rolled, tilted head bone still turns about the armature's axes."""
    import bpy

    from anirender.addon.pose import sliders as morphs

    data = bpy.data.armatures.new("Rig")
    rig = bpy.data.objects.new("Rig", data)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    neck = data.edit_bones.new("Neck")
    neck.head, neck.tail, neck.roll = (0, 0, 1.4), (0, 0.02, 1.5), 0.4
    head = data.edit_bones.new("J_Bip_C_Head")
    head.head, head.tail, head.roll = (0, 0.02, 1.5), (0.03, 0.05, 1.7), math.radians(37)
    head.parent = neck
    bpy.ops.object.mode_set(mode="OBJECT")
    mesh = bpy.data.objects.new("Face", bpy.data.meshes.new("Face"))
    bpy.context.scene.collection.objects.link(mesh)
    mesh.parent = rig
    assert morphs.find_head_bone(rig) == "J_Bip_C_Head"

    roll, pitch, yaw = 12.0, -17.0, 25.0
    morphs.apply_pose(rig, [0.0] * 17 + [roll, pitch, yaw])
    expected = np.array(morphs.head_rotation(roll, pitch, yaw))
    np.testing.assert_allclose(_head_delta(bpy, rig, "J_Bip_C_Head"), expected, atol=1e-4)
    # and the composition order is yaw @ pitch @ roll about Z, X, Y
    composed = _rotation("Z", yaw) @ _rotation("X", pitch) @ _rotation("Y", roll)
    np.testing.assert_allclose(expected, composed, atol=1e-6)


def test_keys_and_drivers_survive_save_and_reload_without_scripts(toy_character, tmp_path):
    import bpy

    from anirender.addon.characters.finding import find_character
    from anirender.addon.pose import sliders as morphs

    first = [0.0] * 20
    first[morphs.POSE_NAMES.index("mouth_a")] = 1.0
    first[morphs.POSE_NAMES.index("head_yaw")] = 20.0
    second = [0.0] * 20
    second[morphs.POSE_NAMES.index("brow_angry_l")] = 1.0
    second[morphs.POSE_NAMES.index("brow_angry_r")] = 1.0
    second[morphs.POSE_NAMES.index("head_pitch")] = -10.0
    scene = bpy.context.scene
    for frame, pose in ((1, first), (13, second)):  # the toy's hips are straight at 1 and 13
        scene.frame_set(frame)
        morphs.apply_pose(toy_character, pose)
        morphs.keyframe_pose(toy_character)

    path = tmp_path / "posed.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # a render farm: no add-on, and Python drivers / scripts are not trusted
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    try:
        rig = bpy.data.objects["Toy"]
        character = find_character(rig)
        for frame, pose, key, bone_axis, angle in (
            (1, first, "あ", "Z", 20.0),
            (13, second, "怒り", "X", -10.0),
        ):
            bpy.context.scene.frame_set(frame)
            assert morphs.get_pose(rig) == pytest.approx(pose, abs=1e-5)
            values = _key_values(bpy, character.meshes)
            assert values[("Body", key)] == pytest.approx(1.0, abs=1e-5)
            delta = _head_delta(bpy, rig, "head")
            np.testing.assert_allclose(delta, _rotation(bone_axis, angle), atol=1e-4)
    finally:
        bpy.context.preferences.filepaths.use_scripts_auto_execute = True


def test_random_pose_follows_algorithm_1():
    from anirender.addon.pose import sliders as morphs

    separate = {
        "eye_closed_l": [("F", "wl", 1.0)],
        "eye_closed_r": [("F", "wr", 1.0)],
        "brow_angry_l": [("F", "angry", 0.5)],
        "brow_angry_r": [("F", "angry", 0.5)],
        "mouth_a": [("F", "a", 1.0)],
        "mouth_o": [("F", "o", 1.0)],
    }
    poses = np.array([morphs.random_pose(separate, seed=s) for s in range(200)])
    names = morphs.POSE_NAMES
    index = {n: names.index(n) for n in names}
    # eyes: separate morphs draw two independent values; brows: one for both
    assert np.mean(poses[:, index["eye_closed_l"]] != poses[:, index["eye_closed_r"]]) > 0.95
    np.testing.assert_array_equal(poses[:, index["brow_angry_l"]], poses[:, index["brow_angry_r"]])
    # exactly one mouth semantic, and only bound ones
    mouth = poses[:, 12:17]
    assert np.all((mouth > 0).sum(1) == 1)
    assert np.all(mouth[:, [1, 2, 4]] == 0)
    assert set(np.flatnonzero(mouth.sum(0))) == {0, 3}
    # unbound semantics stay 0; angles within +-20
    assert np.all(poses[:, 2:6] == 0) and np.all(poses[:, 8:12] == 0)
    assert np.all(np.abs(poses[:, 17:]) <= 20) and poses[:, 17:].std() > 5
    assert morphs.random_pose(separate, seed=3) == morphs.random_pose(separate, seed=3)


def test_pose_text_round_trip():
    from anirender.addon.pose import sliders as morphs
    from anirender.errors import AniRenderError

    pose = [0.25] * 17 + [-12.5, 3.0, 19.75]
    assert morphs.pose_from_text(morphs.pose_to_text(pose)) == pytest.approx(pose)
    with pytest.raises(AniRenderError, match="20"):
        morphs.pose_from_text("1, 2, 3")
    with pytest.raises(AniRenderError, match="clipboard"):
        morphs.pose_from_text("hello")


# ---------------------------------------------------------------------------- MakeHuman


def _evaluated_coords(bpy, obj):
    bpy.context.view_layer.update()
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3)


@pytest.mark.parametrize(
    "target, key",
    [
        ("eye_closed_l", "eye-left-closure"),
        ("eye_closed_r", "eye-right-closure"),
        ("brow_raised_l", "eyebrows-left-up"),
        ("brow_lowered_r", "eyebrows-right-down"),
        ("mouth_a", "mouth-open"),
        ("mouth_u", "mouth-pursing"),
    ],
)
def test_makehuman_target_moves_exactly_its_expression_unit(makehuman_character, target, key):
    import bpy

    from anirender.addon.characters.finding import find_character
    from anirender.addon.pose import sliders as morphs

    character = find_character(makehuman_character)
    body = character.meshes[0]
    morphs.apply_pose(makehuman_character, [0.0] * 20)
    neutral = _evaluated_coords(bpy, body)
    pose = [0.0] * 20
    pose[morphs.POSE_NAMES.index(target)] = 1.0
    morphs.apply_pose(makehuman_character, pose)
    values = _key_values(bpy, character.meshes)
    assert values[(body.name, key)] == pytest.approx(1.0)
    others = {k: v for k, v in values.items() if k[1] not in (key, "Basis")}
    assert others and max(others.values()) == 0.0

    # the vertices that moved are the ones this unit moves, and nothing else
    posed = _evaluated_coords(bpy, body)
    moved = np.linalg.norm(posed - neutral, axis=1) > 1e-6
    block = body.data.shape_keys.key_blocks[key]
    basis = body.data.shape_keys.reference_key
    offsets = np.empty(len(block.data) * 3, np.float32)
    block.data.foreach_get("co", offsets)
    rest = np.empty_like(offsets)
    basis.data.foreach_get("co", rest)
    support = np.linalg.norm((offsets - rest).reshape(-1, 3), axis=1) > 1e-7
    assert moved.sum() > 10
    assert not np.any(moved & ~support)


def test_makehuman_head_yaw(makehuman_character):
    import bpy

    from anirender.addon.pose import sliders as morphs

    bpy.context.scene.frame_set(0)
    morphs.apply_pose(makehuman_character, [0.0] * 20)
    straight = _head_delta(bpy, makehuman_character, "head")
    morphs.apply_pose(makehuman_character, [0.0] * 19 + [20.0])
    turned = _head_delta(bpy, makehuman_character, "head")
    # the walk poses the neck too: the slider adds a 20 degree turn about the armature's Z
    np.testing.assert_allclose(turned @ straight.T, _rotation("Z", 20.0), atol=1e-4)


# ------------------------------------------------------------------- VRoid face keys

#: the face keys of a VRoid Studio model (VRM 0.x export; names as VRoid writes them)
VROID_FACE = (
    "Fcl_ALL_Neutral Fcl_ALL_Angry Fcl_ALL_Fun Fcl_ALL_Joy Fcl_ALL_Sorrow Fcl_ALL_Surprised "
    "Fcl_BRW_Angry Fcl_BRW_Fun Fcl_BRW_Joy Fcl_BRW_Sorrow Fcl_BRW_Surprised "
    "Fcl_EYE_Natural Fcl_EYE_Angry Fcl_EYE_Close Fcl_EYE_Close_R Fcl_EYE_Close_L "
    "Fcl_EYE_Fun Fcl_EYE_Joy Fcl_EYE_Sorrow Fcl_EYE_Surprised "
    "Fcl_MTH_A Fcl_MTH_I Fcl_MTH_U Fcl_MTH_E Fcl_MTH_O"
).split()


@pytest.mark.parametrize("prefix", ["", "Face.M_F00_000_00_"])
def test_vroid_brow_keys_move_the_brow_sliders(prefix):
    found = match_key_names([prefix + name for name in VROID_FACE])
    for side in "lr":
        assert found[f"brow_angry_{side}"] == [(prefix + "Fcl_BRW_Angry", 0.5)]
        assert found[f"brow_raised_{side}"] == [(prefix + "Fcl_BRW_Surprised", 0.5)]
        assert found[f"brow_lowered_{side}"] == [(prefix + "Fcl_BRW_Sorrow", 0.5)]
    assert found["eye_closed_l"] == [(prefix + "Fcl_EYE_Close_L", 1.0)]
    assert found["mouth_a"] == [(prefix + "Fcl_MTH_A", 1.0)]


@pytest.mark.parametrize("lift", ["Fcl_BRW_Joy", "Fcl_BRW_Fun"])
def test_vroid_joy_or_fun_brows_raise_when_there_is_no_surprised_brow(lift):
    found = match_key_names(["Fcl_BRW_Angry", lift, "Fcl_BRW_Sorrow"])
    assert found["brow_raised_l"] == found["brow_raised_r"] == [(lift, 0.5)]


def test_vroid_face_mesh_in_blender_binds_its_brow_keys(blender):
    from anirender.addon.pose.sliders import find_shape_keys

    bpy = blender
    bpy.ops.mesh.primitive_uv_sphere_add()
    face = bpy.context.active_object
    face.name = "Face"
    face.shape_key_add(name="Basis")
    for name in VROID_FACE:
        face.shape_key_add(name="Face.M_F00_000_00_" + name, from_mix=False)
    found = find_shape_keys([face])
    assert {t: keys[0][1] for t, keys in found.items() if t.startswith("brow")} == {
        "brow_angry_l": "Face.M_F00_000_00_Fcl_BRW_Angry",
        "brow_angry_r": "Face.M_F00_000_00_Fcl_BRW_Angry",
        "brow_raised_l": "Face.M_F00_000_00_Fcl_BRW_Surprised",
        "brow_raised_r": "Face.M_F00_000_00_Fcl_BRW_Surprised",
        "brow_lowered_l": "Face.M_F00_000_00_Fcl_BRW_Sorrow",
        "brow_lowered_r": "Face.M_F00_000_00_Fcl_BRW_Sorrow",
    }
