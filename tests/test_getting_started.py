"""The Getting Started checklist at the top of the AniRender tab (#22): each item's state
for a scene missing it, and the button that fixes it."""

from __future__ import annotations

import sys

from PIL import Image
from service_support import sheet_images


def _states(bpy) -> dict:
    from anirender.addon.checklist import checklist

    return {item.name: item for item in checklist(bpy.context)}


def test_checklist_follows_the_scene_item_by_item(shader_addon, toy_character, tmp_path):
    import bpy
    from bpy_extras.object_utils import world_to_camera_view

    shader_addon.service_mode = "LOCAL"
    shader_addon.python_path = ""
    scene = bpy.context.scene
    scene.camera = None
    bpy.context.view_layer.objects.active = toy_character
    toy_character.pop("anirender_canonical", None)

    state = _states(bpy)
    assert [name for name, item in state.items() if not item.ready] == [
        "Shader runtime",
        "Canonical pose",
        "Character sheet",
        "Camera",
    ]
    assert state["Shader runtime"].fix == "anirender.setup_runtime"
    assert state["Character"].detail == toy_character.name
    assert state["Weights"].ready and "shipped" in state["Weights"].detail

    shader_addon.python_path = sys.executable  # an interpreter chosen by hand
    assert _states(bpy)["Shader runtime"].ready
    shader_addon.python_path = str(tmp_path / "no-python")
    assert not _states(bpy)["Shader runtime"].ready
    shader_addon.service_mode = "REMOTE"
    assert _states(bpy)["Shader runtime"].ready

    shader_addon.weights = str(tmp_path / "missing.safetensors")
    weights = _states(bpy)["Weights"]
    assert not weights.ready and "not found" in weights.detail
    shader_addon.weights = ""

    assert bpy.ops.anirender.set_canonical_pose(mode="A_POSE") == {"FINISHED"}
    assert _states(bpy)["Canonical pose"].ready

    path = tmp_path / "front.png"
    Image.fromarray(sheet_images(1, 96, seed=3)[0]).save(path)
    files = [{"name": path.name}]
    assert bpy.ops.anirender.sheet_add_files(directory=str(tmp_path), files=files) == {"FINISHED"}
    assert _states(bpy)["Character sheet"].detail == "1 view(s)"

    assert bpy.ops.anirender.add_camera() == {"FINISHED"}
    assert _states(bpy)["Camera"].ready and scene.camera is not None
    bpy.context.view_layer.update()
    centre = sum(
        (toy_character.matrix_world @ b.head_local for b in toy_character.data.bones),
        start=toy_character.location * 0,
    ) / len(toy_character.data.bones)
    x, y, depth = world_to_camera_view(scene, scene.camera, centre)
    assert 0.1 < x < 0.9 and 0.1 < y < 0.9 and depth > 0  # the character is in view
    assert all(item.ready for item in _states(bpy).values())


def test_checklist_asks_for_a_character_in_an_empty_scene(shader_addon):
    import bpy

    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    state = _states(bpy)
    assert not state["Character"].ready and "Select your character" in state["Character"].detail
    assert "Character sheet" not in state  # asked only once there is a character
