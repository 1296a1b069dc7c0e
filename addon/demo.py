"""``anirender demo``: the main job, end to end on the MakeHuman character.

1. Build the MakeHuman character with a toon outfit (``addon.characters.looks``) and render
   a 4-view character sheet of it in its A-pose (front, left, back, right), each view with
   its exact UDP: the sheet knows where each of its pixels sits on the body.
2. Render the walk cycle's UDP passes (looped to ``--frames`` frames) with the fast path,
   and the same frames with Cycles as ground truth.
3. Shade the walk three ways at the full frame size and score each against the truth
   (``out/demo/scores.json``: L1, PSNR, SSIM on white and flicker): the guided shader
   (sheet UDPs known), the image-only CoNR road (at its working size, framed the official
   way), and the non-neural copy baseline (each pixel takes the sheet pixel of nearest UDP).
4. A second character: another outfit whose sheet is a 2D paint-over of its renders (flat
   cels, ink lines; ``models.paint_over``), shaded by the guided shader in the same walk:
   a look Cycles of the same rig does not give.
5. Write the guided frames as straight-alpha PNG, an MP4 made with Blender's FFmpeg
   output, and a contact sheet with labelled columns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from bpy_extras import anim_utils
from PIL import Image, ImageDraw

from ..models.alpha import over_white, premultiplied, to_straight_uint8
from ..models.framing import frame_sheet_image, frame_udp, paste_back, shade_in_frame
from ..models.metrics import flicker, image_metrics
from ..models.paint_over import paint_over
from ..models.shade_baselines import nearest_udp_baseline
from .characters.cache import load_character
from .characters.finding import meshes_deformed_by
from .characters.looks import dress_character
from .core.movie import encode_movie
from .datasets.conr import aim_camera, character_bounds, setup_look_render
from .passes import canonical
from .passes.renderer import PassRenderer
from .passes.request import PassRequest
from .shading.clients import InProcessClient

SHEET_AZIMUTHS = (0.0, 90.0, 180.0, -90.0)
OUTFIT_SEED = 11
PAINTED_OUTFIT_SEED = 3  # the second character, whose sheet is painted over
WORKING_SIZE = 128  # the shipped CoNR model was trained on 128 x 128 framed samples
CONTACT_ROWS = (0, 12, 24, 36)


@dataclass
class CharacterTake:
    """One character's sheet (images + exact UDPs), walk UDPs and Cycles frames."""

    sheet_images: np.ndarray  # uint8 straight RGBA (V, S, S, 4)
    sheet_udps: np.ndarray  # float32 (V, S, S, 4)
    udps: np.ndarray  # float32 (F, S, S, 4)
    truths: dict = field(default_factory=dict)  # frame -> premultiplied float RGBA


def run_demo(out: Path, frames: int = 48, size: int = 256, weights=None) -> dict:
    """Run the main job into ``out``; return paths, scores and timings (``scores.json``)."""

    started = time.perf_counter()
    out = Path(out).resolve()
    walk = list(range(frames))
    rows = sorted({min(r, frames - 1) for r in CONTACT_ROWS})

    own = _take_character(OUTFIT_SEED, out / "own", walk, size, truth_frames=walk)
    truth = np.stack([own.truths[f] for f in walk])
    shaded = {
        "guided": _shade_guided(own.sheet_images, own.sheet_udps, own.udps),
        "conr": _shade_conr(own.sheet_images, own.udps, weights),
        "copy": np.stack(
            [nearest_udp_baseline(own.sheet_images, own.sheet_udps, u) for u in own.udps]
        ),
    }
    scores = {name: _scores(frames_, truth) for name, frames_ in shaded.items()}
    scores["frames"], scores["size"], scores["conr_working_size"] = frames, size, WORKING_SIZE
    (out / "scores.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")

    painted_take = _take_character(PAINTED_OUTFIT_SEED, out / "painted", walk, size, rows)
    painted_sheet = np.stack(
        [paint_over(image, seed=i) for i, image in enumerate(painted_take.sheet_images)]
    )
    for i, image in enumerate(painted_sheet):
        _save_png(image, out / "painted" / "sheet" / f"view_{i}_painted.png")
    painted = _shade_guided(painted_sheet, painted_take.sheet_udps, painted_take.udps)

    frames_dir = _write_frames(out / "frames", walk, shaded["guided"])
    painted_dir = _write_frames(out / "painted" / "frames", walk, painted)
    movie = write_movie(frames_dir, walk, out / "walk.mp4", size)
    contact = write_contact_sheet(
        out / "contact_sheet.png",
        [
            ("own look", own.sheet_images, own.udps, shaded, own.truths),
            (
                "painted sheet",
                painted_sheet,
                painted_take.udps,
                {"guided": painted},
                painted_take.truths,
            ),
        ],
        rows,
    )
    return {
        "frames_dir": frames_dir,
        "painted_dir": painted_dir,
        "movie": movie,
        "contact_sheet": contact,
        "scores_file": out / "scores.json",
        "scores": scores,
        "count": len(walk),
        "seconds": time.perf_counter() - started,
    }


