"""ANR training frames: what the character looks like, paired with its coarse mesh's passes.

A capture folder (one identity) holds, per frame, ``target/target_<frame>.png`` (straight
RGBA: the look to learn), ``uv/uv_<frame>.npz`` and ``normal/normal_<frame>.npz`` (the
coarse mesh's passes from ``addon.passes``' fast renderer, the layout of its npz files),
and ``anr_data.json`` listing frames, size, identity and coarse meshes.

Two ways to get targets:
- ``capture_training_frames``: Cycles renders the character with its own materials (all
  its meshes: hair, skirt, ...) over the frames, film transparent.
- ``pair_image_sequence``: an artist's image sequence (drawn frames matched to the
  animation) paired by frame number; counts and sizes are checked first.

In both, the passes come from the *coarse* meshes only (by default the character's
largest mesh, the body), so the renderer learns to paint what the coarse mesh lacks.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ...errors import AniRenderError
from ..characters.finding import find_character, require_camera
from ..core.guard import SceneGuard
from ..passes.files import read_blender_image
from ..passes.renderer import PassRenderer
from ..passes.request import PassRequest, check_output_folder

DATA_FILE = "anr_data.json"
_SIZES = (("128", "128", ""), ("256", "256", ""), ("512", "512", ""))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".webp", ".bmp")


@dataclass
class CaptureRequest:
    out_dir: Path
    frames: list
    size: int = 256
    coarse: list = field(default_factory=list)  # mesh names; empty: the largest mesh
    identity: str = ""
    samples: int = 6


def coarse_meshes(armature, names=()) -> list:
    """The meshes whose passes ANR samples: the named ones, else the largest one."""
    meshes = find_character(armature).meshes
    if not names:
        return [max(meshes, key=lambda m: len(m.data.vertices))]
    by_name = {m.name: m for m in meshes}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise AniRenderError(
            f'{", ".join(missing)} is not a mesh of "{armature.name}"; choose from '
            f"{', '.join(sorted(by_name))}."
        )
    return [by_name[n] for n in names]


def _check_size(size: int) -> int:
    size = int(size)
    if size < 32 or size % 32:
        raise AniRenderError(f"The capture size {size} must be a multiple of 32 (e.g. 256).")
    return size


class _CoarsePasses:
    """UV and normal passes of the coarse meshes only (the others hidden while drawing)."""

    def __init__(self, scene, armature, request: CaptureRequest):
        self.coarse = coarse_meshes(armature, request.coarse)
        if not any(layer for m in self.coarse for layer in m.data.uv_layers):
            names = ", ".join(m.name for m in self.coarse)
            raise AniRenderError(f"The coarse mesh ({names}) has no UV map; unwrap it first.")
        self.renderer = PassRenderer(
            scene,
            armature,
            PassRequest(
                out_dir=request.out_dir, frames=list(request.frames), passes=("uv", "normal"),
                formats=("npz",), fast=True, size=(request.size, request.size), overwrite=True,
            ),
        )  # fmt: skip
        self.others = [m for m in self.renderer.meshes if m not in self.coarse]

    def __enter__(self):
        self.renderer.__enter__()
        return self

    def __exit__(self, *exc):
        return self.renderer.__exit__(*exc)

    def write(self, frame: int) -> dict:
        hidden = [(m, m.hide_render) for m in self.others]
        try:
            for mesh, _ in hidden:
                mesh.hide_render = True
            return self.renderer.render_and_write(frame)
        finally:
            for mesh, was in hidden:
                mesh.hide_render = was


def _write_record(request: CaptureRequest, armature, coarse, source: str) -> None:
    record = {
        "identity": request.identity or armature.name,
        "size": request.size,
        "frames": [int(f) for f in request.frames],
        "coarse_meshes": [m.name for m in coarse],
        "source": source,
        "character": armature.name,
    }
    (Path(request.out_dir) / DATA_FILE).write_text(json.dumps(record, indent=1))


def capture_training_frames(scene, armature, request: CaptureRequest):
    """(total, steps): ``steps`` renders one training pair per frame, yielding messages.

    Everything is checked before anything changes. The scene's render settings and frame
    are restored when the steps end or are closed early (Esc).
    """
    require_camera(scene)
    request.size = _check_size(request.size)
    request.out_dir = check_output_folder(request.out_dir, "ANR training frames")
    if not request.frames:
        raise AniRenderError("No frames to capture; give a frame range.")
    passes = _CoarsePasses(scene, armature, request)
    target_dir = Path(request.out_dir) / "target"

    def steps():
        with SceneGuard(bpy.context), passes:
            _look_settings(scene, request)
            target_dir.mkdir(parents=True, exist_ok=True)
            for frame in request.frames:
                passes.write(frame)
                with passes.renderer.blender_busy():  # the pass files wait meanwhile
                    scene.frame_set(frame)
                    scene.render.filepath = str(target_dir / f"target_{frame:04d}.png")
                    bpy.ops.render.render(write_still=True, scene=scene.name)
                yield f"frame {frame}"
            _write_record(request, passes.renderer.armature, passes.coarse, "cycles")

    return len(request.frames), steps()


def _look_settings(scene, request: CaptureRequest) -> None:
    """Cycles on the CPU, film transparent, straight 8-bit RGBA PNG at the capture size."""
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = max(1, int(request.samples))
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    render.film_transparent = True
    render.resolution_x = render.resolution_y = request.size
    render.resolution_percentage = 100
    render.use_compositing = False
    render.use_sequencer = False
    settings = render.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"


# ------------------------------------------------------------------- drawn frames


def frame_images(folder) -> dict:
    """{frame number: path} of the images in ``folder`` (number: the last digits of the
    file name, e.g. ``walk_0012.png`` -> 12)."""
    folder = Path(bpy.path.abspath(str(folder))) if str(folder).startswith("//") else Path(folder)
    if not folder.is_dir():
        raise AniRenderError(f"The image folder {folder} does not exist.")
    found = {}
    for path in sorted(folder.iterdir()):
        match = re.search(r"(\d+)\D*$", path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or match is None:
            continue
        frame = int(match.group(1))
        if frame in found:
            raise AniRenderError(
                f"{found[frame].name} and {path.name} both claim frame {frame}; keep one."
            )
        found[frame] = path
    return found


def check_image_sequence(folder, frames) -> tuple[dict, int]:
    """({frame: path}, size) for exactly ``frames``, every image square and one size."""
    images = frame_images(folder)
    missing = [f for f in frames if f not in images]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise AniRenderError(
            f"{len(images)} numbered images in {folder}, but the animation's frames "
            f"{frames[0]}-{frames[-1]} need {len(frames)}; missing frames {shown}."
        )
    sizes = {}
    for frame in frames:
        image = bpy.data.images.load(str(images[frame]), check_existing=False)
        try:
            sizes[frame] = tuple(image.size)
        finally:
            bpy.data.images.remove(image)
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        odd = [f for f in frames if sizes[f] != sizes[frames[0]]][:4]
        raise AniRenderError(
            f"The images have different sizes {distinct} (e.g. frames {odd}); give every "
            "frame the same size."
        )
    width, height = distinct[0]
    if width != height:
        raise AniRenderError(f"The images are {width} x {height}; ANR needs square frames.")
    return {f: images[f] for f in frames}, _check_size(width)


def pair_image_sequence(scene, armature, folder, request: CaptureRequest):
    """(total, steps): pair the images in ``folder`` with the animation's frames.

    Frame numbers in the file names must cover ``request.frames``; the size of the
    images becomes the capture size. Images without alpha count as fully covered.
    """
    require_camera(scene)
    images, request.size = check_image_sequence(folder, list(request.frames))
    request.out_dir = check_output_folder(request.out_dir, "ANR training frames")
    passes = _CoarsePasses(scene, armature, request)
    target_dir = Path(request.out_dir) / "target"

    def steps():
        with SceneGuard(bpy.context), passes:
            target_dir.mkdir(parents=True, exist_ok=True)
            for frame in request.frames:
                passes.write(frame)
                _copy_as_png(images[frame], target_dir / f"target_{frame:04d}.png")
                yield f"frame {frame}"
            _write_record(request, passes.renderer.armature, passes.coarse, "images")

    return len(request.frames), steps()


def _copy_as_png(source: Path, path: Path) -> None:
    """Write ``source`` as an 8-bit straight RGBA PNG (a copy when it already is one)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(source) as image:
            image.convert("RGBA").save(path, format="PNG")
        return
    if source.suffix.lower() == ".png":
        shutil.copyfile(source, path)
        return
    pixels = read_blender_image(source)  # raw values, row 0 at the top
    image = bpy.data.images.new("AniRender target", pixels.shape[1], pixels.shape[0], alpha=True)
    try:
        image.colorspace_settings.is_data = True
        image.pixels.foreach_set(np.ascontiguousarray(pixels[::-1]).ravel())
        image.filepath_raw = str(path)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)
