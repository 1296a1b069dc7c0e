"""Render UDP and deferred-shading passes of a rigged character, frame by frame.

Passes (every one an H x W x 4 float32 image, row 0 at the top, background all 0, the
fourth channel the occupancy V in {0, 1}):

- ``udp``: canonical position XYZ in [0, 1] (see ``passes.canonical``) and V; the CoNR
  target-pose input.
- ``uv``: U, V of each mesh's active render UV map, 0, occupancy. Never filtered, so a
  pixel never blends two sides of a seam.
- ``normal``: the shading normal in *camera space* (Blender's camera object axes:
  +X right, +Y up, +Z towards the viewer, so visible surfaces have Z > 0), unit length,
  turned towards the camera on back faces as Cycles does; raw values in [-1, 1].
- ``depth``: camera-space Z distance in scene units (distance from the camera plane
  along the view axis, not along the ray) in R, G and B; 0 where empty.
- ``occupancy``: V in every channel.

Formats, one file per pass and frame in ``OUT/<pass>/<pass>_<frame:04d>.<ext>``:
``exr`` (float32 RGBA, lossless ZIP), ``npz`` (``numpy.load(f)["i"]`` is the H x W x 4
float32 array, the official CoNR layout), ``png`` (8-bit RGB preview for looking:
normals as ``n * 0.5 + 0.5``, depth as near = bright).

Two renderers give the same images: ``passes.cycles`` (Cycles with one sample
through override emission materials: anything Blender deforms, render-time modifier
settings) and ``passes.fast`` (the depsgraph's evaluated meshes rasterised by
``models.raster``, or ``models.raster_numpy`` where torch is absent: viewport modifier
settings). Both render from a
temporary scene that links the character and the camera, so the user's scene keeps its
render settings, materials and frame; the temporary scene is removed afterwards.
Known differences: the fast path ignores the camera's clip start/end (Cycles clips), and
a pixel centre on a silhouette fold may pick the other surface (~1 pixel in 17k).

Only the character's meshes are drawn (other objects neither show nor occlude); meshes
hidden from rendering are left out. Files are written beside their final name and then
renamed, so a frame on disk is always complete and is skipped unless overwriting. The
Cycles path renders into Blender's "Render Result" image (removed again if it made it).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import bpy
import numpy as np

from ...errors import AniRenderError
from ..characters.finding import find_character, require_camera
from ..core.blender_section import blender_section
from ..core.frame_writer import BackgroundWriter
from . import canonical
from .camera import camera_matrices
from .cycles import CyclesBackend
from .fast import FastBackend
from .files import _file_codec, _npz_writer, _write_whole, preview, set_file_format
from .request import FORMATS, PASSES, PassRequest, check_output_folder, output_size, parse_choices


class PassRenderer:
    """Renders and writes the passes of one character, frame by frame.

    Construction checks the input and changes nothing; ``with`` builds the temporary
    scene and removes it (and every temporary material and image) on exit.
    """

    def __init__(self, scene, armature, request: PassRequest):
        self.scene = scene
        self.request = request
        require_camera(scene)
        self.camera = scene.camera
        self.width, self.height = output_size(scene, request.size)
        request.passes = parse_choices(request.passes, PASSES, "pass")
        request.formats = parse_choices(request.formats, FORMATS, "format")
        if not request.frames:
            raise AniRenderError("No frames to render; give a frame range.")
        character = find_character(armature)
        if character.armature is None:
            raise AniRenderError(
                f'"{character.name}" has no armature; UDP passes need the rigged character.'
            )
        self.armature = character.armature
        self.meshes = [m for m in canonical.deformed_meshes(self.armature, scene)]
        if not self.meshes:
            raise AniRenderError(
                f'Armature "{self.armature.name}" deforms no mesh in scene "{scene.name}".'
            )
        request.out_dir = check_output_folder(request.out_dir)
        self.todo = self.frames_to_render()
        self.temp = None
        self._made = []  # temporary data-blocks, removed on exit
        self._scratch = None
        self._writer = BackgroundWriter()

    # temporary scene -----------------------------------------------------------------
    def __enter__(self):
        self._images_before = {image.as_pointer() for image in bpy.data.images}
        try:
            self._build_temp_scene()
            self._check_in_view()
            if "udp" in self.request.passes:
                canonical.ensure_canonical(self.armature, self.scene)
            if self.request.fast:
                self._backend = FastBackend(self)
            else:
                self._backend = CyclesBackend(self)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.flush()  # a failed background write surfaces here
        finally:
            self.close()
        return False

    def _build_temp_scene(self):
        temp = self.temp = bpy.data.scenes.new("AniRender passes (temporary)")
        temp.render.resolution_x, temp.render.resolution_y = self.width, self.height
        temp.render.resolution_percentage = 100
        temp.render.pixel_aspect_x = self.scene.render.pixel_aspect_x
        temp.render.pixel_aspect_y = self.scene.render.pixel_aspect_y
        temp.render.fps, temp.render.fps_base = self.scene.render.fps, self.scene.render.fps_base
        temp.view_settings.view_transform = "Raw"
        temp.view_settings.look = "None"
        temp.view_settings.exposure = 0.0
        temp.view_settings.gamma = 1.0
        temp.view_settings.use_curve_mapping = False
        for obj in (self.armature, self.camera, *self.meshes):
            if temp.collection.objects.get(obj.name) is None:
                temp.collection.objects.link(obj)
        temp.camera = self.camera
        temp.frame_set(self.request.frames[0])

    def close(self):
        self._writer.close()
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
            self._backend = None
        for idb in reversed(self._made):
            try:
                getattr(bpy.data, _collection_of(idb)).remove(idb)
            except (ReferenceError, KeyError):
                pass
        self._made.clear()
        if self.temp is not None:
            bpy.data.scenes.remove(self.temp)
            self.temp = None
        before = getattr(self, "_images_before", None)
        if before is not None:  # Cycles' "Render Result", when our render made it
            for image in [i for i in bpy.data.images if i.as_pointer() not in before]:
                if image.type == "RENDER_RESULT":
                    bpy.data.images.remove(image)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def made(self, idb):
        """Record a temporary data-block to remove on exit."""
        self._made.append(idb)
        return idb

    @property
    def scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="anirender-passes-")
        return Path(self._scratch.name)

    # camera --------------------------------------------------------------------------
    def camera_matrices(self, depsgraph):
        """(projection @ world-to-camera, camera-to-world) as float64 numpy 4x4."""
        render = self.temp.render
        aspect = (render.pixel_aspect_x, render.pixel_aspect_y)
        return camera_matrices(self.camera, depsgraph, self.width, self.height, aspect)

    def set_frame(self, frame: int):
        with self.blender_busy():
            self.temp.frame_set(frame)
        return self.temp.view_layers[0].depsgraph

    @contextmanager
    def blender_busy(self):
        """Around Blender's own evaluation or rendering: the file writer waits and the
        garbage collector is held off (``core.frame_writer``, ``core.blender_section``)."""
        with self._writer.blender_busy(), blender_section():
            yield

    def visible_meshes(self):
        return [m for m in self.meshes if not m.hide_render]

    def _check_in_view(self):
        frames = self.request.frames
        for frame in dict.fromkeys((frames[0], frames[len(frames) // 2], frames[-1])):
            depsgraph = self.set_frame(frame)
            to_clip, _ = self.camera_matrices(depsgraph)
            for mesh_obj in self.visible_meshes():
                evaluated = mesh_obj.evaluated_get(depsgraph)
                corners = np.array([tuple(c) + (1.0,) for c in evaluated.bound_box])
                clip = corners @ (to_clip @ np.array(evaluated.matrix_world)).T
                front = clip[:, 3] > 1e-6
                if not front.any():
                    continue
                ndc = clip[front, :2] / clip[front, 3:4]
                if (ndc.max(axis=0) >= -1).all() and (ndc.min(axis=0) <= 1).all():
                    return
        raise AniRenderError(
            f'Character "{self.armature.name}" is outside the view of camera '
            f'"{self.camera.name}" (checked frames {frames[0]}, {frames[len(frames) // 2]}, '
            f"{frames[-1]}). Aim the camera at the character."
        )

    # frames --------------------------------------------------------------------------
    def frames_to_render(self) -> list[int]:
        request = self.request
        if request.overwrite:
            return list(request.frames)
        return [f for f in request.frames if not request.done(f)]

    def render_frame(self, frame: int) -> dict[str, np.ndarray]:
        """The requested passes of ``frame`` as H x W x 4 float32 arrays."""
        return self._backend.render(frame)

    def write_frame(self, frame: int, images: dict[str, np.ndarray]) -> None:
        """Write the frame's files: in the background where no ``bpy`` is needed (numpy,
        EXR and Pillow writers), else here. ``flush`` waits for them."""
        for name, pixels in images.items():
            for fmt in self.request.formats:
                if fmt == "exr" and self._backend.wrote_exr(name, frame):
                    continue
                path = self.request.path(name, frame, fmt)
                path.parent.mkdir(parents=True, exist_ok=True)
                data = preview(name, pixels) if fmt == "png" else pixels
                codec = _npz_writer if fmt == "npz" else _file_codec(fmt)
                if codec is None:  # a plain Blender: its image writer, on this thread
                    _write_whole(partial(self.write_image, fmt=fmt), path, data)
                else:
                    self._writer.submit(_write_whole, codec, path, data, what=str(path))

    def flush(self) -> None:
        """Wait until every file of the frames rendered so far is on disk."""
        self._writer.flush()

    def write_image(self, path: Path, pixels: np.ndarray, fmt: str) -> None:
        """Write float32 (H, W, 4): EXR float32 ZIP or 8-bit RGB PNG.

        EXR through ``models.exr`` (numpy + zlib, any Python), PNG through Pillow when
        this Python has it, else a Blender image, which is what a plain Blender offers.
        """
        codec = _file_codec(fmt)
        if codec is not None:
            codec(path, pixels)
            return
        height, width = pixels.shape[:2]
        image = self._image(width, height)
        image.pixels.foreach_set(np.ascontiguousarray(pixels[::-1], dtype=np.float32).ravel())
        set_file_format(self.temp, fmt)
        image.save_render(str(path), scene=self.temp)

    def _image(self, width, height):
        image = getattr(self, "_writer_image", None)
        if image is None or tuple(image.size) != (width, height):
            image = self.made(
                bpy.data.images.new("AniRender pass", width, height, alpha=True, float_buffer=True)
            )
            image.colorspace_settings.is_data = True
            self._writer_image = image
        return image

    def render_and_write(self, frame: int) -> dict[str, np.ndarray]:
        images = self.render_frame(frame)
        self.write_frame(frame, images)
        return images


def _collection_of(idb) -> str:
    if isinstance(idb, bpy.types.Material):
        return "materials"
    if isinstance(idb, bpy.types.Image):
        return "images"
    raise KeyError(type(idb).__name__)


def render_udp_passes(scene, armature, request: PassRequest):
    """(renderer, steps): ``steps`` renders every frame of ``renderer.todo``, one per step.

    Everything is checked before anything changes (raises ``AniRenderError``); closing
    ``steps`` early (Esc) removes everything temporary.
    """
    renderer = PassRenderer(scene, armature, request)
    return renderer, _frames(renderer)


def _frames(renderer: PassRenderer):
    with renderer:
        for frame in renderer.todo:
            renderer.render_and_write(frame)
            yield f"frame {frame}"