def _scores(shaded: np.ndarray, truth: np.ndarray) -> dict:
    scores = image_metrics(shaded, truth)
    scores["flicker"] = flicker(shaded, truth) if len(truth) > 1 else 0.0
    return scores


def _take_character(seed, folder: Path, walk, size, truth_frames) -> CharacterTake:
    """Open the MakeHuman character, dress it, render its sheet, walk UDPs and truths."""

    armature = load_character("makehuman")  # a fresh file: one character at a time
    scene = bpy.context.scene
    dress_character(armature, seed, scene)
    canonical.set_canonical_pose(armature, "A_POSE", scene)
    meshes = meshes_deformed_by(armature)
    camera = setup_look_render(scene, size)

    # the character sheet: rest pose (A-pose), four views, each with its exact UDP
    action = armature.animation_data.action
    armature.animation_data.action = None
    for bone in armature.pose.bones:
        bone.rotation_euler = (0.0, 0.0, 0.0)
        bone.location = (0.0, 0.0, 0.0)
    scene.frame_set(0)
    low, high = character_bounds(meshes, bpy.context.evaluated_depsgraph_get())
    request = PassRequest(
        out_dir=folder / "passes",
        frames=[0],
        passes=("udp",),
        formats=("npz",),
        fast=True,
        size=(size, size),
        overwrite=True,
    )
    sheet_images, sheet_udps = [], []
    aim_camera(camera, low, high, 0.0, 5.0, fill=0.95)
    with PassRenderer(scene, armature, request) as renderer:
        for azimuth in SHEET_AZIMUTHS:
            aim_camera(camera, low, high, azimuth, 5.0, fill=0.95)
            sheet_udps.append(renderer.render_frame(0)["udp"])
            path = folder / "sheet" / f"view_{len(sheet_images)}.png"
            sheet_images.append(_render_rgba(scene, path))

    # the walk, from one camera: UDP passes (fast path) and Cycles frames
    armature.animation_data.action = action
    loop_action(action)
    low, high = _walk_bounds(scene, meshes, walk, character_bounds)
    aim_camera(camera, low, high, 25.0, 8.0, fill=0.98)
    request.frames = walk
    with PassRenderer(scene, armature, request) as renderer:
        udps = [renderer.render_frame(frame)["udp"] for frame in walk]
    truths = {}
    for frame in truth_frames:
        scene.frame_set(frame)
        rgba = _render_rgba(scene, folder / "truth" / f"frame_{frame:04d}.png")
        truths[frame] = premultiplied(rgba)
    return CharacterTake(np.stack(sheet_images), np.stack(sheet_udps), np.stack(udps), truths)


