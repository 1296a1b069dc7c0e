"""What trips an artist, driven through the operators as an artist would (issue #23)."""

from __future__ import annotations

import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_support import sheet_images


def _sheet_files(folder: Path, views: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(sheet_images(views, 96, seed=5)):
        paths.append(folder / f"view_{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def _add_files(bpy, paths):
    files = [{"name": p.name} for p in paths]
    return bpy.ops.anirender.sheet_add_files(directory=str(paths[0].parent), files=files)


def test_sheet_files_still_found_after_save_as_into_another_folder(
    shader_addon, toy_character, tmp_path
):
    import bpy

    from anirender.addon.shading.sheets import read_sheet

    project = tmp_path / "project"
    sheet_paths = _sheet_files(project / "sheet_own")
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "shot.blend"))
    bpy.context.view_layer.objects.active = toy_character
    assert _add_files(bpy, sheet_paths) == {"FINISHED"}
    sheet = toy_character.anirender.sheet
    assert sheet[0].filepath == "//sheet_own/view_0.png"  # stored relative, as Blender does
    want = read_sheet(toy_character, 64)
    name = toy_character.name

    elsewhere = tmp_path / "delivery" / "v2"
    elsewhere.mkdir(parents=True)
    (tmp_path / "backup").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(elsewhere / "shot_v2.blend"))
    assert sheet[0].filepath == "//../../project/sheet_own/view_0.png"
    np.testing.assert_array_equal(read_sheet(toy_character, 64), want)

    # a copy save writes the remapped paths into the copy and leaves the open file as it was
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "backup" / "copy.blend"), copy=True)
    assert sheet[0].filepath == "//../../project/sheet_own/view_0.png"
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "backup" / "copy.blend"))
    copied = bpy.data.objects[name]
    assert copied.anirender.sheet[0].filepath == "//../project/sheet_own/view_0.png"
    np.testing.assert_array_equal(read_sheet(copied, 64), want)


def test_relative_sheet_path_in_an_unsaved_file_says_relative_to_what(shader_addon):
    import bpy

    from anirender.addon.characters.toy import build_toy_character
    from anirender.addon.shading.sheets import read_sheet
    from anirender.errors import AniRenderError

    toy_character = build_toy_character(bpy.context.scene)  # in a file never saved
    toy_character.anirender.sheet.add().filepath = "//sheet_own/view_0.png"
    assert not bpy.data.filepath
    with pytest.raises(AniRenderError, match="relative to the .blend file.*not been saved"):
        read_sheet(toy_character, 64)


def test_missing_relative_sheet_file_names_the_folder_it_was_looked_for_in(
    shader_addon, toy_character, tmp_path
):
    import bpy

    from anirender.addon.shading.sheets import read_sheet
    from anirender.errors import AniRenderError

    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    toy_character.anirender.sheet.add().filepath = "//gone/view_0.png"
    with pytest.raises(AniRenderError, match=f"folder of this .blend \\({tmp_path}\\)"):
        read_sheet(toy_character, 64)


def test_opaque_and_jpg_sheet_images_are_refused_when_added(shader_addon, toy_character, tmp_path):
    import bpy

    bpy.context.view_layer.objects.active = toy_character
    opaque = np.full((64, 64, 4), 255, np.uint8)
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    Image.fromarray(opaque[..., :3]).save(tmp_path / "drawing.jpg")
    Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(tmp_path / "empty.png")
    good = _sheet_files(tmp_path / "good", 1)
    sheet = toy_character.anirender.sheet
    for name, message in (
        ("opaque.png", "no transparent pixels"),
        ("drawing.jpg", "JPG files have no transparency"),
        ("empty.png", "fully transparent"),
    ):
        with pytest.raises(RuntimeError, match=message):
            _add_files(bpy, [tmp_path / name])
        assert len(sheet) == 0  # nothing added
    with pytest.raises(RuntimeError, match="no transparent pixels"):  # one bad file: none added
        bpy.ops.anirender.sheet_add_files(
            directory=str(tmp_path), files=[{"name": "opaque.png"}], filepath=""
        )
    assert len(sheet) == 0
    image = bpy.data.images.load(str(tmp_path / "opaque.png"))
    with pytest.raises(RuntimeError, match="no transparent pixels"):
        bpy.ops.anirender.sheet_add_image(image=image.name)
    assert len(sheet) == 0
    assert _add_files(bpy, good) == {"FINISHED"}
    assert len(sheet) == 1


