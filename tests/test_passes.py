"""UDP / UV / normal / depth / occupancy passes of the toy character, Cycles and fast."""

import numpy as np
import pytest

from anirender.errors import AniRenderError

SIZE = 96
ALL = ("udp", "uv", "normal", "depth", "occupancy")


def _render(scene, armature, out, frames, passes=ALL, fast=False, **kw):
    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest

    request = PassRequest(
        out_dir=out, frames=list(frames), passes=passes, fast=fast, size=(SIZE, SIZE), **kw
    )
    renderer, steps = render_udp_passes(scene, armature, request)
    results = {}
    with renderer:
        for frame in renderer.todo:
            results[frame] = renderer.render_and_write(frame)
    steps.close()
    return results


def _save_preview(path, rows):
    """Stack pass previews (H, W, 4 float) into one PNG: rows of images."""
    from PIL import Image

    from anirender.addon.passes.files import preview

    lines = [np.concatenate([preview(n, img)[..., :3] for n, img in row], axis=1) for row in rows]
    picture = (np.concatenate(lines, axis=0) * 255).round().astype(np.uint8)
    Image.fromarray(picture).save(path)


def test_fast_and_cycles_agree(toy_character, tmp_path, artifacts_dir):
    import bpy

    scene = bpy.context.scene
    cycles = _render(scene, toy_character, tmp_path / "cycles", (1, 12))
    fast = _render(scene, toy_character, tmp_path / "fast", (1, 12), fast=True)
    for frame in (1, 12):
        a, b = cycles[frame], fast[frame]
        occupancy_a, occupancy_b = a["occupancy"][..., 3] > 0, b["occupancy"][..., 3] > 0
        assert occupancy_a.mean() > 0.05  # the character fills a real part of the frame
        assert (occupancy_a == occupancy_b).mean() >= 0.99
        both = occupancy_a & occupancy_b
        assert np.abs(a["udp"][both, :3] - b["udp"][both, :3]).max() < 1e-3
        assert np.percentile(np.abs(a["uv"][both, :2] - b["uv"][both, :2]), 99) < 1e-3
        assert np.percentile(np.abs(a["depth"][both, 0] - b["depth"][both, 0]), 99) < 1e-3
        assert np.percentile(np.abs(a["normal"][both] - b["normal"][both]), 99) < 1e-2
        # visible normals face the camera (camera space +Z towards the viewer); smooth
        # normals may lean slightly away along the silhouette only
        assert (b["normal"][both, 2] > 0).mean() > 0.95
        assert np.allclose(np.linalg.norm(b["normal"][both, :3], axis=1), 1.0, atol=1e-4)
        for name in ALL:  # background is 0 everywhere
            assert not a[name][~occupancy_a].any() and not b[name][~occupancy_b].any()
    _save_preview(
        artifacts_dir / "passes_toy_cycles_vs_fast.png",
        [[(n, run[f][n]) for n in ALL[:4]] for f in (1, 12) for run in (cycles, fast)],
    )


def _project(depsgraph, camera, point, width, height):
    from bpy_extras.object_utils import world_to_camera_view

    ndc = world_to_camera_view(depsgraph.scene, camera.evaluated_get(depsgraph), point)
    return int((1 - ndc.y) * height), int(ndc.x * width)


def test_a_body_point_keeps_its_colour_across_frames_and_cameras(toy_character, tmp_path):
    import bpy
    from mathutils import Matrix

    from anirender.addon.passes import canonical

    scene = bpy.context.scene
    canonical.set_canonical_pose(toy_character)
    body = bpy.data.objects["Body"]
    co = np.array([v.co for v in body.data.vertices])
    # a chest point on the front of the body
    chest = np.flatnonzero((np.abs(co[:, 0]) < 0.03) & (np.abs(co[:, 2] - 1.25) < 0.04))
    vertex = int(chest[np.argmin(co[chest, 1])])
    colour = np.array(body.data.attributes[canonical.ATTRIBUTE].data[vertex].vector)

    front = scene.camera
    side = front.copy()
    side.data = front.data.copy()
    scene.collection.objects.link(side)
    side.matrix_world = Matrix.Rotation(np.radians(35), 4, "Z") @ front.matrix_world
    seen = []
    for camera in (front, side):
        scene.camera = camera
        results = _render(scene, toy_character, tmp_path / camera.name, (1, 12), ("udp",), True)
        for frame, images in results.items():
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            evaluated = body.evaluated_get(depsgraph)
            mesh = evaluated.to_mesh()
            point = evaluated.matrix_world @ mesh.vertices[vertex].co
            evaluated.to_mesh_clear()
            row, col = _project(depsgraph, camera, point, SIZE, SIZE)
            udp = images["udp"][row, col]
            assert udp[3] == 1.0
            seen.append(udp[:3])
    seen = np.array(seen)
    # one pixel spans ~0.01 of the canonical cube at this size
    assert np.abs(seen - colour).max() < 0.02, (seen, colour)
    assert len({tuple(np.round(s, 4)) for s in seen}) > 1  # really four different renders


