"""The AniRender render engine through Blender's own render operator (F12, Ctrl+F12):
the toy character with an image-only sheet, the shipped CoNR weights in process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_support import sheet_images

WORKING = "128"  # the shader's working square
RESOLUTION = (256, 192, 50)  # x, y, percentage: frames of 128 x 96
FRAME = (128, 96)


@pytest.fixture
def engine_scene(shader_addon, toy_character, tmp_path):
    """The toy with a two-view sheet and canonical colours, AniRender as the engine."""
    import bpy

    from anirender.addon.passes.canonical import set_canonical_pose

    set_canonical_pose(toy_character)
    for i, image in enumerate(sheet_images(2, 200, seed=21)):
        path = tmp_path / f"sheet_{i}.png"
        Image.fromarray(image).save(path)
        toy_character.anirender.sheet.add().filepath = str(path)
    shader_addon.service_mode = "IN_PROCESS"
    scene = bpy.context.scene
    scene.render.engine = "ANIRENDER"
    scene.anirender.neural.size = WORKING
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = RESOLUTION
    render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    set_format(scene, "PNG")
    return scene


def set_format(scene, fmt: str) -> None:
    settings = scene.render.image_settings
    if fmt == "EXR_MULTILAYER":
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.color_depth = "32"
    else:
        settings.media_type = "IMAGE"
        settings.file_format = fmt
        settings.color_mode = "RGBA"


def expected_frame(scene, frame: int, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """What F12 should write: the pass renderer's UDP at the output size, framed and
    shaded by the same in-process client, straight-alpha uint8; and the UDP."""
    import bpy

    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.addon.shading.sessions import ShadingSession
    from anirender.addon.shading.sheets import read_sheet
    from anirender.models.alpha import to_straight_uint8
    from anirender.models.framing import shade_in_frame

    toy = bpy.data.objects["Toy"]
    request = PassRequest(tmp_path / "expected", [frame], ("udp",), ("npz",), True, None)
    with PassRenderer(scene, toy, request) as renderer:
        udp = renderer.render_frame(frame)["udp"]
    session = ShadingSession({"mode": "IN_PROCESS", "weights": ""}, read_sheet(toy, 128))
    return to_straight_uint8(shade_in_frame(session.shade, udp, 128)), udp


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def test_engine_is_chosen_in_render_properties_with_its_panels(engine_scene):
    import bpy
    from test_ui_headless import _draw

    from anirender.panels import engine as panels

    engines = {
        getattr(cls, "bl_idname", ""): getattr(cls, "bl_label", "")
        for cls in bpy.types.RenderEngine.__subclasses__()
    }
    assert engines["ANIRENDER"] == "AniRender"  # and the fixture could choose it
    context = bpy.context
    assert context.engine == "ANIRENDER"
    drawn = _draw(panels.ANIRENDER_PT_engine_shader.draw, context)
    props = [name for kind, name in drawn if kind == "prop"]
    assert props == ["shader", "size", "weights", "service_mode"]
    engine_scene.anirender.neural.shader = "ANR"
    drawn = _draw(panels.ANIRENDER_PT_engine_shader.draw, context)
    props = [name for kind, name in drawn if kind == "prop"]
    assert props == ["shader", "weights", "identity", "coarse", "service_mode"]
    engine_scene.anirender.neural.shader = "SHEET"
    characters = _draw(panels.ANIRENDER_PT_engine_characters.draw, context)
    assert ("label", "Toy: 2 sheet views, image-only CoNR") in characters
    assert panels.ANIRENDER_PT_engine_shader.poll(context)
    assert "ANIRENDER" in bpy.types.RENDER_PT_color_management.COMPAT_ENGINES
    engine_scene.render.engine = "CYCLES"
    assert not panels.ANIRENDER_PT_engine_shader.poll(bpy.context)


def test_f12_writes_the_shaded_frame_at_the_scene_resolution(engine_scene, tmp_path, artifacts_dir):
    import bpy

    engine_scene.frame_set(3)
    want, udp = expected_frame(engine_scene, 3, tmp_path)
    engine_scene.render.filepath = str(tmp_path / "still.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    got = read_png(tmp_path / "still.png")
    assert got.shape == (FRAME[1], FRAME[0], 4)
    visible = udp[..., 3] > 0
    assert (got[..., 3][visible] > 0).mean() > 0.95  # alpha where the character is
    assert got[..., 3][:, :5].max() == 0  # and film transparent beside it
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff[..., 3].max() <= 1 and diff[visible].max() <= 2  # sRGB there and back
    Image.fromarray(np.concatenate([(udp * 255).astype(np.uint8), got], 1)).save(
        artifacts_dir / "engine_f12_toy_udp_and_shaded.png"
    )


def test_characters_are_composited_by_depth():
    """Two overlapping characters: the nearer surface wins, outlines fall behind it."""
    from anirender.addon.shading.frame_shading import CharacterFrame, composite_by_depth

    height, width = 8, 8
    near_udp = np.zeros((height, width, 4), np.float32)
    near_udp[2:6, 2:6] = [0.1, 0.2, 0.3, 1.0]
    far_udp = np.zeros((height, width, 4), np.float32)
    far_udp[4:8, 4:8] = [0.7, 0.8, 0.9, 1.0]
    near_depth = np.where(near_udp[..., 3:4] > 0, 2.0, 0.0).repeat(4, 2)
    far_depth = np.where(far_udp[..., 3:4] > 0, 5.0, 0.0).repeat(4, 2)
    red = np.zeros((height, width, 4), np.float32)
    red[1:6, 1:6] = [1.0, 0.0, 0.0, 1.0]  # reaches one pixel past the silhouette
    blue = np.zeros((height, width, 4), np.float32)
    blue[4:8, 4:8] = [0.0, 0.0, 0.5, 0.5]
    far = CharacterFrame("Far", {"udp": far_udp, "depth": far_depth}, None)
    near = CharacterFrame("Near", {"udp": near_udp, "depth": near_depth}, None)
    frame = composite_by_depth([far, near], [blue, red])  # order given: far first
    np.testing.assert_allclose(frame.rgba[5, 5], [1, 0, 0, 1])  # overlap: the near one
    np.testing.assert_allclose(frame.rgba[7, 7], [0, 0, 0.5, 0.5])  # only the far one
    np.testing.assert_allclose(frame.rgba[1, 1], [1, 0, 0, 1])  # the near one's outline
    assert frame.rgba[0, 0, 3] == 0
    np.testing.assert_allclose(frame.passes["udp"][5, 5], near_udp[5, 5])
    np.testing.assert_allclose(frame.passes["udp"][7, 7], far_udp[7, 7])
    np.testing.assert_allclose(frame.passes["depth"][5, 5, 0], 2.0)
    assert frame.nearest[5, 5] == 1 and frame.nearest[7, 7] == 0 and frame.nearest[0, 0] == -1


def read_multilayer(path: Path) -> dict[str, np.ndarray]:
    """Every pass of a multilayer EXR, (H, W, C) float32, row 0 at the top."""
    import OpenEXR

    channels: dict[str, dict[str, np.ndarray]] = {}
    with OpenEXR.File(str(path)) as exr:
        for part in exr.parts:
            for name, channel in part.channels.items():
                layer, pass_name, *letter = name.split(".")  # ViewLayer.Normal.X
                pixels = np.asarray(channel.pixels, np.float32)
                if pixels.ndim == 2:
                    pixels = pixels[..., None]
                channels.setdefault(pass_name, {})[letter[0] if letter else ""] = pixels
    order = {"Normal": "XYZ", "UV": "UVA"}
    return {
        name: np.concatenate([found[c] for c in order.get(name, list(found))], axis=2)
        for name, found in channels.items()
    }


def test_render_passes_are_kept_by_a_multilayer_exr(engine_scene, tmp_path):
    """Combined, UDP, Normal, Depth, UV, Alpha in one EXR; the UDP is what
    `anirender passes --fast` writes for that frame."""
    import bpy

    blend = tmp_path / "toy.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    engine_scene.frame_set(3)
    set_format(engine_scene, "EXR_MULTILAYER")
    engine_scene.render.filepath = str(tmp_path / "still.exr")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    layers = read_multilayer(tmp_path / "still.exr")
    assert {name: p.shape[2] for name, p in layers.items()} == {
        "Combined": 4, "UDP": 4, "Normal": 3, "Depth": 1, "UV": 3, "Alpha": 1
    }  # fmt: skip
    assert layers["UDP"].shape[:2] == (FRAME[1], FRAME[0])

    out = tmp_path / "passes"
    command = [sys.executable, "-m", "anirender.cli", "passes", str(blend), "--out", str(out)]
    command += ["--frames", "3", "--passes", "udp,depth,normal", "--formats", "exr", "--fast"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    from anirender.models.exr import read_exr

    udp = read_exr(out / "udp" / "udp_0003.exr")
    np.testing.assert_array_equal(layers["UDP"], udp)
    on = udp[..., 3] > 0
    assert on.mean() > 0.05
    depth = read_exr(out / "depth" / "depth_0003.exr")[..., 0]
    np.testing.assert_allclose(layers["Depth"][..., 0][on], depth[on], rtol=1e-6)
    assert (layers["Depth"][..., 0][~on] == 1e10).all()  # nothing there: far, as Cycles
    normal = read_exr(out / "normal" / "normal_0003.exr")
    np.testing.assert_allclose(layers["Normal"][on], normal[..., :3][on], atol=1e-6)
    alpha = layers["Combined"][..., 3]
    np.testing.assert_array_equal(layers["Alpha"][..., 0], alpha)
    assert (alpha[on] > 0).mean() > 0.95 and alpha[:, :5].max() == 0
    assert (layers["UV"][..., 2] == on).all()  # the UV pass's third channel: occupancy


def test_ctrl_f12_renders_the_range_through_blenders_output(engine_scene, tmp_path):
    """PNG and OpenEXR sequences, frame step, and placeholders: a frame another worker
    claimed is left to it, frames on disk are not rendered again."""
    import bpy

    rendered = []

    def count(scene, *_):
        rendered.append(scene.frame_current)

    bpy.app.handlers.render_pre.append(count)
    try:
        engine_scene.frame_start, engine_scene.frame_end = 1, 3
        engine_scene.render.filepath = str(tmp_path / "png" / "toy_")
        assert bpy.ops.render.render(animation=True) == {"FINISHED"}
        frames = [read_png(tmp_path / "png" / f"toy_{f:04d}.png") for f in (1, 2, 3)]
        assert {f.shape for f in frames} == {(FRAME[1], FRAME[0], 4)}
        assert np.abs(frames[0].astype(int) - frames[2].astype(int)).max() > 10  # it moves
        want, udp = expected_frame(engine_scene, 2, tmp_path)
        assert np.abs(frames[1].astype(int) - want.astype(int))[udp[..., 3] > 0].max() <= 2

        # OpenEXR, every second frame of 1-5
        set_format(engine_scene, "OPEN_EXR")
        engine_scene.frame_end, engine_scene.frame_step = 5, 2
        engine_scene.render.filepath = str(tmp_path / "exr" / "toy_")
        assert bpy.ops.render.render(animation=True) == {"FINISHED"}
        names = sorted(p.name for p in (tmp_path / "exr").iterdir())
        assert names == ["toy_0001.exr", "toy_0003.exr", "toy_0005.exr"]
        from anirender.models.exr import read_exr

        exr = read_exr(tmp_path / "exr" / "toy_0003.exr")
        assert exr.shape == (FRAME[1], FRAME[0], 4)  # float, premultiplied, scene-linear
        np.testing.assert_allclose(exr[..., 3], frames[2][..., 3] / 255.0, atol=0.6 / 255)

        # placeholders: frame 5 is claimed by another worker, 1-3 are on disk already
        engine_scene.frame_step = 1
        set_format(engine_scene, "PNG")
        engine_scene.render.filepath = str(tmp_path / "png" / "toy_")
        engine_scene.render.use_overwrite = False
        engine_scene.render.use_placeholder = True
        (tmp_path / "png" / "toy_0005.png").write_bytes(b"")
        before = {f: (tmp_path / "png" / f"toy_{f:04d}.png").read_bytes() for f in (1, 2, 3)}
        rendered.clear()
        assert bpy.ops.render.render(animation=True) == {"FINISHED"}
        assert rendered == [4]  # nothing twice, nothing left out
        assert (tmp_path / "png" / "toy_0005.png").stat().st_size == 0  # the other worker's
        for f, data in before.items():
            assert (tmp_path / "png" / f"toy_{f:04d}.png").read_bytes() == data
        assert read_png(tmp_path / "png" / "toy_0004.png")[..., 3].max() == 255
    finally:
        bpy.app.handlers.render_pre.remove(count)


def _junk(folder) -> str:
    path = folder / "junk.safetensors"
    path.write_bytes(b"not a model" * 10)
    return str(path)


def _drop_canonical(toy):
    import bpy

    from anirender.addon.passes.canonical import ATTRIBUTE

    mesh = bpy.data.objects["Body"].data
    mesh.attributes.remove(mesh.attributes[ATTRIBUTE])


def _empty(scene):
    import bpy

    empty = bpy.data.objects.new("Not a camera", None)
    scene.collection.objects.link(empty)
    return empty


def _snapshot():
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    snap = scene_snapshot(bpy.context)
    snap["data"]["images"] = [n for n in snap["data"]["images"] if n != "Render Result"]
    return snap


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda scene, toy, tmp: toy.anirender.sheet.clear(),
            '"Toy" has no character sheet. Add its reference drawings .* disable it in renders',
        ),
        (
            lambda scene, toy, tmp: setattr(
                scene.anirender.neural, "weights", str(tmp / "gone.safetensors")
            ),
            "Weights file or folder not found: .*gone.safetensors. Fix the weights in Render "
            "Properties > AniRender > Shader",
        ),
        (  # found only when the shader loads, mid-frame
            lambda scene, toy, tmp: setattr(scene.anirender.neural, "weights", _junk(tmp)),
            "junk.safetensors is not a readable safetensors file",
        ),
        (  # Blender refuses this one itself, before any engine runs
            lambda scene, toy, tmp: setattr(scene, "camera", None),
            "Cannot render, no camera",
        ),
        (
            lambda scene, toy, tmp: setattr(scene, "camera", _empty(scene)),
            'The active camera of scene "Scene", "Not a camera", is of type Empty, not a camera; .* '
            "Choose a camera in Scene Properties > Camera",
        ),
        (
            lambda scene, toy, tmp: _drop_canonical(toy),
            'Character "Toy" has no canonical colours yet .* run Set Canonical Pose',
        ),
    ],
    ids=[
        "no sheet",
        "missing weights",
        "broken weights",
        "no camera",
        "an empty as camera",
        "no canonical",
    ],  # fmt: skip
)
def test_a_render_that_cannot_start_says_why_and_changes_nothing(
    engine_scene, tmp_path, break_it, message
):
    import bpy

    break_it(engine_scene, bpy.data.objects["Toy"], tmp_path)
    engine_scene.render.filepath = str(tmp_path / "out" / "toy_")
    engine_scene.frame_start, engine_scene.frame_end = 1, 2
    before = _snapshot()
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.render.render(write_still=True)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.render.render(animation=True)
    assert _snapshot() == before
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_farm_job_folder_renders_where_it_is_copied_by_two_workers_at_once(
    engine_scene, tiny_conr_weights, tmp_path
):
    """A farm job: the .blend with its sheets and weights beside it (// paths), copied to
    another place; two `anirender render` at once (two workers), placeholders on and
    overwrite off, render every frame once, none missing. Without its weights file the
    job stops, naming the file and the fix."""
    import shutil

    import bpy

    job = tmp_path / "job"
    (job / "sheets").mkdir(parents=True)
    (job / "weights").mkdir()
    shutil.copy(tiny_conr_weights, job / "weights" / "tiny.safetensors")
    bpy.ops.wm.save_as_mainfile(filepath=str(job / "toy.blend"))
    toy = bpy.data.objects["Toy"]
    for i, entry in enumerate(toy.anirender.sheet):
        shutil.copy(entry.filepath, job / "sheets" / f"view_{i}.png")
        entry.filepath = f"//sheets/view_{i}.png"
    engine_scene.anirender.neural.weights = "//weights/tiny.safetensors"
    engine_scene.anirender.neural.service_mode = "IN_PROCESS"
    engine_scene.render.use_overwrite = False
    engine_scene.render.use_placeholder = True
    bpy.ops.wm.save_mainfile()
    moved = shutil.copytree(job, tmp_path / "elsewhere" / "job")

    out = moved / "frames"
    command = [sys.executable, "-m", "anirender.cli", "render", str(moved / "toy.blend")]
    command += ["--frames", "1-8", "--out", f"{out}/"]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    rendered = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-2000:]
        assert "render: " in stderr and "/8 [" in stderr  # tqdm's bar
        line = next(x for x in stdout.splitlines() if x.startswith("rendered "))
        listed = line.split("(", 1)[1].split(")", 1)[0]
        rendered.append([int(f) for f in listed.split(", ") if f != "none"])
    print("frames per worker:", rendered)
    assert sorted(rendered[0] + rendered[1]) == list(range(1, 9))  # no doubles, no gaps
    files = sorted(out.iterdir())
    assert [p.name for p in files] == [f"toy_{f:04d}.png" for f in range(1, 9)]
    for path in files:
        alpha = read_png(path)[..., 3]
        assert alpha.shape == (FRAME[1], FRAME[0]) and (alpha > 0).mean() > 0.05

    (moved / "weights" / "tiny.safetensors").unlink()
    command[-1] = f"{moved}/again/"  # frames not on disk yet
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "anirender render: Weights file or folder not found: " in done.stderr
    assert str(moved / "weights" / "tiny.safetensors") in done.stderr
    assert "Fix the weights in Render Properties > AniRender > Shader" in done.stderr


def test_a_background_scene_is_composited_under_the_characters(
    engine_scene, tmp_path, artifacts_dir
):
    """A second scene (Cycles, a blue world) under the AniRender scene with
    Render Layers + Alpha Over, in one F12."""
    import bpy

    engine_scene.frame_set(2)
    engine_scene.render.filepath = str(tmp_path / "characters.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    characters = read_png(tmp_path / "characters.png")

    background = bpy.data.scenes.new("Background")
    background.render.engine = "CYCLES"
    background.cycles.samples = 1
    background.cycles.use_denoising = False
    render = background.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = RESOLUTION
    background.view_settings.view_transform = "Standard"
    background.frame_set(2)
    world = background.world = bpy.data.worlds.new("Background sky")
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.2, 0.6, 1)
    background.collection.objects.link(engine_scene.camera)
    background.camera = engine_scene.camera

    tree = bpy.data.node_groups.new("AniRender over background", "CompositorNodeTree")
    tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    under = tree.nodes.new("CompositorNodeRLayers")
    under.scene = background
    over = tree.nodes.new("CompositorNodeRLayers")
    over.scene = engine_scene
    assert {"UDP", "Normal", "Depth", "UV", "Alpha"} <= {o.name for o in over.outputs if o.enabled}
    alpha_over = tree.nodes.new("CompositorNodeAlphaOver")
    output = tree.nodes.new("NodeGroupOutput")
    tree.links.new(under.outputs["Image"], alpha_over.inputs["Background"])
    tree.links.new(over.outputs["Image"], alpha_over.inputs["Foreground"])
    tree.links.new(alpha_over.outputs["Image"], output.inputs["Image"])
    engine_scene.compositing_node_group = tree
    engine_scene.render.use_compositing = True

    engine_scene.render.filepath = str(tmp_path / "composited.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    composited = read_png(tmp_path / "composited.png")
    assert composited.shape == characters.shape
    assert (composited[..., 3] == 255).all()  # the background fills the frame
    inside = characters[..., 3] == 255
    outside = characters[..., 3] == 0
    diff = np.abs(composited[..., :3].astype(int) - characters[..., :3].astype(int))
    assert inside.mean() > 0.05 and diff[inside].max() <= 2  # the characters in front
    sky = composited[..., :3][outside].astype(int)
    assert (sky[:, 2] > sky[:, 0] + 60).all()  # the blue world around them
    Image.fromarray(composited).save(artifacts_dir / "engine_composited_over_cycles.png")


def test_viewport_preview_image_for_a_view_matrix(engine_scene, tmp_path, artifacts_dir):
    """Through the camera's matrices the preview is the F12 frame; another view shows
    the character from there."""
    import bpy
    from mathutils import Matrix

    from anirender.addon.passes.evaluated import ViewMatrices
    from anirender.addon.shading.engine import plan_frame
    from anirender.addon.shading.preview import preview_image
    from anirender.models.alpha import to_straight_uint8

    engine_scene.frame_set(2)
    engine_scene.render.filepath = str(tmp_path / "f12.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    f12 = read_png(tmp_path / "f12.png")

    depsgraph = bpy.context.evaluated_depsgraph_get()
    plan = plan_frame(depsgraph, engine_scene, need_camera=False)
    camera = engine_scene.camera
    projection = camera.calc_matrix_camera(depsgraph, x=FRAME[0], y=FRAME[1])
    through_camera = ViewMatrices(np.array(camera.matrix_world.inverted()), np.array(projection))
    seen = to_straight_uint8(preview_image(depsgraph, plan, through_camera, FRAME))
    assert seen.shape == f12.shape
    on = f12[..., 3] > 0
    assert np.abs(seen.astype(int) - f12.astype(int))[on].max() <= 2

    toy = bpy.data.objects["Toy"]
    centre = toy.matrix_world.translation
    orbit = Matrix.Translation(centre) @ Matrix.Rotation(0.7, 4, "Z") @ Matrix.Translation(-centre)
    from_the_side = ViewMatrices(
        np.array((orbit @ camera.matrix_world).inverted()), np.array(projection)
    )
    side = to_straight_uint8(preview_image(depsgraph, plan, from_the_side, FRAME))
    assert (side[..., 3] > 0).mean() > 0.03
    assert np.abs(side.astype(int) - seen.astype(int)).max() > 50
    Image.fromarray(np.concatenate([seen, side], 1)).save(artifacts_dir / "engine_preview.png")


def test_preview_worker_never_waits_and_shades_the_newest_request():
    import threading

    from anirender.addon.shading.preview import PreviewWorker

    started, release = threading.Event(), threading.Event()
    shaded = []

    def shade(name):
        shaded.append(name)
        started.set()
        if name == "first":
            release.wait(60)
        return np.full((2, 2, 4), len(shaded), np.float32)

    worker = PreviewWorker(shade, debounce=0.0)
    try:
        worker.submit("a", "first")
        assert started.wait(60)  # the worker took it and is busy
        worker.submit("b", "second")  # returns at once although the worker is busy
        worker.submit("c", "third")  # replaces "second", which never starts
        assert worker.result is None
        release.set()
        assert worker.wait_finished(2, timeout=60)
        assert shaded == ["first", "third"]
        assert worker.result[0] == "c" and worker.result[1][0, 0, 0] == 2
    finally:
        worker.stop()


def test_makehuman_walk_f12_and_three_frames(
    shader_addon, makehuman_character, tmp_path, artifacts_dir
):
    """The MakeHuman walk: F12 into a multilayer EXR whose UDP is the pass renderer's,
    and Ctrl+F12 over three frames into PNGs with alpha where the character is."""
    import bpy

    from anirender.addon.passes.canonical import set_canonical_pose
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest

    armature = makehuman_character
    set_canonical_pose(armature)
    for i, image in enumerate(sheet_images(2, 200, seed=5)):
        path = tmp_path / f"sheet_{i}.png"
        Image.fromarray(image).save(path)
        armature.anirender.sheet.add().filepath = str(path)
    shader_addon.service_mode = "IN_PROCESS"
    scene = bpy.context.scene
    scene.render.engine = "ANIRENDER"
    scene.anirender.neural.size = WORKING
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = (
        96, 128, 100
    )  # fmt: skip
    scene.view_settings.view_transform = "Standard"
    first = scene.frame_start
    frames = [first, first + 4, first + 8]

    scene.frame_set(frames[1])
    set_format(scene, "EXR_MULTILAYER")
    scene.render.filepath = str(tmp_path / "walk.exr")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    layers = read_multilayer(tmp_path / "walk.exr")
    request = PassRequest(tmp_path / "passes", frames, ("udp",), ("npz",), True, None)
    with PassRenderer(scene, armature, request) as renderer:
        udp = {f: renderer.render_frame(f)["udp"] for f in frames}
    np.testing.assert_array_equal(layers["UDP"], udp[frames[1]])

    set_format(scene, "PNG")
    scene.frame_start, scene.frame_end, scene.frame_step = first, first + 8, 4
    scene.render.filepath = str(tmp_path / "walk" / "walk_")
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    shots = [read_png(tmp_path / "walk" / f"walk_{f:04d}.png") for f in frames]
    for shot, frame in zip(shots, frames):
        assert shot.shape == (128, 96, 4)
        on = udp[frame][..., 3] > 0
        assert on.mean() > 0.03 and (shot[..., 3][on] > 0).mean() > 0.95
    assert np.abs(shots[0].astype(int) - shots[2].astype(int)).max() > 10  # it walks
    Image.fromarray(np.concatenate(shots, 1)).save(artifacts_dir / "engine_makehuman_walk.png")


def test_sheets_are_read_ahead_and_again_when_a_file_changes(engine_scene, tmp_path):
    import os

    import bpy

    from anirender.addon.shading import engine

    engine._sheets.clear()
    bpy.context.view_layer.update()
    engine_scene.frame_set(2)  # a change: the handler reads the sheet on this thread
    assert len(engine._sheets) == 1
    engine_scene.render.filepath = str(tmp_path / "before.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    path = tmp_path / "sheet_0.png"
    Image.fromarray(sheet_images(1, 200, seed=99)[0]).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    engine_scene.render.filepath = str(tmp_path / "after.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    before, after = read_png(tmp_path / "before.png"), read_png(tmp_path / "after.png")
    assert np.abs(before.astype(int) - after.astype(int)).max() > 10  # the new drawing


def test_ctrl_f12_into_a_video_file(engine_scene, tmp_path):
    import bpy

    settings = engine_scene.render.image_settings
    settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    engine_scene.render.ffmpeg.format = "MPEG4"
    engine_scene.render.ffmpeg.codec = "H264"
    engine_scene.frame_start, engine_scene.frame_end = 1, 3
    engine_scene.render.filepath = str(tmp_path / "toy_")
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    (video,) = tmp_path.glob("toy_*.mp4")
    movie = bpy.data.movieclips.load(str(video))
    assert movie.frame_duration == 3 and tuple(movie.size) == FRAME


def test_the_anr_shader_renders_the_scenes_anr_model(engine_scene, tmp_path):
    """Shader "ANR Model": the coarse mesh's UV and normal passes at the frame's size
    (padded to multiples of 32 and cropped again) through the scene's ANR model."""
    import bpy
    from test_anr import _tiny_anr

    from anirender.addon.anr.capture import coarse_meshes
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.addon.shading.sessions import AnrSession
    from anirender.models.alpha import to_straight_uint8

    _tiny_anr(tmp_path / "anr.safetensors")
    engine_scene.anirender.neural.shader = "ANR"
    anr = engine_scene.anirender.anr
    anr.weights, anr.identity = str(tmp_path / "anr.safetensors"), 1
    render = engine_scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 100, 70, 100
    engine_scene.frame_set(2)
    engine_scene.render.filepath = str(tmp_path / "anr.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    got = read_png(tmp_path / "anr.png")
    assert got.shape == (70, 100, 4)

    toy = bpy.data.objects["Toy"]
    (coarse,) = coarse_meshes(toy)
    others = [m for m in bpy.data.objects if m.type == "MESH" and m != coarse]
    for mesh in others:
        mesh.hide_render = True
    request = PassRequest(tmp_path / "p", [2], ("uv", "normal"), ("npz",), True, None)
    with PassRenderer(engine_scene, toy, request) as renderer:
        passes = renderer.render_frame(2)
    pad = ((0, 0), (0, 96 - 70), (0, 128 - 100), (0, 0))
    uv, normal = (np.pad(passes[n][None], pad) for n in ("uv", "normal"))
    session = AnrSession({"mode": "IN_PROCESS"}, (tmp_path / "anr.safetensors").read_bytes(), 1)
    want = to_straight_uint8(session.shade(uv, normal)[0, :70, :100])
    on = passes["uv"][..., 3] > 0
    assert on.mean() > 0.03
    assert np.abs(got.astype(int) - want.astype(int))[on].max() <= 2
    assert got[..., 3][on].min() > 0


def test_without_torch_the_numpy_rasteriser_draws_the_same_passes(
    engine_scene, tmp_path, monkeypatch
):
    """Blender's own Python has no torch: the engine's passes come from the numpy twin of
    the rasteriser, pixel for pixel what torch's draws (toy, UDP/normal/depth/UV)."""
    import bpy

    from anirender.addon.passes import fast
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.models import raster_numpy

    toy = bpy.data.objects["Toy"]
    passes = ("udp", "normal", "depth", "uv")
    request = PassRequest(tmp_path / "p", [1, 3], passes, ("npz",), True, (160, 120))
    with PassRenderer(engine_scene, toy, request) as renderer:
        with_torch = [renderer.render_frame(f) for f in (1, 3)]
        renderer._backend = fast.FastBackend(renderer, raster=raster_numpy)
        with_numpy = [renderer.render_frame(f) for f in (1, 3)]
    for a, b in zip(with_torch, with_numpy):
        for name in passes:
            same = (a[name][..., 3] == b[name][..., 3]).mean()
            assert same > 0.999, name  # a silhouette pixel may tie differently
            both = (a[name][..., 3] > 0) & (b[name][..., 3] > 0)
            assert np.abs(a[name][both] - b[name][both]).max() < 1e-3

    engine_scene.frame_set(3)
    engine_scene.render.filepath = str(tmp_path / "torch.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    monkeypatch.setattr(fast, "_raster_module", lambda: raster_numpy)
    engine_scene.render.filepath = str(tmp_path / "numpy.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    a, b = read_png(tmp_path / "torch.png"), read_png(tmp_path / "numpy.png")
    assert (np.abs(a.astype(int) - b.astype(int)) > 2).mean() < 0.001


_NO_TORCH_RENDER = """
import sys

class NoTorch:  # a Python without torch, as Blender's own
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")

sys.meta_path.insert(0, NoTorch())
import bpy
import addon_utils

blend, url, out = sys.argv[1:4]
bpy.ops.wm.open_mainfile(filepath=blend)
addon_utils.enable("anirender", default_set=True)
prefs = bpy.context.preferences.addons["anirender"].preferences
prefs.service_mode, prefs.remote_url = "REMOTE", url
scene = bpy.context.scene
scene.render.filepath = out
bpy.ops.render.render(write_still=True)
bpy.context.view_layer.objects.active = bpy.data.objects["Toy"]
assert bpy.ops.anirender.neural_render_frame(size="128") == {"FINISHED"}  # the operator too
assert bpy.data.images["Toy Neural Frame"].size[:] == (128, 96)
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("rendered without torch")
"""


def test_a_blender_without_torch_renders_through_a_service(engine_scene, shader_service, tmp_path):
    """What an artist's Blender or a farm worker runs: no torch in its Python, the add-on
    registers, the numpy rasteriser draws the passes and the service shades (F12, and
    Neural Render Frame on the same road)."""
    import os

    import bpy

    blend = tmp_path / "toy.blend"
    engine_scene.frame_set(2)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    script = tmp_path / "render_without_torch.py"
    script.write_text(_NO_TORCH_RENDER)
    user = tmp_path / "user"
    user.mkdir()
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user))
    out = tmp_path / "no_torch.png"
    command = [sys.executable, str(script), str(blend), shader_service.url, str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "rendered without torch" in done.stdout
    frame = read_png(out)
    assert frame.shape == (FRAME[1], FRAME[0], 4)
    assert (frame[..., 3] > 0).mean() > 0.05 and frame[..., 3][:, :5].max() == 0


def test_stamp_is_burnt_in_by_blender(engine_scene, tmp_path):
    import bpy

    engine_scene.render.filepath = str(tmp_path / "plain.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    engine_scene.render.use_stamp = True
    engine_scene.render.stamp_font_size = 8
    engine_scene.render.filepath = str(tmp_path / "stamped.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    plain, stamped = read_png(tmp_path / "plain.png"), read_png(tmp_path / "stamped.png")
    changed = np.abs(plain.astype(int) - stamped.astype(int)).max(axis=2) > 0
    assert changed[-12:].any() and changed[-12:].mean() > changed[:-12].mean()  # a band


def test_esc_between_characters_stops_the_frame():
    from anirender.addon.shading.frame_shading import CharacterFrame, FrameStopped, shade_frame

    shaded = []
    udp = np.zeros((4, 4, 4), np.float32)

    def shade(passes):
        shaded.append(1)
        return np.zeros((4, 4, 4), np.float32)

    characters = [CharacterFrame(n, {"udp": udp}, shade) for n in ("A", "B")]
    asked = iter([False, True])
    with pytest.raises(FrameStopped):
        shade_frame(characters, should_stop=lambda: next(asked))
    assert shaded == [1]  # the second character was never sent to the shader


def test_viewport_draw_shades_on_the_worker_and_draws_the_last_result(engine_scene, monkeypatch):
    """``view_draw`` with the GPU left out (no display here): a new view or a
    ``view_update`` sends one request to the worker, an unchanged view none; the last
    result is what gets drawn."""
    import types

    import bpy

    from anirender.addon.shading import engine as engine_module

    drawn = []
    monkeypatch.setattr(
        engine_module, "_draw_rgba", lambda engine, scene, rgba, region: drawn.append(rgba)
    )
    monkeypatch.setattr(engine_module, "_poll_preview", lambda engine: None)
    fake = types.SimpleNamespace(
        _preview=None, _preview_key=None, _updates=0, stats=[],
        update_stats=lambda a, b: fake.stats.append(b),
    )  # fmt: skip
    camera = engine_scene.camera
    depsgraph = bpy.context.evaluated_depsgraph_get()
    region = types.SimpleNamespace(width=256, height=192)
    view3d = types.SimpleNamespace(
        view_matrix=camera.matrix_world.inverted(),
        window_matrix=camera.calc_matrix_camera(depsgraph, x=256, y=192),
        is_perspective=True,
    )
    context = types.SimpleNamespace(region=region, region_data=view3d)
    draw = engine_module.AniRenderEngine.view_draw
    try:
        draw(fake, context, depsgraph)
        worker = fake._preview
        assert worker.wait_finished(1, timeout=120)
        assert not drawn  # nothing to draw before the first result
        draw(fake, context, depsgraph)  # the same view: drawn, not shaded again
        assert len(drawn) == 1 and drawn[0].shape == (144, 192, 4)  # 192 px longest side
        assert drawn[0][..., 3].max() > 0.5
        engine_module.AniRenderEngine.view_update(fake, context, depsgraph)
        draw(fake, context, depsgraph)
        assert worker.wait_finished(2, timeout=120)
        assert worker.finished == 2 and worker.error is None
    finally:
        if fake._preview is not None:
            fake._preview.stop()


def test_two_characters_are_composited_by_depth_in_one_render(
    engine_scene, tmp_path, artifacts_dir
):
    """A second toy behind and beside the first: one F12 shades both; where the near one
    covers, its own render shows; the Depth pass is the nearer surface's."""
    import bpy

    toy = bpy.data.objects["Toy"]
    meshes = [o for o in bpy.data.objects if o.parent == toy]
    bpy.ops.object.select_all(action="DESELECT")
    for obj in (toy, *meshes):
        obj.select_set(True)
    bpy.context.view_layer.objects.active = toy
    bpy.ops.object.duplicate()
    far = bpy.context.view_layer.objects.active
    assert far != toy and far.type == "ARMATURE" and len(far.anirender.sheet) == 2
    far.location = (0.35, 1.5, 0.0)  # behind (the camera looks along +Y) and to the side
    set_format(engine_scene, "EXR_MULTILAYER")
    engine_scene.frame_set(2)

    def render(name, hidden=()):
        for obj in hidden:
            obj.hide_render = True
        engine_scene.render.filepath = str(tmp_path / name)
        assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
        for obj in hidden:
            obj.hide_render = False
        return read_multilayer(tmp_path / name)

    far_meshes = [o for o in bpy.data.objects if o.parent == far]
    both = render("both.exr")
    near_only = render("near.exr", [far, *far_meshes])
    far_only = render("far.exr", [toy, *meshes])
    near_alpha, far_alpha = near_only["Alpha"][..., 0], far_only["Alpha"][..., 0]
    assert (far_alpha > 0.5).mean() > 0.02 and ((far_alpha > 0.5) & (near_alpha < 0.01)).any()
    solid = near_alpha > 0.999
    assert solid.mean() > 0.03
    np.testing.assert_allclose(both["Combined"][solid], near_only["Combined"][solid], atol=1e-3)
    alone = (far_alpha > 0.999) & (near_alpha == 0)
    np.testing.assert_allclose(both["Combined"][alone], far_only["Combined"][alone], atol=1e-3)
    depth = np.minimum(near_only["Depth"], far_only["Depth"])
    np.testing.assert_array_equal(both["Depth"], depth)
    assert (both["Alpha"] >= np.maximum(near_alpha, far_alpha)[..., None] - 1e-4).all()
    set_format(engine_scene, "PNG")
    engine_scene.render.filepath = str(artifacts_dir / "engine_two_toys_by_depth.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
