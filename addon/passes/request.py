"""What a pass render is asked for: frames, passes, formats, size, folder (``PassRequest``),
and the parsing and checks of those settings that the operators and the CLI share."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy

from ...errors import AniRenderError
from ...service.render_chunks import parse_frames  # noqa: F401 (shared, Blender-free)

PASSES = ("udp", "uv", "normal", "depth", "occupancy")


FORMATS = ("exr", "npz", "png")


@dataclass
class PassRequest:
    """What to render: frames, passes, formats, where, and how."""

    out_dir: Path
    frames: list[int]
    passes: tuple[str, ...] = ("udp",)
    formats: tuple[str, ...] = ("exr", "npz", "png")
    fast: bool = False
    size: tuple[int, int] | None = None  # (width, height); None: the scene's resolution
    overwrite: bool = False

    def path(self, pass_name: str, frame: int, fmt: str) -> Path:
        return Path(self.out_dir) / pass_name / f"{pass_name}_{frame:04d}.{fmt}"

    def done(self, frame: int) -> bool:
        """Every requested file of ``frame`` is already on disk."""
        return all(self.path(p, frame, f).is_file() for p in self.passes for f in self.formats)


def parse_choices(text, allowed, what: str) -> tuple[str, ...]:
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise AniRenderError(
            f"Unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}."
        )
    return tuple(dict.fromkeys(items))


def output_size(scene, size) -> tuple[int, int]:
    if size is not None:
        width, height = (int(size[0]), int(size[1]))
    else:
        pct = scene.render.resolution_percentage / 100.0
        width = int(scene.render.resolution_x * pct)
        height = int(scene.render.resolution_y * pct)
    if width <= 0 or height <= 0:
        raise AniRenderError(
            f"The pass resolution is {width} x {height}; set a width and height of at "
            "least 1 pixel (Output Properties > Format, or the size override)."
        )
    return width, height


def resolve_output_folder(folder) -> Path:
    """The absolute folder an output path names.

    ``//`` is the .blend's folder. In a file that was never saved it has none; rather
    than write into whatever directory Blender was started from, such output goes to
    ``<temp>/anirender/`` (the report names the full path).
    """
    text = str(folder)
    if not text.startswith("//"):
        return Path(text)
    if bpy.data.filepath:
        return Path(bpy.path.abspath(text))
    return Path(tempfile.gettempdir()) / "anirender" / text[2:]


def check_output_folder(folder, what: str = "passes") -> Path:
    """Resolve ``folder``, create it and prove it writable; ``what`` names the output."""
    folder = resolve_output_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".anirender-probe-", delete=False)
        probe.close()
        os.unlink(probe.name)
    except OSError as exc:
        raise AniRenderError(
            f"Cannot write {what} to {folder} ({exc.strerror or exc}). "
            "Choose an output folder you can write to."
        ) from None
    return folder