def _shade_guided(sheet_images, sheet_udps, udps, weights=None) -> np.ndarray:
    """The main road: the guided shader, the sheet's own UDPs, at the full frame size,
    framed the official way (centred square around the character, pasted back)."""

    # torch: the guided shader loads when the demo shades, not when Blender starts
    from ..models.guided import frame_sheet_view, load_guided

    size = udps.shape[1]
    shader = load_guided(weights)
    views = [
        frame_sheet_view(image, udp, size, name=f"Sheet view {i}")
        for i, (image, udp) in enumerate(zip(sheet_images, sheet_udps, strict=True))
    ]
    sheet = shader.encode_sheet(np.stack([v[0] for v in views]), np.stack([v[1] for v in views]))
    return np.stack([shade_in_frame(lambda u: shader.render(sheet, u), udp, size) for udp in udps])


def _shade_conr(sheet_images, udps, weights) -> np.ndarray:
    """The image-only road: shipped CoNR in this process, framed the official way."""

    size = udps.shape[1]
    client = InProcessClient(weights, device="auto")  # None: the shipped model
    sheet_id = client.upload_sheet(
        np.stack([frame_sheet_image(im, WORKING_SIZE) for im in sheet_images])
    )
    framed = [frame_udp(u, WORKING_SIZE) for u in udps]
    shaded = client.shade(sheet_id, np.stack([f[0] for f in framed]))
    return np.stack(
        [paste_back(rgba, crop, size, size) for rgba, (_, crop) in zip(shaded, framed, strict=True)]
    )


def _write_frames(folder: Path, walk, frames) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for frame, rgba in zip(walk, frames, strict=True):
        _save_png(to_straight_uint8(rgba), folder / f"frame_{frame:04d}.png")
    return folder


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

    paths = [frames_dir / f"frame_{frame:04d}.png" for frame in frames]
    return encode_movie(paths, path, (size, size), background=(1.0, 1.0, 1.0))


COLUMNS = (
    ("sheet", "character sheet"),
    ("udp", "UDP (target pose)"),
    ("guided", "guided shader"),
    ("conr", "CoNR, image only"),
    ("copy", "copy (nearest UDP)"),
    ("truth", "Cycles"),
)


def write_contact_sheet(path: Path, characters, rows) -> Path:
    """One block of rows per character, one labelled column per shader, all on white.

    ``characters``: (label, sheet images, UDPs, {shader: frames}, {frame: truth}); a
    shader a character was not shaded with, or a frame without a Cycles render, is left
    grey so no cell pretends to be what it is not.
    """

    size = characters[0][2].shape[1]
    half = size // 2
    header, band = 24, 18
    height = header + len(characters) * (band + size * len(rows))
    canvas = np.ones((height, size * len(COLUMNS), 3))
    labels = []
    top = header
    for label, sheet_images, udps, shaded, truths in characters:
        labels.append((top + 3, label))
        top += band
        sheet = np.ones((size, size, 3))
        for i, image in enumerate(sheet_images[:4]):
            small = np.asarray(Image.fromarray(image).resize((half, half), Image.LANCZOS))
            r, c = divmod(i, 2)
            sheet[r * half : (r + 1) * half, c * half : (c + 1) * half] = over_white(
                premultiplied(small)
            )
        for frame in rows:
            cells = {
                "sheet": sheet,
                "udp": udps[frame][..., :3] * udps[frame][..., 3:4],
                "truth": over_white(truths[frame]) if frame in truths else None,
            }
            for name, frames in shaded.items():
                cells[name] = over_white(frames[frame])
            for c, (key, _) in enumerate(COLUMNS):
                cell = cells.get(key)
                canvas[top : top + size, c * size : (c + 1) * size] = 0.85 if cell is None else cell
            top += size
    picture = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for c, (_, title) in enumerate(COLUMNS):
        draw.text((c * size + 6, 6), title, fill=(0, 0, 0))
    for y, label in labels:
        draw.text((6, y), label, fill=(160, 0, 40))
    picture.save(path)
    return path
