"""``anirender demo``: the main job, end to end on the MakeHuman character.

1. Build the MakeHuman character with a toon outfit (``addon.characters.looks``).
2. Render a 4-view character sheet of it in its A-pose (front, left, back, right).
3. Render the walk cycle's UDP passes (looped to ``--frames`` frames) with the fast path.
4. Shade them with the shipped CoNR model in this process (``addon.shading.clients``), framed
   the official way (centred square, working size, pasted back).
5. Render the same frames with Cycles as ground truth, and write ``out/demo/``: the
   shaded frames as straight-alpha PNG, an MP4 made with Blender's FFmpeg output, and a
   contact sheet (sheet | UDP | neural frame | Cycles truth). Print PSNR against the
   truth, next to the nearest-UDP baseline's.
"""

from __future__ import annotations

import time
from pathlib import Path

import bpy
import numpy as np
from bpy_extras import anim_utils
from PIL import Image, ImageDraw

from ..models.alpha import over_white, premultiplied, to_straight_uint8
from ..models.framing import frame_sample, frame_sheet_image, frame_udp, paste_back
from ..models.metrics import image_metrics
from ..models.shade_baselines import nearest_udp_baseline
from .characters.cache import load_character
from .characters.finding import meshes_deformed_by
from .characters.looks import dress_character
from .datasets.conr import aim_camera, character_bounds, setup_look_render
from .passes import canonical
from .passes.renderer import PassRenderer
from .passes.request import PassRequest
from .shading.clients import InProcessClient

SHEET_AZIMUTHS = (0.0, 90.0, 180.0, -90.0)
OUTFIT_SEED = 11
WORKING_SIZE = 128  # the shipped model was trained on 128 x 128 framed samples


def run_demo(out: Path, frames: int = 48, size: int = 256, weights=None) -> dict:

    started = time.perf_counter()
    out = Path(out).resolve()
    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)

    armature = load_character("makehuman")
    scene = bpy.context.scene
    dress_character(armature, OUTFIT_SEED, scene)
    canonical.set_canonical_pose(armature, "A_POSE", scene)
    meshes = meshes_deformed_by(armature)
    camera = setup_look_render(scene, size)
    client = InProcessClient(weights, device="auto")  # None: the shipped model
    working = WORKING_SIZE

    # 1. the character sheet, A-pose, four views --------------------------------------
    action = armature.animation_data.action
    armature.animation_data.action = None
    for bone in armature.pose.bones:
        bone.rotation_euler = (0.0, 0.0, 0.0)
        bone.location = (0.0, 0.0, 0.0)
    scene.frame_set(0)
    low, high = character_bounds(meshes, bpy.context.evaluated_depsgraph_get())
    sheet_images, sheet_udps = [], []
    request = PassRequest(
        out_dir=out / "passes",
        frames=[0],
        passes=("udp",),
        formats=("npz",),
        fast=True,
        size=(size, size),
        overwrite=True,
    )
    aim_camera(camera, low, high, 0.0, 5.0, fill=0.95)
    with PassRenderer(scene, armature, request) as renderer:
        for azimuth in SHEET_AZIMUTHS:
            aim_camera(camera, low, high, azimuth, 5.0, fill=0.95)
            sheet_udps.append(renderer.render_frame(0)["udp"])
            sheet_images.append(
                _render_rgba(scene, out / "sheet" / f"view_{len(sheet_images)}.png")
            )

    # 2. the walk: UDP passes and Cycles truth from one camera --------------------------
    armature.animation_data.action = action
    loop_action(action)
    walk = list(range(frames))
    low, high = _walk_bounds(scene, meshes, walk, character_bounds)
    aim_camera(camera, low, high, 25.0, 8.0, fill=0.98)
    request.frames = walk
    udps, truths = [], []
    with PassRenderer(scene, armature, request) as renderer:
        for frame in walk:
            udps.append(renderer.render_frame(frame)["udp"])
    for frame in walk:
        scene.frame_set(frame)
        truths.append(_render_rgba(scene, out / "truth" / f"frame_{frame:04d}.png"))

    # 3. shade in this process, framed the official way --------------------------------
    sheet_id = client.upload_sheet(
        np.stack([frame_sheet_image(im, working) for im in sheet_images])
    )
    framed = [frame_udp(u, working) for u in udps]
    shaded = client.shade(sheet_id, np.stack([f[0] for f in framed]))
    neural = np.stack(
        [paste_back(rgba, crop, size, size) for rgba, (_, crop) in zip(shaded, framed, strict=True)]
    )
    for frame, rgba in zip(walk, neural, strict=True):
        _save_png(to_straight_uint8(rgba), frames_dir / f"frame_{frame:04d}.png")

    # 4. numbers, movie, contact sheet --------------------------------------------------
    truth = np.stack([premultiplied(t) for t in truths])
    baseline = np.stack(
        [nearest_udp_baseline(np.stack(sheet_images), np.stack(sheet_udps), u) for u in udps]
    )
    # the same baseline through the model's framing and working size, for a like-for-like
    # comparison (the full-size one sees four times the pixels the model does)
    small = [frame_sample(im, u, working) for im, u in zip(sheet_images, sheet_udps, strict=True)]
    small_images, small_udps = np.stack([s[0] for s in small]), np.stack([s[1] for s in small])
    baseline_working = np.stack(
        [
            paste_back(nearest_udp_baseline(small_images, small_udps, u), crop, size, size)
            for u, crop in framed
        ]
    )
    scores = image_metrics(neural, truth)
    base_scores = image_metrics(baseline, truth)
    working_scores = image_metrics(baseline_working, truth)
    movie = write_movie(frames_dir, walk, out / "walk.mp4", size)
    contact = write_contact_sheet(
        out / "contact_sheet.png", sheet_images, udps, neural, truth, rows=(0, 12, 24, 36)
    )
    armature.animation_data.action = action
    return {
        "frames_dir": frames_dir,
        "movie": movie,
        "contact_sheet": contact,
        "psnr": scores["psnr"],
        "ssim": scores["ssim"],
        "baseline_psnr": base_scores["psnr"],
        "baseline_ssim": base_scores["ssim"],
        "baseline_working_psnr": working_scores["psnr"],
        "working_size": working,
        "count": len(walk),
        "seconds": time.perf_counter() - started,
    }


