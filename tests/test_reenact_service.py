"""Head reenactment through the shader service: portraits, poses, the live preview and
Render Pose Animation on the toy character, against a real ``anirender serve``."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from service_support import running_service

from anirender.addon.shading.clients import HttpClient, InProcessClient
from anirender.models import pose_vector
from anirender.models import reenact as reenact_model
from anirender.models.alpha import to_straight_uint8
from anirender.service import protocol

torch.set_num_threads(1)

TURNED = [0.0] * 12 + [1.0, 0, 0, 0, 0] + [0.0, -10.0, 25.0]  # mouth "a", head turned


def portrait_image(height=72, width=56, seed=3) -> np.ndarray:
    """A cut-out face: a skin ellipse with two eyes on a transparent background."""
    yy, xx = np.mgrid[:height, :width]
    image = np.zeros((height, width, 4), np.uint8)
    face = ((xx - width / 2) / (width * 0.35)) ** 2 + ((yy - height / 2) / (height * 0.4)) ** 2 < 1
    image[face] = (235, 200, 180, 255)
    for cx in (0.38, 0.62):
        eye = (xx - width * cx) ** 2 + (yy - height * 0.45) ** 2 < (width * 0.06) ** 2
        image[eye] = (40, 60, 160, 255)
    image[int(height * 0.7) : int(height * 0.72), int(width * 0.4) : int(width * 0.6)] = (
        150, 40, 40, 255,
    )  # fmt: skip
    return image


def reenact_stats(service) -> dict:
    return httpx.get(service.url + "/v1/info", timeout=30).json()["reenact"]["stats"]


def test_service_reenacts_as_in_process(shader_service):
    portrait = portrait_image()
    poses = np.array([[0.0] * 20, TURNED, [0.5] * 17 + [5.0, 0.0, -15.0]], np.float32)
    http = HttpClient(shader_service.url)
    portrait_id = http.upload_portrait(portrait)
    assert http.upload_portrait(portrait[..., :3]) != portrait_id  # opaque: other pixels
    served = http.reenact(portrait_id, poses)
    served_mirror = http.reenact(portrait_id, poses, mirror_average=True)
    local = InProcessClient()
    try:
        local_id = local.upload_portrait(portrait)
        expected = local.reenact(local_id, poses)
        expected_mirror = local.reenact(local_id, poses, mirror_average=True)
    finally:
        local.close()
    assert np.abs(served_mirror - expected_mirror).max() <= 1e-5
    assert np.abs(served_mirror - served).max() > 1e-3  # the mirror pass is drawn
    # the mirror average of the mirrored portrait in the mirrored poses is its mirror image
    flipped_id = http.upload_portrait(portrait[:, ::-1].copy())
    mirrored_poses = pose_vector.mirrored(poses)
    flipped = http.reenact(flipped_id, mirrored_poses, mirror_average=True)
    assert np.abs(flipped[:, :, ::-1] - served_mirror).max() <= 1e-4
    assert served.shape == (3, 72, 56, 4) and served.dtype == np.float32
    assert np.abs(served - expected).max() <= 1e-5
    assert np.abs(served[0] - served[1]).max() > 0.1  # the pose matters
    # the model's own single-pose path (straight uint8), to about the last 8-bit step
    single = reenact_model.Reenactor().reenact(portrait, TURNED).astype(np.float32) / 255
    premultiplied = np.concatenate([single[..., :3] * single[..., 3:], single[..., 3:]], -1)
    assert np.abs(served[1] - premultiplied).max() <= 1.5 / 255
    single = reenact_model.Reenactor(mirror_average=True).reenact(portrait, TURNED) / 255
    premultiplied = np.concatenate([single[..., :3] * single[..., 3:], single[..., 3:]], -1)
    assert np.abs(served_mirror[1] - premultiplied).max() <= 1.5 / 255

    # the same pixels are cached under the same id; a forgotten portrait is uploaded again
    again = httpx.post(
        shader_service.url + "/v1/portraits",
        content=protocol.pack(portrait=portrait),
        headers={"Content-Type": protocol.NPZ_TYPE},
        timeout=60,
    ).json()
    assert again["portrait_id"] == portrait_id and again["cached"]
    assert httpx.delete(f"{shader_service.url}/v1/portraits/{portrait_id}").status_code == 200
    assert np.abs(http.reenact(portrait_id, poses[1:2]) - served[1:2]).max() <= 1e-5


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"portrait": np.zeros((32, 32, 4), np.float32)}, "uint8"),
        ({"portrait": np.zeros((32, 32, 3), np.uint8)}, "RGBA"),
        ({"portrait": np.zeros((8, 32, 4), np.uint8)}, "16 to 1024"),
        ({"poses": np.zeros((2, 19), np.float32)}, "20"),
        ({"poses": np.full((1, 20), np.nan, np.float32)}, "NaN"),
        ({"poses": np.array([[0.0] * 17 + [0, 0, 120]], np.float32)}, "90"),
        ({"poses": np.array([[1.5] + [0.0] * 19], np.float32)}, r"\[0, 1\]"),
        ({"poses": np.zeros((protocol.MAX_POSES + 1, 20), np.float32)}, "N from 1"),
        ({"udp": np.zeros((1, 20), np.float32)}, "lacks poses"),
        ({"poses": np.zeros((1, 20), np.float32), "mirror": np.float32(0.5)}, "'mirror' is one"),
    ],
)
def test_bad_portraits_and_poses_get_a_clear_400(shader_service, arrays, message):
    http = HttpClient(shader_service.url)
    portrait_id = http.upload_portrait(portrait_image(32, 32))
    path = "/v1/portraits" if "portrait" in arrays else f"/v1/portraits/{portrait_id}/reenact"
    answer = httpx.post(
        shader_service.url + path,
        content=protocol.pack(**arrays),
        headers={"Content-Type": protocol.NPZ_TYPE},
        timeout=60,
    )
    assert answer.status_code == 400
    assert re.search(message, answer.json()["error"])


def test_unknown_portrait_is_404_and_the_token_guards_portraits(tiny_conr_weights):
    weights = str(reenact_model.SHIPPED_WEIGHTS)
    with running_service(tiny_conr_weights, "--token", "s3cret", "--reenact-weights", weights) as s:
        body = protocol.pack(portrait=portrait_image(32, 32))
        assert httpx.post(s.url + "/v1/portraits", content=body).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        npz = {**good, "Content-Type": protocol.NPZ_TYPE}
        answer = httpx.post(s.url + "/v1/portraits/nope/reenact", headers=npz, content=b"x")
        assert answer.status_code == 404 and "Upload the portrait again" in answer.json()["error"]
        info = httpx.get(s.url + "/v1/info", headers=good).json()
        assert info["models"]["reenact"]["weights"] == reenact_model.SHIPPED_WEIGHTS.name
        assert HttpClient(s.url, "s3cret").upload_portrait(portrait_image(32, 32))
    bad = subprocess.run(
        [sys.executable, "-m", "anirender.cli", "serve", "--port", "0", "--device", "cpu"]
        + ["--weights", str(tiny_conr_weights), "--reenact-weights", "/no/such.safetensors"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "No reenactment weights at /no/such" in bad.stderr


# ------------------------------------------------------------------------ in Blender


@pytest.fixture
def remote_addon(blender, shader_service):
    """The add-on enabled through Blender, its preferences pointing at the test service."""
    import addon_utils

    addon_utils.enable("anirender", default_set=True)
    try:
        prefs = blender.context.preferences.addons["anirender"].preferences
        prefs.service_mode = "REMOTE"
        prefs.remote_url = shader_service.url
        yield prefs
    finally:
        addon_utils.disable("anirender", default_set=True)


@pytest.fixture
def posed_toy(remote_addon, toy_character):
    """The toy, active, with a portrait and a keyframed two-pose animation over 1-4:
    frames 1 and 2 straight, frames 3 and 4 turned (constant keys)."""
    import bpy

    from anirender.addon.pose import sliders as morphs

    image = bpy.data.images.new("Portrait", 56, 72, alpha=True)
    image.pixels.foreach_set((portrait_image()[::-1].astype(np.float32) / 255).ravel())
    image.pack()
    toy_character.anirender.morphs.portrait = image
    for frame, pose in ((1, [0.0] * 20), (3, TURNED)):
        morphs.apply_pose(toy_character, pose)
        morphs.keyframe_pose(toy_character, frame)
    for fcurve in _fcurves(toy_character):
        for key in fcurve.keyframe_points:
            key.interpolation = "CONSTANT"
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 4
    scene.frame_set(2)
    bpy.context.view_layer.objects.active = toy_character
    return toy_character


def _fcurves(obj):
    from bpy_extras import anim_utils

    anim = obj.animation_data
    bag = anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot)
    return list(bag.fcurves)


def test_live_preview_goes_through_the_preferred_client(posed_toy, shader_service):
    import bpy

    from anirender.addon.pose import sliders as morphs
    from anirender.addon.pose.preview import RESULT_IMAGE, PreviewSession

    morphs.apply_pose(posed_toy, TURNED)
    served_before = reenact_stats(shader_service)["poses_reenacted"]
    session = PreviewSession(posed_toy.name, debounce=0.01)  # the preferences' client
    try:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline and not (session.shown and session.idle):
            assert session.tick() is not None, session.errors
            time.sleep(0.02)
    finally:
        session.stop()
    assert session.shown and not session.errors
    assert reenact_stats(shader_service)["poses_reenacted"] > served_before
    http = HttpClient(shader_service.url)
    expected = to_straight_uint8(http.reenact(http.upload_portrait(portrait_image()), [TURNED])[0])
    result = bpy.data.images[RESULT_IMAGE]
    shown = np.empty(56 * 72 * 4, np.float32)
    result.pixels.foreach_get(shown)
    shown = np.rint(shown.reshape(72, 56, 4)[::-1] * 255)
    assert np.abs(shown - expected).max() <= 1


def test_render_pose_animation_through_the_service(posed_toy, shader_service, tmp_path):
    import bpy

    from anirender.addon.core.guard import scene_snapshot

    out = tmp_path / "pose frames"
    before = scene_snapshot(bpy.context)
    served = reenact_stats(shader_service)["poses_reenacted"]
    assert bpy.ops.anirender.render_pose_animation(output_dir=str(out), batch=3) == {"FINISHED"}
    after = scene_snapshot(bpy.context)

    names = [f"{posed_toy.name}_{f:04d}.png" for f in range(1, 5)]
    assert sorted(p.name for p in out.iterdir()) == names  # each frame once, nothing partial
    assert reenact_stats(shader_service)["poses_reenacted"] == served + 4
    frames = [np.asarray(Image.open(out / name).convert("RGBA")).astype(int) for name in names]
    assert frames[0].shape == (72, 56, 4)
    # same pose, same picture (batches of 3 then 1: the last float digits may differ)
    assert np.abs(frames[0] - frames[1]).max() <= 1 and np.abs(frames[2] - frames[3]).max() <= 1
    assert np.abs(frames[0] - frames[2]).mean() > 0.5  # the turned frames differ
    http = HttpClient(shader_service.url)
    turned = to_straight_uint8(http.reenact(http.upload_portrait(portrait_image()), [TURNED])[0])
    assert np.abs(frames[2] - turned).max() <= 1  # straight alpha, as reenacted

    sequence = f"{posed_toy.name} Pose Animation"
    assert bpy.data.images[sequence].source == "SEQUENCE"
    assert after["data"].pop("images") == sorted(before["data"].pop("images") + [sequence])
    assert after == before

    # a re-run renders only what is missing
    stamps = {name: (out / name).stat().st_mtime_ns for name in names}
    (out / names[2]).unlink()
    served = reenact_stats(shader_service)["poses_reenacted"]
    assert bpy.ops.anirender.render_pose_animation(output_dir=str(out)) == {"FINISHED"}
    assert reenact_stats(shader_service)["poses_reenacted"] == served + 1
    assert sorted(p.name for p in out.iterdir()) == names
    assert all((out / n).stat().st_mtime_ns == stamps[n] for n in names if n != names[2])
    again = np.asarray(Image.open(out / names[2]).convert("RGBA")).astype(int)
    assert np.abs(again - frames[2]).max() <= 1
    assert sorted(i.name for i in bpy.data.images).count(sequence) == 1


def test_cancelled_pose_animation_keeps_whole_frames_only(posed_toy, shader_service, tmp_path):
    """The operator's job driven step by step as the modal timer does; Esc after the first
    written frame leaves whole frames, no image and the scene as it was; a re-run ends it."""
    import bpy

    from anirender.addon.core.guard import SceneGuard, scene_snapshot
    from anirender.ops.pose import pose_animation_job

    out = tmp_path / "frames"
    before = scene_snapshot(bpy.context)
    with SceneGuard(bpy.context) as guard:
        job = pose_animation_job(bpy.context, guard, posed_toy, str(out), batch=1)
        assert job.total == 4
        deadline = time.perf_counter() + 60
        while not list(out.glob("*.png")) and time.perf_counter() < deadline:
            assert job.step()
            time.sleep(0.005)
        job.cancel()
        assert job.cancelled and job.step() is False
    assert scene_snapshot(bpy.context) == before  # no image sequence, frame restored
    first = sorted(p.name for p in out.iterdir())
    # at most two batches of one are in flight: Esc came before the last frames were sent
    assert 1 <= len(first) <= 2 and all(not n.startswith(".") for n in first)
    assert bpy.ops.anirender.render_pose_animation(output_dir=str(out)) == {"FINISHED"}
    assert len(list(out.iterdir())) == 4


def test_mirror_average_reaches_reenact_now_and_the_pose_animation(
    posed_toy, shader_service, tmp_path
):
    import bpy

    from anirender.addon.pose import preview
    from anirender.addon.pose import sliders as morphs

    http = HttpClient(shader_service.url)
    portrait_id = http.upload_portrait(portrait_image())
    one_pass = to_straight_uint8(http.reenact(portrait_id, [TURNED])[0]).astype(int)
    mirrored = to_straight_uint8(http.reenact(portrait_id, [TURNED], True)[0]).astype(int)
    settings = posed_toy.anirender.morphs
    settings.mirror_average = True
    try:
        morphs.apply_pose(posed_toy, TURNED)
        assert bpy.ops.anirender.reenact_preview() == {"FINISHED"}
        shown = preview.image_to_rgba(bpy.data.images[preview.RESULT_IMAGE]).astype(int)
        assert np.abs(shown - mirrored).max() <= 1
        assert np.abs(shown - one_pass).max() > 2

        out = tmp_path / "mirrored frames"
        assert bpy.ops.anirender.render_pose_animation(output_dir=str(out)) == {"FINISHED"}
        frame = np.asarray(Image.open(out / f"{posed_toy.name}_0003.png").convert("RGBA"))
        assert np.abs(frame.astype(int) - mirrored).max() <= 1
    finally:
        settings.mirror_average = False