def test_add_blender_image_reports_what_it_added(shader_addon, toy_character, tmp_path, capfd):
    import bpy

    bpy.context.view_layer.objects.active = toy_character
    (path,) = _sheet_files(tmp_path, 1)
    image = bpy.data.images.load(str(path))
    assert bpy.ops.anirender.sheet_add_image(image=image.name) == {"FINISHED"}
    assert f'"{image.name}" added to the sheet of "Toy"' in capfd.readouterr().out


def test_unsaved_file_writes_passes_to_a_named_temp_folder_not_the_working_directory(
    addon, tmp_path, monkeypatch, capfd
):
    import bpy

    from anirender.addon.characters.toy import build_toy_character

    toy_character = build_toy_character(bpy.context.scene)  # in a file never saved

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert not bpy.data.filepath
    bpy.context.view_layer.objects.active = toy_character
    bpy.context.scene.render.resolution_x = bpy.context.scene.render.resolution_y = 32
    assert bpy.ops.anirender.set_canonical_pose(mode="A_POSE") == {"FINISHED"}
    result = bpy.ops.anirender.render_udp_passes(
        use_scene_range=False, frame_start=1, frame_end=1, passes={"UDP"}, formats={"NPZ"}
    )
    assert result == {"FINISHED"}
    written = tmp_path / "tmp" / "anirender" / "passes"
    assert len(list(written.rglob("*.npz"))) == 1
    assert not any(work.iterdir())  # nothing in the process's working directory
    out = capfd.readouterr()
    assert f"Passes of 1 frame written to {written}" in out.out
    assert "//" not in out.out + out.err


def test_neural_render_animation_folder_error_names_shaded_frames(
    shader_addon, toy_character, tmp_path, tiny_conr_weights
):
    import bpy

    (path,) = _sheet_files(tmp_path / "sheet", 1)
    bpy.context.view_layer.objects.active = toy_character
    assert _add_files(bpy, [path]) == {"FINISHED"}
    shader_addon.service_mode = "IN_PROCESS"
    shader_addon.weights = str(tiny_conr_weights)
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="Cannot write shaded frames to"):
        bpy.ops.anirender.neural_render_animation(
            size="128", output_dir=str(blocker / "out"), use_scene_range=False, frame_end=2
        )


def test_brow_sliders_bind_distinct_shape_keys_on_makehuman(addon, makehuman_character, capfd):
    import bpy

    from anirender.addon.pose.sliders import stored_bindings

    bpy.context.view_layer.objects.active = makehuman_character
    assert bpy.ops.anirender.pose_setup() == {"FINISHED"}
    bindings = stored_bindings(makehuman_character)
    for side in "lr":
        angry = {key for _, key, _ in bindings[f"brow_angry_{side}"]}
        lowered = {key for _, key, _ in bindings[f"brow_lowered_{side}"]}
        assert angry and lowered and angry != lowered
    report = capfd.readouterr().out
    assert "17 of 17 expression targets bound" in report
    assert "no separate shape keys" not in report


def test_pose_summary_reports_sliders_that_share_their_keys():
    from anirender.ops.pose import _summary

    bindings = {
        "brow_angry_l": [("Face", "frown", 1.0)],
        "brow_lowered_l": [("Face", "frown", 1.0)],
    }
    text = _summary(bindings)
    assert text.startswith("2 of 17 expression targets bound")
    assert "no separate shape keys for brow_angry_l and brow_lowered_l" in text


