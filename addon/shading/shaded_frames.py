"""Shaded frames into Blender: PNG files, an image to look at, a sequence, a VSE strip,
and the resumable frame-range render (``SequenceRender``) the animation operators share.

The shader answers premultiplied float RGBA; files and images here hold straight alpha
(what image editors and the Sequencer expect), 8-bit sRGB values as the shader drew them.
Main thread only (``bpy``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import bpy
import numpy as np

from ...models.alpha import to_straight_uint8
from ..core.jobs import Job
from .clients import ServiceUnavailable


def frame_path(folder: Path, character: str, frame: int) -> Path:
    """``<folder>/<character>_0001.png``: Blender reads it back as an image sequence."""
    safe = re.sub(r"[^\w\-]+", "_", character).strip("_") or "character"
    return Path(folder) / f"{safe}_{frame:04d}.png"


def _as_pixels(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied float (H, W, 4), row 0 at the top -> Blender's flat pixel buffer."""
    straight = to_straight_uint8(rgba).astype(np.float32) / 255.0
    return np.ascontiguousarray(straight[::-1]).ravel()


class FrameWriter:
    """Writes shaded frames as straight-alpha PNGs through one scratch image.

    A frame appears on disk only whole (written beside, then renamed), so a frame cut
    off by a crash is never mistaken for a finished one when a run resumes.
    """

    def __init__(self, size: int | tuple[int, int]):
        self.size = size  # a side, or (width, height) for frames that are not square
        self._image = None

    def write(self, path: Path, rgba: np.ndarray) -> None:
        image = self._scratch()
        image.pixels.foreach_set(_as_pixels(rgba))
        partial = path.with_name(f".{path.stem}.partial.png")
        image.filepath_raw = str(partial)
        image.file_format = "PNG"
        image.save()
        os.replace(partial, path)

    def _scratch(self):
        if self._image is None:
            width, height = self.size if isinstance(self.size, tuple) else (self.size,) * 2
            self._image = bpy.data.images.new("AniRender frame writer", width, height, alpha=True)
            self._image.alpha_mode = "STRAIGHT"
        return self._image

    def close(self) -> None:
        if self._image is not None:
            try:
                bpy.data.images.remove(self._image)
            except ReferenceError:
                pass
            self._image = None


def show_frame(name: str, rgba: np.ndarray, context=None):
    """Put a shaded frame in an image data-block named ``name`` (made or reused) and
    show it in every open Image Editor. Returns the image."""
    height, width = rgba.shape[:2]
    image = bpy.data.images.get(name)
    if image is not None and image.source != "GENERATED":
        image = None  # a file the artist loaded under that name: leave it alone
    if image is not None and tuple(image.size) != (width, height):
        image.scale(width, height)
    if image is None:
        image = bpy.data.images.new(name, width, height, alpha=True)
        image.alpha_mode = "STRAIGHT"
    image.pixels.foreach_set(_as_pixels(rgba))
    image.update()
    screen = getattr(context, "screen", None) if context is not None else None
    for area in screen.areas if screen is not None else ():
        if area.type == "IMAGE_EDITOR":
            area.spaces.active.image = image
    return image


def load_sequence(first: Path, frames: int, name: str):
    """The written PNGs as one image-sequence data-block (made or refreshed)."""
    image = bpy.data.images.get(name)
    if (
        image is not None
        and image.source == "SEQUENCE"
        and Path(bpy.path.abspath(image.filepath)) == Path(first)
    ):
        image.reload()
        return image
    image = bpy.data.images.load(str(first), check_existing=False)
    image.name = name
    image.source = "SEQUENCE"
    image.alpha_mode = "STRAIGHT"
    return image


