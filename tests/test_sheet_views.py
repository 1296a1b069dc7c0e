"""Character sheets whose views carry their UDP (issue #16, items 1 and 2): Render Sheet
Views, a UDP by hand, Export for Paint-Over / Reload Painted, Save As, Estimate Sheet UDP,
and ``anirender sheet`` / ``anirender shade --pose-images``, on the toy character."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 96


def _render_views(bpy, armature, views=("FRONT", "LEFT"), **kw):
    bpy.context.view_layer.objects.active = armature
    armature.select_set(True)
    return bpy.ops.anirender.render_sheet_views(
        views=set(views), size=SIZE, samples=2, output_dir="//sheet/", **kw
    )


def _saved(bpy, armature, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "shot.blend"))
    return folder / "shot.blend"


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def _udp(path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data["i"]


def _over_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)


def test_sheet_views_are_cut_out_pngs_with_the_udp_the_passes_write_and_the_scene_stays(
    shader_addon, toy_character, tmp_path, artifacts_dir
):
    import bpy

    from anirender.addon.core.guard import scene_snapshot
    from anirender.addon.core.mesh_arrays import world_bounds
    from anirender.addon.datasets.conr import aim_camera
    from anirender.addon.passes.canonical import deformed_meshes
    from anirender.addon.shading.sheet_views import ELEVATION, FILL, VIEWS
    from anirender.addon.shading.sheets import read_sheet_views

    _saved(bpy, toy_character, tmp_path / "project")
    bpy.context.view_layer.objects.active = toy_character
    toy_character.select_set(True)
    before = scene_snapshot(bpy.context)
    assert _render_views(bpy, toy_character, ("FRONT", "LEFT", "BACK")) == {"FINISHED"}
    assert scene_snapshot(bpy.context) == before  # camera, settings, visibility, frame
    assert toy_character.data.pose_position == "POSE"

    sheet = toy_character.anirender.sheet
    assert [e.filepath for e in sheet] == [
        f"//sheet/Toy_{v}.png" for v in ("front", "left", "back")
    ]
    assert [e.udp_filepath for e in sheet] == [
        f"//sheet/Toy_{v}.udp.npz" for v in ("front", "left", "back")
    ]
    assert not any(e.udp_estimated for e in sheet)
    folder = tmp_path / "project" / "sheet"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"Toy_{v}{s}" for v in ("front", "left", "back") for s in (".png", ".udp.npz")
    )  # no partial files or hidden folders left

    rows = []
    for view in ("front", "left", "back"):
        rgba, udp = _png(folder / f"Toy_{view}.png"), _udp(folder / f"Toy_{view}.udp.npz")
        assert rgba.shape == (SIZE, SIZE, 4) and udp.shape == (SIZE, SIZE, 4)
        body = udp[..., 3] > 0.5
        assert 0.03 < body.mean() < 0.5
        assert (rgba[..., 3][body] > 0).mean() > 0.99  # the cut-out covers the character
        cut = rgba[..., 3] > 127
        assert (cut & body).sum() / (cut | body).sum() > 0.9  # and lines up with its UDP
        assert rgba[0, :, 3].max() == 0 and rgba[:, 0, 3].max() == 0  # background clear
        edge = (rgba[..., 3] > 20) & (rgba[..., 3] < 235)
        solid = rgba[..., 3] == 255
        # straight alpha: outline pixels keep the character's colour, not darkened by alpha
        assert rgba[edge, :3].mean() > 0.75 * rgba[solid, :3].mean()
        rows.append(np.concatenate([_over_white(rgba), (udp[..., :3] * 255).astype(np.uint8)], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(artifacts_dir / "sheet_views_toy.png")

    # the same camera through Render UDP Passes writes the same UDP
    toy_character.data.pose_position = "REST"
    scene = bpy.context.scene
    scene.frame_set(scene.frame_current)
    meshes = deformed_meshes(toy_character, scene)
    bounds = world_bounds(meshes, bpy.context.evaluated_depsgraph_get())
    camera = bpy.data.objects.new("Check", bpy.data.cameras.new("Check"))
    camera.data.lens, camera.data.sensor_width = 50.0, 36.0
    scene.collection.objects.link(camera)
    scene.camera = camera
    aim_camera(camera, *bounds, VIEWS["left"], ELEVATION, FILL)
    frame = scene.frame_current
    assert bpy.ops.anirender.render_udp_passes(
        passes={"UDP"},
        formats={"NPZ"},
        use_fast=True,
        use_size=True,
        width=SIZE,
        height=SIZE,
        use_scene_range=False,
        frame_start=frame,
        frame_end=frame,
        output_dir=str(tmp_path / "passes"),
        overwrite=True,
    ) == {"FINISHED"}
    passes = _udp(tmp_path / "passes" / "udp" / f"udp_{frame:04d}.npz")
    np.testing.assert_array_equal(passes, _udp(folder / "Toy_left.udp.npz"))

    views = read_sheet_views(toy_character)
    assert [v.label for v in views] == ["Toy_front.png", "Toy_left.png", "Toy_back.png"]
    np.testing.assert_array_equal(views[1].udp, passes)


def test_rendering_again_updates_the_views_instead_of_adding_them_twice(
    shader_addon, toy_character, tmp_path
):
    import bpy

    _saved(bpy, toy_character, tmp_path)
    assert _render_views(bpy, toy_character, ("FRONT",)) == {"FINISHED"}
    first = _udp(tmp_path / "sheet" / "Toy_front.udp.npz")
    toy_character.anirender.sheet[0].udp_filepath = ""
    assert _render_views(bpy, toy_character, ("FRONT",), engine="WORKBENCH") == {"FINISHED"}
    sheet = toy_character.anirender.sheet
    assert len(sheet) == 1 and sheet[0].udp_filepath == "//sheet/Toy_front.udp.npz"
    np.testing.assert_array_equal(_udp(tmp_path / "sheet" / "Toy_front.udp.npz"), first)


def test_a_frame_pose_is_rendered_from_that_frame(shader_addon, toy_character, tmp_path):
    import bpy

    _saved(bpy, toy_character, tmp_path)
    assert _render_views(bpy, toy_character, ("FRONT",), pose="FRAME", frame=12) == {"FINISHED"}
    posed = _udp(tmp_path / "sheet" / "Toy_front.udp.npz")
    assert _render_views(bpy, toy_character, ("FRONT",)) == {"FINISHED"}
    rest = _udp(tmp_path / "sheet" / "Toy_front.udp.npz")
    assert ((posed[..., 3] > 0.5) != (rest[..., 3] > 0.5)).mean() > 0.01  # another pose
    assert bpy.context.scene.frame_current == 1


def test_paint_over_round_trip_keeps_each_view_its_udp_and_refuses_a_moved_or_resized_paint(
    shader_addon, toy_character, tmp_path
):
    import bpy

    from anirender.addon.shading import sheet_files
    from anirender.addon.shading.sheets import read_framed_sheet, read_sheet, read_sheet_views
    from anirender.errors import AniRenderError
    from anirender.models.paint_over import paint_over

    _saved(bpy, toy_character, tmp_path / "project")
    assert _render_views(bpy, toy_character) == {"FINISHED"}
    rendered = read_sheet_views(toy_character)
    paint = tmp_path / "paint"
    assert bpy.ops.anirender.sheet_export_paint_over(directory=str(paint)) == {"FINISHED"}
    assert toy_character.anirender.paint_over_dir == "//../paint"
    for view in ("front", "left"):
        assert (paint / f"Toy_{view}.udp.npz").read_bytes() == (
            tmp_path / "project" / "sheet" / f"Toy_{view}.udp.npz"
        ).read_bytes()
        painted = paint_over(_png(paint / f"Toy_{view}.png"), cels=4, seed=1)
        Image.fromarray(painted).save(paint / f"Toy_{view}.png")

    # a resized or moved paint-over is refused, naming the file, and nothing changes
    good = _png(paint / "Toy_left.png")
    for bad, message in (
        (np.asarray(Image.fromarray(good).resize((80, 80))), "80x80 but the view"),
        (np.roll(good, 30, axis=1), "no longer lines up"),
    ):
        Image.fromarray(bad).save(paint / "Toy_left.png")
        with pytest.raises(AniRenderError, match=message):
            sheet_files.reload_painted(toy_character)
        with pytest.raises(RuntimeError, match=f"Nothing reloaded. Toy_left.png .*{message}"):
            bpy.ops.anirender.sheet_reload_painted()
        assert toy_character.anirender.sheet[0].filepath == "//sheet/Toy_front.png"
    Image.fromarray(good).save(paint / "Toy_left.png")

    assert bpy.ops.anirender.sheet_reload_painted() == {"FINISHED"}
    sheet = toy_character.anirender.sheet
    assert [e.filepath for e in sheet] == ["//../paint/Toy_front.png", "//../paint/Toy_left.png"]
    assert [e.udp_filepath for e in sheet] == [
        "//../paint/Toy_front.udp.npz",
        "//../paint/Toy_left.udp.npz",
    ]
    reloaded = read_sheet_views(toy_character)
    for before, after, view in zip(rendered, reloaded, ("front", "left"), strict=True):
        np.testing.assert_array_equal(after.rgba, _png(paint / f"Toy_{view}.png"))
        assert not np.array_equal(after.rgba, before.rgba)  # the painting, not the render
        np.testing.assert_array_equal(after.udp, before.udp)  # the UDP stayed attached

    images, udps = read_framed_sheet(toy_character, 64)
    np.testing.assert_array_equal(images, read_sheet(toy_character, 64))
    for image, udp in zip(images, udps, strict=True):
        cut, body = image[..., 3] > 127, udp[..., 3] > 0.5
        assert (cut & body).sum() / (cut | body).sum() > 0.85  # framed alike


def test_sheet_udp_paths_follow_save_as(shader_addon, tmp_path):
    import bpy

    from anirender.addon.characters.cache import load_character
    from anirender.addon.shading.sheets import read_sheet_udps

    toy_character = load_character("toy")  # not a fixture: the file is reopened below

    _saved(bpy, toy_character, tmp_path / "project")
    assert _render_views(bpy, toy_character, ("FRONT",)) == {"FINISHED"}
    assert bpy.ops.anirender.sheet_export_paint_over(directory=str(tmp_path / "paint")) == {
        "FINISHED"
    }
    want = read_sheet_udps(toy_character)
    elsewhere = tmp_path / "delivery" / "v2"
    elsewhere.mkdir(parents=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(elsewhere / "shot_v2.blend"))
    entry = toy_character.anirender.sheet[0]
    assert entry.udp_filepath == "//../../project/sheet/Toy_front.udp.npz"
    assert toy_character.anirender.paint_over_dir.rstrip("/") == "//../../paint"
    np.testing.assert_array_equal(read_sheet_udps(toy_character)[0], want[0])
    name = toy_character.name
    bpy.ops.wm.open_mainfile(filepath=str(elsewhere / "shot_v2.blend"))
    reopened = bpy.data.objects[name]
    np.testing.assert_array_equal(read_sheet_udps(reopened)[0], want[0])


def test_a_udp_file_set_by_hand_must_fit_its_view(shader_addon, toy_character, tmp_path):
    import bpy

    from anirender.addon.shading.sheets import read_sheet_udps

    _saved(bpy, toy_character, tmp_path)
    assert _render_views(bpy, toy_character, ("FRONT",)) == {"FINISHED"}
    udp = _udp(tmp_path / "sheet" / "Toy_front.udp.npz")
    assert bpy.ops.anirender.sheet_clear_udp() == {"FINISHED"}
    assert read_sheet_udps(toy_character) == [None]
    np.savez_compressed(tmp_path / "small.npz", i=udp[:64, :64])
    np.savez_compressed(tmp_path / "empty.npz", i=np.zeros_like(udp))
    for name, message in (("small.npz", "is 64x64 but its image is 96x96"), ("empty", "no occ")):
        path = tmp_path / (name if name.endswith(".npz") else f"{name}.npz")
        with pytest.raises(RuntimeError, match=f"No UDP attached.*{message}"):
            bpy.ops.anirender.sheet_set_udp(filepath=str(path))
    assert toy_character.anirender.sheet[0].udp_filepath == ""
    shutil.copy(tmp_path / "sheet" / "Toy_front.udp.npz", tmp_path / "by_hand.npz")
    assert bpy.ops.anirender.sheet_set_udp(filepath=str(tmp_path / "by_hand.npz")) == {"FINISHED"}
    assert toy_character.anirender.sheet[0].udp_filepath == "//by_hand.npz"
    np.testing.assert_array_equal(read_sheet_udps(toy_character)[0], udp)


def test_estimate_sheet_udp_fills_drawn_views_and_marks_them_estimated(
    shader_addon, toy_character, tmp_path, artifacts_dir
):
    """The shipped parser's guess of the toy's views: the cut-out as occupancy, and XYZ
    nearer the truth than the best constant guess (the views' mean UDP colour)."""
    import bpy

    from anirender.addon.shading.sheets import read_sheet_views

    _saved(bpy, toy_character, tmp_path)
    assert _render_views(bpy, toy_character, ("FRONT", "LEFT")) == {"FINISHED"}
    truth = [v.udp for v in read_sheet_views(toy_character)]
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    sheet = toy_character.anirender.sheet
    shutil.copy(tmp_path / "sheet" / "Toy_front.png", drawn / "front.png")
    sheet[0].filepath, sheet[0].udp_filepath = "//drawn/front.png", ""
    image = bpy.data.images.load(str(tmp_path / "sheet" / "Toy_left.png"))
    image.pack()
    sheet[1].image, sheet[1].udp_filepath = image, ""
    bpy.context.view_layer.objects.active = toy_character

    assert bpy.ops.anirender.estimate_sheet_udp() == {"FINISHED"}
    assert [e.udp_estimated for e in sheet] == [True, True]
    assert sheet[0].udp_filepath == "//drawn/front.udp.npz"
    assert sheet[1].udp_filepath == "//sheet_udp/Toy_left_png.udp.npz"  # a packed image's
    with np.load(drawn / "front.udp.npz", allow_pickle=False) as data:
        assert bool(data["estimated"]) and "CoNR parser" in str(data["source"])
    rows = []
    for view, true in zip(read_sheet_views(toy_character), truth, strict=True):
        assert view.estimated and view.udp.shape == true.shape
        np.testing.assert_array_equal(view.udp[..., 3] > 0.5, view.rgba[..., 3] > 127)
        both = (view.udp[..., 3] > 0.5) & (true[..., 3] > 0.5)
        error = np.abs(view.udp[both, :3] - true[both, :3]).mean()
        constant = np.abs(true[both, :3] - true[both, :3].mean(0)).mean()
        assert error < 0.8 * constant
        rows.append(
            np.concatenate([(u[..., :3] * 255).astype(np.uint8) for u in (true, view.udp)], 1)
        )
    Image.fromarray(np.concatenate(rows, 0)).save(artifacts_dir / "sheet_udp_estimate_toy.png")
    with pytest.raises(RuntimeError, match="already has a UDP"):  # nothing left to guess
        bpy.ops.anirender.estimate_sheet_udp()


def test_sheet_cli_renders_estimates_and_shades_in_the_poses_of_pictures(
    shader_addon, tmp_path, tiny_conr_weights
):
    import bpy

    from anirender.addon.characters.cache import load_character
    from anirender.cli import main
    from anirender.models.framing import square_crop_around

    blend = _saved(bpy, load_character("toy"), tmp_path / "project")
    out = tmp_path / "project" / "views"
    args = ["sheet", "render", str(blend), "--views", "front,three-quarters,back"]
    args += ["--out", str(out), "--size", "64", "--engine", "workbench", "--save"]
    assert main(args) == 0
    names = [f"Toy_{v}" for v in ("front", "three_quarters", "back")]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n + s for n in names for s in (".png", ".udp.npz")
    )
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sheet = bpy.data.objects["Toy"].anirender.sheet
    assert [e.udp_filepath for e in sheet] == [f"//views/{n}.udp.npz" for n in names]
    assert main(["sheet", "render", str(blend), "--views", "top", "--out", str(out)]) == 2

    drawn = tmp_path / "drawn"
    drawn.mkdir()
    for n in names[:2]:
        shutil.copy(out / f"{n}.png", drawn / f"{n}.png")
    shutil.copy(out / f"{names[0]}.udp.npz", drawn / f"{names[0]}.udp.npz")
    assert main(["sheet", "estimate-udp", str(drawn), "--weights", str(tiny_conr_weights)]) == 0
    guessed = np.load(drawn / f"{names[1]}.udp.npz", allow_pickle=False)
    assert bool(guessed["estimated"]) and guessed["i"].shape == (64, 64, 4)
    assert "estimated" not in np.load(drawn / f"{names[0]}.udp.npz")  # kept as rendered

    shaded = tmp_path / "shaded"
    args = ["shade", "--sheet", str(out), "--pose-images", str(drawn), "--out", str(shaded)]
    assert main(args + ["--weights", str(tiny_conr_weights)]) == 0
    frames = sorted(shaded.iterdir())
    assert [p.name for p in frames] == [f"{n}.png" for n in names[:2]]
    for frame, n in zip(frames, names, strict=False):
        rgba, picture = _png(frame), _png(drawn / f"{n}.png")
        assert rgba.shape == picture.shape  # each frame the size of its picture
        crop = square_crop_around(picture[..., 3] > 127)  # pasted back where the body is
        outside = np.ones(rgba.shape[:2], bool)
        outside[
            max(crop.top, 0) : crop.top + crop.side, max(crop.left, 0) : crop.left + crop.side
        ] = False
        assert rgba[..., 3].any() and not rgba[outside, 3].any()