def loop_action(action) -> None:
    """Repeat an action forever; location channels continue from where a cycle ended."""

    for slot in action.slots:
        channelbag = anim_utils.action_get_channelbag_for_slot(action, slot)
        if channelbag is None:
            continue
        for curve in channelbag.fcurves:
            if any(m.type == "CYCLES" for m in curve.modifiers):
                continue
            cycles = curve.modifiers.new("CYCLES")
            if curve.data_path.endswith("location"):
                cycles.mode_before = cycles.mode_after = "REPEAT_OFFSET"


def _walk_bounds(scene, meshes, frames, bounds):

    lows, highs = [], []
    for frame in frames[:: max(1, len(frames) // 8)] + [frames[-1]]:
        scene.frame_set(frame)
        low, high = bounds(meshes, bpy.context.evaluated_depsgraph_get())
        lows.append(low)
        highs.append(high)
    return np.min(lows, 0), np.max(highs, 0)


def _render_rgba(scene, path: Path):

    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    return np.asarray(Image.open(path).convert("RGBA"))


def _save_png(pixels, path: Path) -> None:

    Image.fromarray(pixels).save(path)


def write_movie(frames_dir: Path, frames: list[int], path: Path, size: int) -> Path:
    """Encode the PNG frames over white as an H.264 MP4 with Blender's FFmpeg output."""

    scene = bpy.data.scenes.new("AniRender demo movie")
    try:
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene.frame_start, scene.frame_end = 1, len(frames)
        editor = scene.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences
        white = strips.new_effect("Paper", "COLOR", channel=1, frame_start=1, length=len(frames))
        white.color = (1.0, 1.0, 1.0)
        first = frames_dir / f"frame_{frames[0]:04d}.png"
        image = strips.new_image("Neural frames", str(first), channel=2, frame_start=1)
        for frame in frames[1:]:
            image.elements.append(f"frame_{frame:04d}.png")
        image.blend_type = "ALPHA_OVER"
        settings = scene.render.image_settings
        if hasattr(settings, "media_type"):
            settings.media_type = "VIDEO"
        settings.file_format = "FFMPEG"
        scene.render.ffmpeg.format = "MPEG4"
        scene.render.ffmpeg.codec = "H264"
        scene.render.ffmpeg.constant_rate_factor = "HIGH"
        scene.render.filepath = str(path)
        scene.render.use_file_extension = False
        bpy.ops.render.render(animation=True, scene=scene.name)
    finally:
        bpy.data.scenes.remove(scene)
    return path


def write_contact_sheet(path: Path, sheet_images, udps, neural, truth, rows) -> Path:
    """Rows of (character sheet | UDP | neural frame | Cycles truth), all on white."""

    size = udps[0].shape[0]
    half = size // 2
    sheet = np.ones((size, size, 3))
    for i, image in enumerate(sheet_images[:4]):
        small = np.asarray(Image.fromarray(image).resize((half, half), Image.LANCZOS))
        r, c = divmod(i, 2)
        sheet[r * half : (r + 1) * half, c * half : (c + 1) * half] = over_white(
            premultiplied(small)
        )
    header = 24
    columns = ("character sheet", "UDP", "neural (CoNR)", "Cycles truth")
    canvas = np.ones((header + size * len(rows), size * 4, 3))
    for r, frame in enumerate(rows):
        frame = min(frame, len(udps) - 1)
        top = header + r * size
        udp = udps[frame]
        cells = (
            sheet,
            udp[..., :3] * udp[..., 3:4],
            over_white(neural[frame]),
            over_white(truth[frame]),
        )
        for c, cell in enumerate(cells):
            canvas[top : top + size, c * size : (c + 1) * size] = cell
    picture = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for c, title in enumerate(columns):
        draw.text((c * size + 8, 6), title, fill=(0, 0, 0))
    picture.save(path)
    return path
