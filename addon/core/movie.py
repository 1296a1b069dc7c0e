"""PNG frames to an H.264 MP4 with Blender's own FFmpeg output (no ffmpeg binary needed).

A throwaway scene's sequencer lays the frames over a flat colour (they carry alpha) and
renders the strip; the scene is removed afterwards, whatever happens.
"""

from __future__ import annotations

from pathlib import Path

import bpy


def encode_movie(
    paths: list[Path],
    movie: Path,
    size: tuple[int, int],
    fps: tuple[int, float] = (24, 1.0),
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """Encode ``paths`` (PNG files of one folder, in order) at ``size`` (width, height)."""
    clip = bpy.data.scenes.new("AniRender movie")
    try:
        clip.render.fps, clip.render.fps_base = fps
        clip.render.resolution_x, clip.render.resolution_y = size
        clip.render.resolution_percentage = 100
        clip.frame_start, clip.frame_end = 1, len(paths)
        editor = clip.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences
        ground = strips.new_effect("Ground", "COLOR", channel=1, frame_start=1, length=len(paths))
        ground.color = background
        image = strips.new_image("Frames", str(paths[0]), channel=2, frame_start=1)
        for path in paths[1:]:
            image.elements.append(Path(path).name)
        image.blend_type = "ALPHA_OVER"
        settings = clip.render.image_settings
        if hasattr(settings, "media_type"):
            settings.media_type = "VIDEO"
        settings.file_format = "FFMPEG"
        clip.render.ffmpeg.format = "MPEG4"
        clip.render.ffmpeg.codec = "H264"
        clip.render.ffmpeg.constant_rate_factor = "HIGH"
        Path(movie).parent.mkdir(parents=True, exist_ok=True)
        clip.render.filepath = str(movie)
        clip.render.use_file_extension = False
        bpy.ops.render.render(animation=True, scene=clip.name)
    finally:
        bpy.data.scenes.remove(clip)
    return Path(movie)