def test_makehuman_sheet_views_line_up_with_their_udp(
    shader_addon, makehuman_character, tmp_path, artifacts_dir
):
    import bpy

    _saved(bpy, makehuman_character, tmp_path)
    assert _render_views(bpy, makehuman_character, ("FRONT", "THREE_QUARTERS")) == {"FINISHED"}
    rows = []
    for view in ("front", "three_quarters"):
        stem = tmp_path / "sheet" / f"{bpy.path.clean_name(makehuman_character.name)}_{view}"
        rgba, udp = _png(f"{stem}.png"), _udp(f"{stem}.udp.npz")
        cut, body = rgba[..., 3] > 127, udp[..., 3] > 0.5
        assert body.mean() > 0.03 and (cut & body).sum() / (cut | body).sum() > 0.9
        rows.append(np.concatenate([_over_white(rgba), (udp[..., :3] * 255).astype(np.uint8)], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(artifacts_dir / "sheet_views_makehuman.png")


def test_estimate_runs_in_the_shader_runtime_when_blender_has_no_torch(tmp_path):
    """What a plain Blender does: the runtime's Python runs ``anirender sheet estimate-udp``
    (here the test's own interpreter, which has torch), or the error says what to set up."""
    import sys

    from anirender.addon.shading.sheet_files import _estimate_in_runtime
    from anirender.errors import AniRenderError

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[8:56, 24:40] = (230, 180, 160, 255)
    Image.fromarray(rgba).save(tmp_path / "view_00.png")
    _estimate_in_runtime(tmp_path, sys.executable, None)
    with np.load(tmp_path / "view_00.udp.npz", allow_pickle=False) as data:
        assert bool(data["estimated"]) and data["i"].shape == (64, 64, 4)
        np.testing.assert_array_equal(data["i"][..., 3] > 0.5, rgba[..., 3] > 127)
    with pytest.raises(AniRenderError, match="Set Up Shader Runtime"):
        _estimate_in_runtime(tmp_path, "", None)
    with pytest.raises(AniRenderError, match="estimate failed.*No weights named .no-such-weights."):
        _estimate_in_runtime(tmp_path, sys.executable, "no-such-weights")


def test_esc_after_the_first_view_leaves_no_files_no_entries_and_the_scene_as_it_was(
    shader_addon, toy_character, tmp_path
):
    import bpy

    from anirender.addon.core.guard import scene_snapshot
    from anirender.addon.shading.sheet_views import (
        SheetViewRequest,
        check_request,
        sheet_view_steps,
    )

    _saved(bpy, toy_character, tmp_path)
    before = scene_snapshot(bpy.context)
    request = SheetViewRequest(out_dir=tmp_path / "views", views="front,back", size=SIZE)
    request.samples = 2
    check_request(bpy.context.scene, toy_character, request)
    steps = sheet_view_steps(bpy.context, toy_character, request)
    assert next(steps) == "front view"
    assert toy_character.data.pose_position == "REST"  # rendering the rest pose
    steps.close()  # what Esc does to a job
    assert list((tmp_path / "views").iterdir()) == [] and request.written == []
    assert toy_character.data.pose_position == "POSE"
    assert scene_snapshot(bpy.context) == before
    assert len(toy_character.anirender.sheet) == 0


class _Layout:
    """Records the labels a UI list item draws."""

    def __init__(self, log):
        self.log = log

    def row(self, **_kw):
        return self

    def label(self, text="", icon="NONE"):
        self.log.append(text)


def test_the_sheet_list_says_which_views_have_a_rendered_or_estimated_udp(
    shader_addon, toy_character
):
    import bpy

    sheet = toy_character.anirender.sheet
    for udp, estimated in (("", False), ("//a.udp.npz", False), ("//b.udp.npz", True)):
        entry = sheet.add()
        entry.filepath, entry.udp_filepath, entry.udp_estimated = "//v.png", udp, estimated
    drawn = []
    for entry in sheet:
        log = []
        bpy.types.ANIRENDER_UL_sheet.draw_item(
            None, bpy.context, _Layout(log), None, entry, 0, None, ""
        )
        drawn.append(log[1])
    assert drawn == ["no UDP", "UDP", "UDP estimated"]


def test_adding_rendered_view_files_brings_their_udp_along(shader_addon, toy_character, tmp_path):
    import bpy

    _saved(bpy, toy_character, tmp_path)
    assert _render_views(bpy, toy_character) == {"FINISHED"}
    sheet = toy_character.anirender.sheet
    sheet.clear()
    folder = tmp_path / "sheet"
    np.savez_compressed(folder / "Toy_left.udp.npz", i=np.zeros((8, 8, 4), np.float32))
    files = [{"name": "Toy_front.png"}, {"name": "Toy_left.png"}]
    assert bpy.ops.anirender.sheet_add_files(directory=str(folder), files=files) == {"FINISHED"}
    assert [e.udp_filepath for e in sheet] == ["//sheet/Toy_front.udp.npz", ""]  # left: 8x8


def test_the_panel_settings_are_what_the_button_renders(shader_addon, toy_character, tmp_path):
    import bpy

    _saved(bpy, toy_character, tmp_path)
    defaults = bpy.context.scene.anirender.sheet_views
    defaults.views, defaults.size, defaults.engine = {"BACK"}, 48, "WORKBENCH"
    defaults.output_dir = "//panel_views/"
    bpy.context.view_layer.objects.active = toy_character
    assert bpy.ops.anirender.render_sheet_views() == {"FINISHED"}
    assert sorted(p.name for p in (tmp_path / "panel_views").iterdir()) == [
        "Toy_back.png",
        "Toy_back.udp.npz",
    ]
    assert _png(tmp_path / "panel_views" / "Toy_back.png").shape == (48, 48, 4)


def test_a_blender_image_view_is_exported_as_the_exact_straight_rgba_png(blender, tmp_path):
    from anirender.addon.shading.sheet_files import write_png

    rgba = np.random.default_rng(3).integers(0, 256, (24, 40, 4)).astype(np.uint8)
    (tmp_path / "out").mkdir()
    write_png(tmp_path / "out" / "view.png", rgba)
    np.testing.assert_array_equal(_png(tmp_path / "out" / "view.png"), rgba)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["view.png"]
