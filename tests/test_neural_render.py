"""Neural Render Frame / Animation on the toy character, against a real shader service."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_support import reference_frames, running_service, sheet_images

SIZE = 128  # the working size the shader sees
FRAME = (160, 100)  # the scene's output resolution (320 x 200 at 50 %): the frames' size


@pytest.fixture
def toy_with_sheet(shader_addon, toy_character, tmp_path):
    """The toy, active, with a two-view sheet: one image file and one Blender image."""
    import bpy

    paths = []
    for i, image in enumerate(sheet_images(2, 200, seed=21)):
        paths.append(tmp_path / f"sheet_{i}.png")
        Image.fromarray(image).save(paths[-1])
    sheet = toy_character.anirender.sheet
    sheet.add().filepath = str(paths[0])
    sheet.add().image = bpy.data.images.load(str(paths[1]))
    bpy.context.view_layer.objects.active = toy_character
    toy_character.select_set(True)
    render = bpy.context.scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 320, 200, 50
    return toy_character


@pytest.fixture(scope="module")
def tiny_model(tiny_conr_weights):
    from anirender.models.conr.model import CoNR

    return CoNR.from_safetensors(tiny_conr_weights)


def expected_frames(context, armature, frames, tiny_model, tmp_path) -> np.ndarray:
    """What the operators should write: UDP from the pass renderer at the scene's
    resolution, framed the reference way (models.framing, torch resize), tiny CoNR in
    process, pasted back."""
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.addon.shading.sheets import read_sheet
    from anirender.models.alpha import to_straight_uint8
    from anirender.models.framing import frame_udp, paste_back

    request = PassRequest(tmp_path / "udp", list(frames), ("udp",), ("npz",), True, None)
    with PassRenderer(context.scene, armature, request) as renderer:
        udp = np.stack([renderer.render_frame(f)["udp"] for f in frames])
    framed = [frame_udp(u, SIZE) for u in udp]
    rgba = reference_frames(
        tiny_model, read_sheet(armature, SIZE), np.stack([f for f, _ in framed])
    )
    height, width = udp.shape[1:3]
    pasted = [paste_back(r, crop, height, width) for r, (_, crop) in zip(rgba, framed)]
    return to_straight_uint8(np.stack(pasted)), udp


def assert_alpha_on_character(frame: np.ndarray, udp: np.ndarray):
    """Shaded alpha only in the square around the character, and on the character."""
    from anirender.models.framing import square_crop_around

    visible = (udp[..., 3] * 255).astype(np.uint8) > 0
    crop = square_crop_around(visible)
    square = np.zeros_like(visible)
    square[max(crop.top, 0) : crop.top + crop.side, max(crop.left, 0) : crop.left + crop.side] = 1
    alpha = frame[..., 3]
    assert not square.all() and alpha[~square].max() == 0
    assert (alpha[visible] > 0).mean() > 0.95


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def assert_same_frame(got: np.ndarray, want: np.ndarray):
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2  # batches round differently


def stats(url: str) -> dict:
    import httpx

    return httpx.get(url + "/v1/info", timeout=30).json()["stats"]


def test_frame_and_animation_end_to_end(
    shader_service, shader_addon, toy_with_sheet, tiny_model, tmp_path, artifacts_dir
):
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    context = bpy.context
    shader_addon.service_mode = "REMOTE"
    shader_addon.remote_url = shader_service.url
    scene = context.scene
    scene.frame_set(3)
    want, udp = expected_frames(context, toy_with_sheet, range(1, 7), tiny_model, tmp_path)
    before = scene_snapshot(context)

    assert bpy.ops.anirender.neural_render_frame(size=str(SIZE)) == {"FINISHED"}
    image = bpy.data.images["Toy Neural Frame"]
    assert tuple(image.size) == FRAME  # the scene's resolution, not the working square
    got = _image_bytes(image)
    assert_same_frame(got, want[2])  # the current frame, 3
    assert_alpha_on_character(got, udp[2])

    out = tmp_path / "neural"
    result = bpy.ops.anirender.neural_render_animation(
        size=str(SIZE),
        output_dir=str(out),
        use_scene_range=False,
        frame_start=1,
        frame_end=6,
        add_strip=True,
    )
    assert result == {"FINISHED"}
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"Toy_{f:04d}.png" for f in range(1, 7)]
    frames = [read_png(out / name) for name in files]
    assert {Image.open(out / name).size for name in files} == {FRAME}
    for got_frame, want_frame, udp_frame in zip(frames, want, udp):
        assert_same_frame(got_frame, want_frame)
        assert_alpha_on_character(got_frame, udp_frame)
    assert np.abs(frames[0].astype(int) - frames[5].astype(int)).max() > 10  # the toy moves
    sequence = bpy.data.images["Toy Neural"]
    assert sequence.source == "SEQUENCE"
    strip = scene.sequence_editor.strips["Toy Neural"]
    assert (strip.frame_final_start, strip.frame_final_duration) == (1, 6)

    # the scene is as it was, apart from the results asked for
    after = scene_snapshot(context)
    assert set(after["data"]["images"]) - set(before["data"]["images"]) == {
        "Toy Neural Frame",
        "Toy Neural",
    }
    before["data"].pop("images"), after["data"].pop("images")
    assert after == before

    # a second run finds every frame on disk and shades nothing
    shaded = stats(shader_service.url)["frames_shaded"]
    assert bpy.ops.anirender.neural_render_animation(
        size=str(SIZE), output_dir=str(out), use_scene_range=False, frame_start=1, frame_end=6
    ) == {"FINISHED"}
    assert stats(shader_service.url)["frames_shaded"] == shaded

    side_by_side = np.concatenate(
        [np.concatenate([(u * 255).astype(np.uint8) for u in udp[[0, 2, 5]]], 1)[..., :3],
         np.concatenate([f[..., :3] for f in (frames[0], frames[2], frames[5])], 1)]
    )  # fmt: skip
    Image.fromarray(side_by_side).save(artifacts_dir / "neural_render_toy_udp_and_shaded.png")


def test_service_killed_mid_sequence_then_resumed(
    shader_addon, toy_with_sheet, tiny_conr_weights, tmp_path
):
    import bpy

    out = tmp_path / "neural"
    frames = list(range(1, 25))
    run = dict(
        size=str(SIZE),
        output_dir=str(out),
        use_scene_range=False,
        frame_start=frames[0],
        frame_end=frames[-1],
    )
    shader_addon.service_mode = "REMOTE"
    with running_service(tiny_conr_weights) as service:
        shader_addon.remote_url = service.url
        stop = threading.Event()

        def kill_after_three_frames():
            while not stop.is_set():
                if len(list(out.glob("Toy_*.png"))) >= 3:
                    service.kill()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_after_three_frames)
        watcher.start()
        try:
            with pytest.raises(RuntimeError) as refused:
                bpy.ops.anirender.neural_render_animation(**run)
        finally:
            stop.set()
            watcher.join()
    assert "does not answer" in str(refused.value)
    assert "run Neural Render Animation again to shade the rest" in str(refused.value)
    kept = sorted(out.glob("Toy_*.png"))
    assert 3 <= len(kept) < len(frames)
    assert not list(out.glob(".*")), "a half-written frame was left behind"
    kept_bytes = {p.name: p.read_bytes() for p in kept}
    assert bpy.data.images.get("Toy Neural") is None  # nothing half-made in the scene

    with running_service(tiny_conr_weights) as service:
        shader_addon.remote_url = service.url
        assert bpy.ops.anirender.neural_render_animation(**run) == {"FINISHED"}
        assert stats(service.url)["frames_shaded"] == len(frames) - len(kept)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"Toy_{f:04d}.png" for f in frames]  # each frame exactly once
    assert all((out / name).read_bytes() == data for name, data in kept_bytes.items())


def test_service_down_is_said_and_scene_untouched(shader_addon, toy_with_sheet, tmp_path):
    import socket

    import bpy

    from anirender.addon.core.guard import scene_snapshot

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shader_addon.service_mode = "REMOTE"
    shader_addon.remote_url = f"http://127.0.0.1:{port}"
    before = scene_snapshot(bpy.context)
    out = tmp_path / "neural"
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} does not answer"):
        bpy.ops.anirender.neural_render_animation(
            size=str(SIZE), output_dir=str(out), use_scene_range=False, frame_start=1, frame_end=3
        )
    assert scene_snapshot(bpy.context) == before
    assert not list(out.glob("*.png"))


def test_no_sheet_or_opaque_sheet_is_refused(shader_addon, toy_character, tmp_path):
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    bpy.context.view_layer.objects.active = toy_character
    before = scene_snapshot(bpy.context)
    with pytest.raises(RuntimeError, match='"Toy" has no character sheet'):
        bpy.ops.anirender.neural_render_frame(size=str(SIZE))
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.full((64, 64, 4), 255, np.uint8)).save(opaque)
    toy_character.anirender.sheet.add().filepath = str(opaque)
    before = scene_snapshot(bpy.context)
    with pytest.raises(RuntimeError, match='"opaque.png" has no transparent background'):
        bpy.ops.anirender.neural_render_frame(size=str(SIZE))
    assert scene_snapshot(bpy.context) == before


def test_local_service_and_in_process(
    shader_addon, toy_with_sheet, tiny_conr_weights, tiny_model, tmp_path
):
    """The two other ways: a service the add-on starts itself, and no service at all."""
    import sys

    import bpy

    from anirender.addon.shading import connection
    from anirender.addon.shading.local_service import local_service

    want, _ = expected_frames(bpy.context, toy_with_sheet, [1], tiny_model, tmp_path)
    bpy.context.scene.frame_set(1)
    shader_addon.weights = str(tiny_conr_weights)
    shader_addon.service_mode = "LOCAL"
    shader_addon.python_path = sys.executable
    try:
        assert bpy.ops.anirender.test_connection() == {"FINISHED"}
        assert connection.status["ok"] is True and "cpu" in connection.status["text"]
        service = local_service(python_path=sys.executable, weights=str(tiny_conr_weights))
        process = service.process
        assert service.running and service.bound_port
        assert bpy.ops.anirender.neural_render_frame(size=str(SIZE)) == {"FINISHED"}
        got = _image_bytes(bpy.data.images["Toy Neural Frame"])
        assert_same_frame(got, want[0])
    finally:
        assert bpy.ops.anirender.stop_local_service() == {"FINISHED"}
    assert process.poll() is not None  # stopped

    shader_addon.service_mode = "IN_PROCESS"
    bpy.data.images.remove(bpy.data.images["Toy Neural Frame"])
    assert bpy.ops.anirender.neural_render_frame(size=str(SIZE)) == {"FINISHED"}
    assert_same_frame(_image_bytes(bpy.data.images["Toy Neural Frame"]), want[0])


def _image_bytes(image) -> np.ndarray:
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return np.rint(pixels.reshape(height, width, 4)[::-1] * 255).astype(np.uint8)


def test_character_sheet_operators(shader_addon, toy_character, tmp_path):
    import bpy

    from anirender.addon.shading.sheets import read_sheet

    bpy.context.view_layer.objects.active = toy_character
    for i, image in enumerate(sheet_images(2, 160, seed=81)):
        Image.fromarray(image).save(tmp_path / f"view_{i}.png")
    files = [{"name": "view_0.png"}, {"name": "view_1.png"}, {"name": "notes.txt"}]
    assert bpy.ops.anirender.sheet_add_files(directory=str(tmp_path), files=files) == {"FINISHED"}
    image = bpy.data.images.load(str(tmp_path / "view_0.png"))
    assert bpy.ops.anirender.sheet_add_image(image=image.name) == {"FINISHED"}
    sheet = toy_character.anirender.sheet
    assert [Path(e.filepath).name for e in sheet[:2]] == ["view_0.png", "view_1.png"]
    assert sheet[2].image == image
    views = read_sheet(toy_character, SIZE)
    assert views.shape == (3, SIZE, SIZE, 4) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], views[2])  # a file and its Blender image agree
    assert bpy.ops.anirender.sheet_remove(index=1) == {"FINISHED"}
    assert len(sheet) == 2 and sheet[1].image == image
    with pytest.raises(RuntimeError, match="not found"):
        bpy.ops.anirender.sheet_add_files(directory=str(tmp_path), files=[{"name": "gone.png"}])