def test_occupancy_matches_a_plain_render_and_covers_hair_and_skirt(toy_character, tmp_path):
    import bpy

    from anirender.addon.passes.files import read_blender_image

    scene = bpy.context.scene
    scene.frame_set(12)
    fast = _render(scene, toy_character, tmp_path / "fast", (12,), ("udp",), True)[12]["udp"]
    # the character's own materials, one centred sample per pixel, transparent film
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.use_denoising = 1, False
    scene.cycles.filter_width = 0.01
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.filepath = str(tmp_path / "plain.exr")
    bpy.ops.render.render(write_still=True)
    alpha = read_blender_image(tmp_path / "plain.exr")[..., 3] > 0.5
    occupancy = fast[..., 3] > 0
    assert alpha.mean() > 0.05
    assert (alpha == occupancy).mean() >= 0.99

    from anirender.addon.passes import canonical

    for name in ("Hair", "Skirt"):
        obj = bpy.data.objects[name]
        colours = np.array([d.vector for d in obj.data.attributes[canonical.ATTRIBUTE].data])
        obj.hide_render = True
        without = _render(scene, toy_character, tmp_path / name, (12,), ("udp",), True)[12]["udp"]
        obj.hide_render = False
        gone = occupancy & (without[..., 3] == 0)
        assert gone.sum() > 8, name  # hair is mostly behind the head from the front
        low, high = colours.min(0) - 1e-3, colours.max(0) + 1e-3
        assert ((fast[gone, :3] >= low) & (fast[gone, :3] <= high)).all(), name


@pytest.mark.parametrize("fast", [False, True], ids=["cycles", "fast"])
def test_npz_holds_exactly_what_the_exr_holds(toy_character, tmp_path, fast):
    import bpy
    from PIL import Image

    from anirender.models.exr import read_exr

    _render(bpy.context.scene, toy_character, tmp_path, (3,), ("udp", "normal", "depth"), fast)
    for name in ("udp", "normal", "depth"):
        exr = read_exr(tmp_path / name / f"{name}_0003.exr")
        with np.load(tmp_path / name / f"{name}_0003.npz") as archive:
            array = archive["i"]
        assert array.dtype == np.float32 and array.shape == (SIZE, SIZE, 4)
        np.testing.assert_array_equal(array, exr)
        assert array[..., 3].any()
        png = np.asarray(Image.open(tmp_path / name / f"{name}_0003.png"))
        assert png.dtype == np.uint8 and png.shape == (SIZE, SIZE, 3) and png.max() > 100


def test_operator_renders_skips_and_leaves_the_scene_as_it_was(addon, toy_character, tmp_path):
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    scene = bpy.context.scene
    scene.frame_set(5)
    before = scene_snapshot(bpy.context)
    counts = {n: len(getattr(bpy.data, n)) for n in ("scenes", "materials", "images")}
    kwargs = dict(
        output_dir=str(tmp_path), use_scene_range=False, frame_start=2, frame_end=3,
        use_size=True, width=64, height=48, passes={"UDP", "UV"}, formats={"EXR", "NPZ"},
    )  # fmt: skip
    assert bpy.ops.anirender.render_udp_passes(use_fast=False, **kwargs) == {"FINISHED"}
    assert scene_snapshot(bpy.context) == before
    assert {n: len(getattr(bpy.data, n)) for n in counts} == counts
    written = tmp_path / "udp" / "udp_0002.exr"
    assert written.is_file() and (tmp_path / "uv" / "uv_0003.npz").is_file()
    assert not (tmp_path / "udp" / "udp_0004.exr").exists()
    stamp = written.stat().st_mtime_ns
    bpy.ops.anirender.render_udp_passes(use_fast=True, **kwargs)
    assert written.stat().st_mtime_ns == stamp  # already on disk: skipped
    bpy.ops.anirender.render_udp_passes(use_fast=True, overwrite=True, **kwargs)
    assert written.stat().st_mtime_ns != stamp
    assert scene_snapshot(bpy.context) == before


