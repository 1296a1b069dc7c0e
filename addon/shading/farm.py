"""Rendering a saved .blend's frames the way a farm worker does (``blender -b -a``):
Blender's own animation render with the AniRender engine, for ``anirender render``.

Frames are rendered by ``bpy.ops.render.render(animation=True)`` over each contiguous
run of the asked frames, so the scene's output path, file format, frame step,
``use_overwrite`` and ``use_placeholder`` decide what is written and what is skipped,
exactly as on a farm. ``on_frame(frame)`` is called after each frame Blender rendered
(not for frames it skipped). An engine or Blender error becomes an ``AniRenderError``
with the engine's message. Main thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bpy

from ...errors import AniRenderError
from ..core.movie import encode_movie
from ..core.prefs import ADDON_ID
from .engine import ENGINE_ID, AniRenderEngine


def enable_addon() -> None:
    """Register AniRender in this bpy session, as an installed extension is in Blender."""
    import addon_utils  # Blender's own module, importable once bpy is

    if not AniRenderEngine.is_registered:
        addon_utils.enable(ADDON_ID, default_set=False)
    if not AniRenderEngine.is_registered:
        raise AniRenderError(f"The AniRender add-on ({ADDON_ID}) could not be enabled.")


def open_scene(blend: Path, scene_name: str | None = None):
    """Open ``blend`` (replacing the session) and return its scene to render."""
    if not blend.is_file():
        raise AniRenderError(f"No .blend file at {blend}.")
    bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    scene = bpy.context.window.scene if bpy.context.window else bpy.context.scene
    if scene_name:
        scene = bpy.data.scenes.get(scene_name)
        if scene is None:
            raise AniRenderError(f'{blend.name} has no scene named "{scene_name}".')
    return scene


def runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frames -> contiguous (first, last) runs."""
    out: list[tuple[int, int]] = []
    for frame in frames:
        if out and frame == out[-1][1] + 1:
            out[-1] = (out[-1][0], frame)
        else:
            out.append((frame, frame))
    return out


def output_pattern(scene, out: str | None) -> str:
    """Where the frames go: ``out`` (a folder ends in /), else the scene's output path."""
    if out:
        path = str(out)
        if path.endswith(("/", "\\")) or Path(path).is_dir():
            path = str(Path(path) / (Path(bpy.data.filepath).stem or "frame")) + "_"
        return path
    return scene.render.filepath


def frames_visited(scene, frames: list[int]) -> list[int]:
    """The frames Blender's animation render visits for ``frames`` (the scene's step)."""
    step = max(1, scene.frame_step)
    return [f for first, last in runs(sorted(set(frames))) for f in range(first, last + 1, step)]


def render_frames(
    scene,
    frames: list[int],
    out: str | None = None,
    on_frame: Callable[[int], None] = None,
    resume: bool = False,
) -> tuple[list[int], str]:
    """Render ``frames`` of ``scene`` through Blender's animation render; returns the
    frames rendered (the others were on disk or claimed by another worker) and the
    output path they were written to. ``resume``: these frames are this render's alone
    (a chunk of ``anirender render --chunk``): frames on disk are kept (Overwrite off for
    this render) and the empty placeholders an interrupted attempt left are rendered."""
    if scene.render.engine != ENGINE_ID:
        raise AniRenderError(
            f'Scene "{scene.name}" renders with {scene.render.engine}, not AniRender. Choose '
            "AniRender in Render Properties > Render Engine and save the file."
        )
    rendered: list[int] = []

    def done(rendered_scene, *_):
        if rendered_scene == scene:
            rendered.append(rendered_scene.frame_current)
            if on_frame is not None:
                on_frame(rendered_scene.frame_current)

    render = scene.render
    kept = (scene.frame_start, scene.frame_end, render.filepath, render.use_overwrite)
    pattern = output_pattern(scene, out)
    bpy.app.handlers.render_post.append(done)
    try:
        render.filepath = pattern
        if resume:
            render.use_overwrite = False
            for frame in frames:
                path = Path(bpy.path.abspath(render.frame_path(frame=frame)))
                if path.is_file() and path.stat().st_size == 0:
                    path.unlink()  # a placeholder: its render never finished
        for first, last in runs(sorted(set(frames))):
            scene.frame_start, scene.frame_end = first, last
            try:
                with bpy.context.temp_override(scene=scene):
                    bpy.ops.render.render(animation=True, scene=scene.name)
            except RuntimeError as exc:
                message = str(exc).strip().removeprefix("Error: ").strip()
                raise AniRenderError(message) from None
    finally:
        bpy.app.handlers.render_post.remove(done)
        scene.frame_start, scene.frame_end, render.filepath, render.use_overwrite = kept
    return rendered, bpy.path.abspath(pattern)


def write_movie(scene, frames: list[int], out: str | None, movie: Path) -> Path:
    """Encode the frames ``render_frames`` wrote for ``frames`` (to ``out``, else the
    scene's output path) as an H.264 MP4 at ``movie``, over black, at the scene's frame
    rate and output size, with Blender's FFmpeg output. Frames missing on disk (or still
    an empty placeholder) stop it, naming the first one."""
    render = scene.render
    kept = render.filepath
    try:
        render.filepath = output_pattern(scene, out)
        paths = [Path(bpy.path.abspath(render.frame_path(frame=f))) for f in sorted(frames)]
    finally:
        render.filepath = kept
    missing = [p for p in paths if not p.is_file() or p.stat().st_size == 0]
    if missing:
        raise AniRenderError(
            f"Cannot make the movie: frame file {missing[0]} is missing or empty "
            f"({len(missing)} of {len(paths)}). Render those frames again, then add --movie."
        )
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise AniRenderError("Cannot make the movie: the frames are in more than one folder.")
    width = render.resolution_x * render.resolution_percentage // 100
    height = render.resolution_y * render.resolution_percentage // 100
    return encode_movie(paths, movie, (width, height), (render.fps, render.fps_base))
