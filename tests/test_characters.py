"""The two cached test characters: the procedural toy and the MakeHuman base mesh."""

import numpy as np
import pytest

# ---------------------------------------------------------------------------- helpers


def _evaluated_coords(bpy, obj):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    matrix = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]


def _rest_coords(obj):
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    matrix = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]


def _weighted_vertex_count(obj, bone_names):
    groups = {g.index for g in obj.vertex_groups if g.name in bone_names}
    return sum(
        1 for v in obj.data.vertices if any(g.group in groups and g.weight > 0 for g in v.groups)
    )


def _bone_world(armature, name, end="head"):
    bone = armature.pose.bones[name]
    return np.array(armature.matrix_world @ getattr(bone, end))


def _render(bpy, path, frame, azimuth_deg=30):
    from anirender.addon.character_cache import stage_character

    scene = bpy.context.scene
    armature = next(o for o in scene.objects if o.type == "ARMATURE")
    stage_character(scene, armature, azimuth_deg=azimuth_deg, resolution=320)
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"), float)
    return image


# ---------------------------------------------------------------------------- toy


def test_toy_has_humanoid_hierarchy_in_t_pose(toy_character):
    bones = toy_character.data.bones
    chain = ["head", "neck", "chest", "spine", "hips", "root"]
    for child, parent in zip(chain, chain[1:]):
        assert bones[child].parent.name == parent
    for side in "LR":
        assert bones[f"hand.{side}"].parent.parent.parent.name == f"shoulder.{side}"
        assert bones[f"foot.{side}"].parent.parent.name == f"thigh.{side}"
        arm = np.array(
            bones[f"upper_arm.{side}"].tail_local - bones[f"upper_arm.{side}"].head_local
        )
        assert abs(arm[2]) < 1e-6 and abs(arm[0]) > 0.2, "the rest pose is a T-pose"
    assert bones["upper_arm.L"].head_local.x > 0, "the character's left side is +X (it faces -Y)"
    assert bones["head"].tail_local.z > 1.5 and bones["foot.L"].tail_local.z < 0.05


def test_toy_meshes_are_skinned_with_uvs_and_materials(toy_character):
    import bpy

    meshes = {o.name: o for o in bpy.context.scene.objects if o.type == "MESH"}
    assert set(meshes) == {"Body", "Skirt", "Hair"}
    bone_names = {b.name for b in toy_character.data.bones}
    colours = set()
    for obj in meshes.values():
        assert [m.object for m in obj.modifiers if m.type == "ARMATURE"] == [toy_character]
        assert {g.name for g in obj.vertex_groups} <= bone_names
        assert _weighted_vertex_count(obj, bone_names) == len(obj.data.vertices), obj.name
        assert obj.data.uv_layers.active.name == "UVMap"
        uv = np.empty(len(obj.data.loops) * 2, np.float32)
        obj.data.uv_layers["UVMap"].data.foreach_get("uv", uv)
        assert 0 <= uv.min() and uv.max() <= 1 and uv.std() > 0.05
        colours.add(tuple(round(c, 3) for c in obj.active_material.diffuse_color))
    assert len(colours) == 3
    assert 300 <= len(meshes["Body"].data.vertices) <= 2000
    assert {g.name for g in meshes["Hair"].vertex_groups} == {"head"}
    assert {"hips", "thigh.L", "thigh.R"} <= {g.name for g in meshes["Skirt"].vertex_groups}


def test_toy_japanese_shape_keys_move_the_face(toy_character):
    import bpy

    body = bpy.data.objects["Body"]
    keys = body.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", "まばたき", "あ", "ウィンク", "怒り"]
    assert all(k.value == 0 for k in keys[1:]), "the cached face is neutral"
    rest = _evaluated_coords(bpy, body)
    moved = {}
    for key in keys[1:]:
        key.value = 1.0
        offset = np.linalg.norm(_evaluated_coords(bpy, body) - rest, axis=1)
        key.value = 0.0
        assert offset.max() > 0.008, key.name
        moving = rest[offset > 1e-4]
        assert moving[:, 2].min() > 1.45 and moving[:, 1].max() < 0, (
            f"{key.name} moves only the face"
        )
        moved[key.name] = offset > 1e-4
    # the wink closes the left eye (+X) only, the blink both
    assert (rest[moved["ウィンク"], 0] > -0.01).all()
    assert (rest[moved["まばたき"], 0] < 0).any() and (rest[moved["まばたき"], 0] > 0).any()


def test_toy_wave_action_animates_the_right_arm(toy_character):
    import bpy

    scene = bpy.context.scene
    action = toy_character.animation_data.action
    assert action.name == "ToyWave"
    assert tuple(action.frame_range) == (1, 24) == (scene.frame_start, scene.frame_end)
    hands, hips = [], []
    for frame in (1, 7, 13, 19):
        scene.frame_set(frame)
        hands.append(_bone_world(toy_character, "hand.R", "tail"))
        hips.append(_bone_world(toy_character, "hips"))
    hands, hips = np.array(hands), np.array(hips)
    assert (hands[:, 2] > 1.6).all(), "the waving hand is raised above the shoulder"
    assert np.ptp(hands[:, 0]) > 0.05 and np.ptp(hips[:, 0]) > 0.02
    body = bpy.data.objects["Body"]
    scene.frame_set(7)
    assert np.abs(_evaluated_coords(bpy, body) - _rest_coords(body)).max() > 0.1


def test_toy_render_shows_the_character(toy_character, artifacts_dir):
    import bpy

    image = _render(bpy, artifacts_dir / "toy_character_wave.png", frame=7)
    background = image[2, 2]
    figure = np.abs(image - background).sum(axis=2) > 30
    assert 0.05 < figure.mean() < 0.5, "the character fills part of the frame"
    rows = np.flatnonzero(figure.any(axis=1))
    assert rows[0] > 2 and rows[-1] < image.shape[0] - 3, "the full body is in frame"


# ---------------------------------------------------------------------------- cache


def test_cache_rebuilds_only_when_the_builder_changes(blender, tmp_path, monkeypatch):
    from anirender.addon import character_cache

    monkeypatch.setenv("ANIRENDER_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "fake_builder.py"
    source.write_text("# version 1\n")
    builds = []

    def build(scene):
        armature = blender.data.objects.new("Fake", blender.data.armatures.new("Fake"))
        scene.collection.objects.link(armature)
        builds.append(source.read_text())
        return armature

    monkeypatch.setitem(
        character_cache.RECIPES, "fake", character_cache.CharacterRecipe(build, (source,))
    )
    first = character_cache.character_blend("fake")
    assert first.exists() and first.parent == tmp_path / "cache" / "characters"
    assert not blender.data.objects, "building leaves an empty session behind"
    assert character_cache.character_blend("fake") == first and len(builds) == 1

    source.write_text("# version 2\n")
    second = character_cache.character_blend("fake")
    assert second != first and second.exists() and len(builds) == 2
    assert not list(second.parent.glob(".*")), "no temporary files are left"
    armature = character_cache.load_character("fake")
    assert armature.name == "Fake" and blender.context.scene.camera is not None


def test_unknown_character_kind_is_an_artist_error(blender):
    from anirender.addon.character_cache import load_character
    from anirender.errors import AniRenderError

    with pytest.raises(AniRenderError, match="toy"):
        load_character("robot")