def test_cancel_and_error_in_the_middle_leave_nothing_behind(toy_character, tmp_path):
    import bpy

    from anirender.addon.core.guard import scene_snapshot
    from anirender.addon.core.jobs import Job
    from anirender.addon.passes import canonical
    from anirender.addon.passes import renderer as passes

    scene = bpy.context.scene
    canonical.set_canonical_pose(toy_character)
    before = scene_snapshot(bpy.context)
    scenes = len(bpy.data.scenes)
    request = passes.PassRequest(tmp_path / "a", list(range(1, 9)), ("udp",), size=(32, 32))
    renderer, steps = passes.render_udp_passes(scene, toy_character, request)
    job = Job("passes", steps, total=len(renderer.todo))
    assert job.step() and job.step()
    assert len(bpy.data.scenes) == scenes + 1  # the temporary scene, while it runs
    job.cancel()
    assert len(bpy.data.scenes) == scenes and scene_snapshot(bpy.context) == before
    assert len(list((tmp_path / "a" / "udp").glob("*.exr"))) == 2

    request = passes.PassRequest(tmp_path / "b", [1, 2, 3], ("udp",), fast=True, size=(32, 32))
    renderer, steps = passes.render_udp_passes(scene, toy_character, request)
    next(steps)
    hair = bpy.data.objects["Hair"].data
    hair.attributes.remove(hair.attributes[canonical.ATTRIBUTE])
    with pytest.raises(AniRenderError, match="Hair"):
        next(steps)
    assert len(bpy.data.scenes) == scenes and scene_snapshot(bpy.context) == before


def _no_camera(bpy, tmp_path):
    bpy.context.scene.camera = None
    return {}, "no active camera"


def _no_character(bpy, tmp_path):
    bpy.data.objects.remove(bpy.data.objects["Toy"])
    bpy.context.view_layer.objects.active = None
    return {}, "no character"


def _bare_armature(bpy, tmp_path):
    bare = bpy.data.objects.new("Bones", bpy.data.armatures.new("Bones"))
    bpy.context.scene.collection.objects.link(bare)
    bpy.context.view_layer.objects.active = bare
    return {}, "deforms no meshes"


def _looking_away(bpy, tmp_path):
    camera = bpy.context.scene.camera
    camera.rotation_euler.z += np.pi
    return {}, "outside the view"