def test_head_pose_helper_lives_hidden_in_the_addons_collection(addon, makehuman_character):
    import bpy

    from anirender.addon.core.helpers import COLLECTION
    from anirender.addon.pose.sliders import head_pose_empty_name

    bpy.context.view_layer.objects.active = makehuman_character
    assert bpy.ops.anirender.pose_setup() == {"FINISHED"}
    empty = bpy.data.objects[head_pose_empty_name(makehuman_character)]
    assert [c.name for c in empty.users_collection] == [COLLECTION]
    assert empty.name not in bpy.context.scene.collection.objects
    layer = bpy.context.view_layer.layer_collection.children[COLLECTION]
    assert layer.hide_viewport and bpy.data.collections[COLLECTION].hide_select
    assert not empty.visible_get()
    # still evaluated: the yaw slider turns the head
    from anirender.addon.pose.sliders import apply_pose

    head = makehuman_character.pose.bones["head"]

    def head_turn():
        bpy.context.view_layer.update()
        evaluated = makehuman_character.evaluated_get(bpy.context.evaluated_depsgraph_get())
        return evaluated.pose.bones[head.name].matrix.to_quaternion()

    bpy.context.scene.frame_set(0)
    apply_pose(makehuman_character, [0.0] * 20)
    before = head_turn()
    apply_pose(makehuman_character, [0.0] * 19 + [20.0])
    after = head_turn()
    assert before.rotation_difference(after).angle > np.radians(10)


def test_guarded_operator_prints_no_console_warnings(addon, toy_character, tmp_path, capfd):
    import bpy

    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    bpy.context.view_layer.objects.active = toy_character
    bpy.context.scene.render.resolution_x = bpy.context.scene.render.resolution_y = 32
    capfd.readouterr()
    assert bpy.ops.anirender.set_canonical_pose(mode="A_POSE") == {"FINISHED"}
    result = bpy.ops.anirender.render_udp_passes(
        use_scene_range=False, frame_start=1, frame_end=1, passes={"UDP"}, formats={"NPZ"}
    )
    assert result == {"FINISHED"}
    out = capfd.readouterr()
    assert "matches no enum" not in out.out + out.err


def test_panel_names_the_canonical_pose_as_the_menu_does(addon, toy_character):
    import bpy

    from anirender.panels.passes import ANIRENDER_PT_passes

    bpy.context.view_layer.objects.active = toy_character
    assert bpy.ops.anirender.set_canonical_pose(mode="A_POSE") == {"FINISHED"}
    labels = []

    class Layout:
        def __getattr__(self, name):
            return lambda *a, **k: self

        def label(self, text="", **_):
            labels.append(text)

    ANIRENDER_PT_passes.draw(types.SimpleNamespace(layout=Layout()), bpy.context)
    assert "Canonical: A-Pose" in labels


def test_pose_and_sheet_buttons_say_why_they_are_greyed_out(addon, blender):
    import bpy

    bpy.context.view_layer.objects.active = None
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    for op in (bpy.ops.anirender.pose_setup, bpy.ops.anirender.sheet_remove):
        with pytest.raises(RuntimeError) as caught:
            op()
        assert "poll() failed, context is incorrect" not in str(caught.value)
        assert "elect" in str(caught.value)  # says what to select


def test_ordinary_obj_keeps_its_scale_quads_and_flat_shading(addon, tmp_path):
    import bpy

    # a 2 m cube of quads, flat shaded (no "s 1"), as an artist's prop would be
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    with open(tmp_path / "crate.obj", "w") as f:
        np.savetxt(f, corners, fmt="v %.1f %.1f %.1f")
        f.write("".join(f"f {a} {b} {c} {d}\n" for a, b, c, d in quads))
    assert bpy.ops.anirender.import_portrait(filepath=str(tmp_path / "crate.obj")) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert obj.name == "crate"
    assert [len(p.vertices) for p in obj.data.polygons] == [4] * 6
    assert tuple(round(d, 4) for d in obj.dimensions) == (2.0, 2.0, 2.0)
    assert not any(p.use_smooth for p in obj.data.polygons)
    # the reconstruction settings, chosen on the dialog, still apply to the same file
    result = bpy.ops.anirender.import_portrait(
        filepath=str(tmp_path / "crate.obj"), faces="CLEAN", size_mode="FIT", shading="SMOOTH"
    )
    assert result == {"FINISHED"}
    cleaned = bpy.context.view_layer.objects.active
    assert {len(p.vertices) for p in cleaned.data.polygons} == {3}
    assert cleaned.dimensions.x == pytest.approx(0.25, abs=1e-4)
    assert all(p.use_smooth for p in cleaned.data.polygons)