def add_strip(scene, paths: list[Path], first_frame: int, name: str):
    """An image strip of ``paths`` starting at ``first_frame`` on a free channel."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips
    used = {s.channel for s in strips}
    channel = next(c for c in range(1, 129) if c not in used)
    strip = strips.new_image(name, str(paths[0]), channel, first_frame)
    for path in paths[1:]:
        strip.elements.append(path.name)
    strip.blend_type = "ALPHA_OVER"
    return strip


class SequenceRender:
    """A frame range shaded into ``<folder>/<name>_<frame:04d>.png``, resumably.

    Frames already on disk are skipped unless ``overwrite``; ``todo`` lists the rest, so
    callers can size their pass renderers before ``job`` starts anything.
    """

    def __init__(self, folder: Path, name: str, frames: Sequence[int], overwrite: bool):
        self.frames = list(frames)
        self.paths = {f: frame_path(folder, name, f) for f in self.frames}
        self.todo = [f for f in self.frames if overwrite or not self.paths[f].is_file()]
        self.written = 0

    @property
    def kept(self) -> int:
        """Frames on disk now: those found there plus those written by this run."""
        return self.written + len(self.frames) - len(self.todo)

    def job(
        self,
        title: str,
        guard,
        read_input: Callable[[int], object],
        shade: Callable[[list], Sequence[np.ndarray]],
        writer: FrameWriter,
        *,
        sequence_name: str,
        summary: str,
        when_unavailable: Callable[[int], str],
        batch: int | None = None,
        inputs_open=None,
        on_loaded: Callable[[object], None] | None = None,
        workers: int = 1,
        max_pending: int = 4,
    ) -> Job:
        """The render as a ``Job``: ``read_input(frame)`` on the main thread (inside the
        ``inputs_open`` context manager, if any), ``shade(inputs)`` in a worker on a list
        of ``batch`` inputs (one per request when ``None``), one RGBA per input written
        by ``writer`` as it arrives. ``job.done`` counts written frames. A service that
        goes away ends the run with ``when_unavailable(kept frames)`` added to its
        message. At the end the sequence is loaded as ``sequence_name`` (kept by
        ``guard``, handed to ``on_loaded``) and ``summary`` is completed with the frames
        already there and the image's name."""
        todo, paths = self.todo, self.paths
        per_request = batch or 1
        unit = "frames" if batch is None else "batches"
        outstanding = [0]

        def shade_or_explain(inputs):
            try:
                return shade(inputs)
            except ServiceUnavailable as exc:
                raise ServiceUnavailable(f"{exc} {when_unavailable(self.kept)}") from None

        def write(batch_frames):
            def then(rgba):
                for frame, image in zip(batch_frames, rgba):
                    writer.write(paths[frame], image)
                self.written += len(batch_frames)
                outstanding[0] -= 1

            return then

        def steps(job):
            def counted(message):
                job.done = self.written - 1  # Job.step adds one: done counts written frames
                return message

            try:
                with inputs_open if inputs_open is not None else contextlib.nullcontext():
                    waiting, inputs = [], []
                    for frame in todo:
                        inputs.append(read_input(frame))
                        waiting.append(frame)
                        if len(waiting) == per_request or frame == todo[-1]:
                            outstanding[0] += 1
                            job.submit(shade_or_explain, inputs, then=write(waiting))
                            waiting, inputs = [], []
                        yield counted(f"frame {frame}")
                while outstanding[0]:
                    job.poll()
                    if outstanding[0]:
                        time.sleep(0.01)
                        yield counted(f"waiting for {outstanding[0]} {unit}")
                first = self.frames[0]
                image = guard.keep(load_sequence(paths[first], len(self.frames), sequence_name))
                if on_loaded is not None:
                    on_loaded(image)
                skipped = len(self.frames) - len(todo)
                job.summary = (
                    summary
                    + (f" ({skipped} already there)" if skipped else "")
                    + f'; image sequence "{image.name}"'
                )
                yield counted("done")
            finally:
                writer.close()

        return Job(title, steps, total=len(todo), workers=workers, max_pending=max_pending)