def _unwritable(bpy, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    return {"output_dir": str(blocker / "passes")}, "Cannot write passes"


def _zero_size(bpy, tmp_path):
    return {"use_size": True, "width": 0, "height": 64}, "resolution is 0 x 64"


@pytest.mark.parametrize(
    "make_bad",
    [_no_camera, _no_character, _bare_armature, _looking_away, _unwritable, _zero_size],
    ids=lambda f: f.__name__.strip("_"),
)
def test_bad_input_is_explained_and_changes_nothing(addon, toy_character, tmp_path, make_bad):
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    bpy.context.view_layer.objects.active = toy_character
    kwargs, message = make_bad(bpy, tmp_path)
    kwargs.setdefault("output_dir", str(tmp_path / "out"))
    before = scene_snapshot(bpy.context)
    counts = {n: len(getattr(bpy.data, n)) for n in ("scenes", "materials", "images", "objects")}
    for fast in (False, True):
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.anirender.render_udp_passes(
                use_scene_range=False, frame_start=1, frame_end=2, use_fast=fast, **kwargs
            )
        assert scene_snapshot(bpy.context) == before
        assert {n: len(getattr(bpy.data, n)) for n in counts} == counts
    assert not list((tmp_path / "out").rglob("*.exr"))


def test_cli_writes_passes_with_a_progress_bar(toy_character, tmp_path, capsys):
    import bpy

    from anirender.cli import main

    blend = tmp_path / "toy.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    code = main(
        ["passes", str(blend), "--out", str(tmp_path / "out"), "--frames", "2-3",
         "--passes", "udp,occupancy", "--fast", "--size", "48x40"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0 and "2/2" in out.err and "2 frames" in out.out
    with np.load(tmp_path / "out" / "udp" / "udp_0003.npz") as archive:
        assert archive["i"].shape == (40, 48, 4)
    assert main(["passes", str(blend), "--out", str(tmp_path), "--frames", "9-2"]) == 2
    assert "frame range" in capsys.readouterr().err


def test_orthographic_wide_frame_agrees_too(toy_character, tmp_path):
    import bpy

    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest

    scene = bpy.context.scene
    camera = scene.camera
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 2.2
    images = {}
    for fast in (False, True):
        request = PassRequest(tmp_path / str(fast), [6], ("udp", "normal", "depth"), ("npz",),
                              fast, (80, 56))  # fmt: skip
        renderer, steps = render_udp_passes(scene, toy_character, request)
        with renderer:
            images[fast] = renderer.render_frame(6)
        steps.close()
    a, b = images[False], images[True]
    occupancy_a, occupancy_b = a["udp"][..., 3] > 0, b["udp"][..., 3] > 0
    assert a["udp"].shape == (56, 80, 4) and occupancy_a.mean() > 0.05
    assert (occupancy_a == occupancy_b).mean() >= 0.99
    both = occupancy_a & occupancy_b
    assert np.abs(a["udp"][both, :3] - b["udp"][both, :3]).max() < 1e-3
    assert np.percentile(np.abs(a["depth"][both, 0] - b["depth"][both, 0]), 99) < 1e-3
    assert np.percentile(np.abs(a["normal"][both] - b["normal"][both]), 99) < 1e-2


def test_files_are_written_in_the_background_and_a_failed_write_is_explained(
    toy_character, tmp_path, monkeypatch
):
    import bpy

    from anirender.addon.passes import renderer as passes
    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest
    from anirender.errors import AniRenderError

    scene = bpy.context.scene
    request = PassRequest(tmp_path / "ok", [1, 2, 3], ("udp",), ("npz", "exr"), True, (48, 40))
    renderer, steps = render_udp_passes(scene, toy_character, request)
    with renderer:
        images = {f: renderer.render_and_write(f) for f in renderer.todo}
    steps.close()
    for frame, image in images.items():  # every file complete once the renderer closed
        with np.load(request.path("udp", frame, "npz"), allow_pickle=False) as npz:
            assert np.array_equal(npz["i"], image["udp"])
    assert not list((tmp_path / "ok").rglob(".*partial*"))

    def disk_full(path, pixels):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(passes, "_npz_writer", disk_full)
    request = PassRequest(tmp_path / "full", [1, 2], ("udp",), ("npz",), True, (48, 40))
    renderer, steps = render_udp_passes(scene, toy_character, request)
    with pytest.raises(AniRenderError, match=r"Could not write .*udp_0001\.npz.*No space left"):
        with renderer:
            for frame in renderer.todo:
                renderer.render_and_write(frame)
    steps.close()
    assert not list((tmp_path / "full").rglob("*.npz"))
    assert not [s for s in bpy.data.scenes if "temporary" in s.name]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "cycles"])
def test_no_file_is_written_while_blender_evaluates_or_renders(
    toy_character, tmp_path, monkeypatch, fast
):
    """Blender changes frames and renders with the GIL released, and a Python thread
    running then can crash it (a CI run died in ``np.savez_compressed``): the writer
    waits for every such section, and still writes frame N while N + 1 is drawn."""
    import threading
    import time
    from contextlib import contextmanager

    import bpy

    from anirender.addon.core.frame_writer import BackgroundWriter
    from anirender.addon.passes import renderer as passes
    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest

    busy, writes, main = [], [], threading.get_ident()
    original_busy, original_npz = BackgroundWriter.blender_busy, passes._npz_writer

    @contextmanager
    def timed_busy(self):
        with original_busy(self):
            start = time.perf_counter()
            yield
            busy.append((start, time.perf_counter()))

    def slow_npz(path, pixels):
        assert threading.get_ident() != main
        start = time.perf_counter()
        time.sleep(0.05)  # a slow disk: long enough to overlap anything that runs beside
        original_npz(path, pixels)
        writes.append((start, time.perf_counter()))

    monkeypatch.setattr(BackgroundWriter, "blender_busy", timed_busy)
    monkeypatch.setattr(passes, "_npz_writer", slow_npz)
    request = PassRequest(tmp_path, [1, 2, 3, 4], ("udp",), ("npz",), fast, (48, 40))
    renderer, steps = render_udp_passes(bpy.context.scene, toy_character, request)
    with renderer:
        for frame in renderer.todo:
            renderer.render_and_write(frame)
        flushed_at = time.perf_counter()
    steps.close()
    assert len(writes) == 4 and all(request.path("udp", f, "npz").is_file() for f in range(1, 5))
    assert len(busy) >= 4
    for start, end in writes:
        assert all(end <= a or start >= b for a, b in busy), "a write ran inside Blender"
    assert min(start for start, _ in writes) < busy[-1][0] < flushed_at  # not left to the end


def test_the_garbage_collector_waits_while_blender_evaluates(toy_character, tmp_path):
    """A collection started by a worker thread could free ``bpy`` objects while Blender
    changes frames with the GIL released: the collector is off there, and back after."""
    import gc

    import bpy

    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest

    assert gc.isenabled()
    request = PassRequest(tmp_path, [1, 2], ("udp",), ("npz",), True, (48, 40))
    with PassRenderer(bpy.context.scene, toy_character, request) as renderer:
        with renderer.blender_busy():
            assert not gc.isenabled()
            with renderer.blender_busy():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        with pytest.raises(RuntimeError):
            with renderer.blender_busy():
                raise RuntimeError("a failed render")
        assert gc.isenabled()


def test_fast_images_are_the_rasteriser_pieces_put_together(toy_character, tmp_path):
    """The fast backend projects per vertex, interpolates only at covered pixels and
    scatters into the images; over a frame range that gives, bit for bit, the plain
    composition: every corner projected, whole-image interpolation, occupancy stacked."""
    import bpy

    from anirender.addon.passes import fast
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.models import raster

    passes = ("udp", "uv", "depth", "occupancy")
    request = PassRequest(tmp_path, [1, 2, 3, 4], passes, ("npz",), True, (SIZE, 80))
    with PassRenderer(bpy.context.scene, toy_character, request) as renderer:
        for frame in (1, 2, 3, 4):
            images = renderer.render_frame(frame)
            depsgraph = renderer.set_frame(frame)
            to_clip, to_world = renderer.camera_matrices(depsgraph)
            surface = fast._gather(depsgraph, renderer.visible_meshes(), passes)
            corners = surface["vertices"][surface["tris"]]
            m = to_clip.astype(np.float32)
            fragments = raster.rasterise(fast._affine(corners, m[:, :3], m[:, 3]), 80, SIZE)
            occupancy = fragments.coverage.numpy()[..., None].astype(np.float32)
            view = fast.rigid_inverse(to_world)
            camera = fast._affine(corners, view[:3, :3], view[:3, 3])
            expected = {
                "udp": fragments.interpolate(surface["canonical"]).numpy(),
                "uv": np.pad(fragments.interpolate(surface["uv"]).numpy(), ((0, 0),) * 2 + ((0, 1),)),
                "depth": np.repeat(0.0 - fragments.interpolate(camera).numpy()[..., 2:3], 3, axis=2),
                "occupancy": np.repeat(occupancy, 3, axis=2),
            }  # fmt: skip
            assert occupancy.mean() > 0.05
            for name in passes:
                want = np.concatenate([expected[name], occupancy], axis=2, dtype=np.float32)
                assert images[name].dtype == np.float32
                np.testing.assert_array_equal(images[name], want, err_msg=f"{name} {frame}")
