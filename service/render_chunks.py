"""Long renders in chunks of frames, each chunk an ``anirender render`` worker process.

``anirender render --chunk N`` splits the asked frames (sorted, as numbers) into chunks of
``N`` consecutive entries; ``render_chunk`` renders one chunk in a child process
(``python -m anirender.cli render SCENE --frames ... --resume``), since ``bpy`` loads
once per process and a process that dies must not take the others with it. With
``--resume`` a chunk keeps the frames already in the output folder and renders again the
empty placeholders an interrupted attempt left, so a chunk run twice writes each frame
once. No Blender and no Ray here: ``service.ray_render`` runs these chunks as Ray tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import AniRenderError

# exit status of a worker the test hook (ANIRENDER_RENDER_CRASH) stops, as a crash would
CRASH_STATUS = 70


class ChunkCrashed(RuntimeError):
    """A chunk's worker process died (killed, out of memory, crashed): worth a retry."""


def parse_frames(text: str) -> list[int]:
    """``"1-48"``, ``"5"``, ``"1-10,20,30-32"`` -> sorted frame numbers."""
    frames = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                first, last = int(part[:cut]), int(part[cut + 1 :])
                if last < first:
                    raise ValueError
                frames.update(range(first, last + 1))
            else:
                frames.add(int(part))
        except ValueError:
            raise AniRenderError(
                f"Cannot read the frame range {text!r}; write it like 1-48 or 1-10,20."
            ) from None
    if not frames:
        raise AniRenderError("No frames to render; give a range such as 1-48.")
    return sorted(frames)


def frames_text(frames: list[int]) -> str:
    """Sorted frames -> ``"1-24"`` / ``"1-3,7"``, what ``--frames`` reads."""
    parts: list[list[int]] = []
    for frame in frames:
        if parts and frame == parts[-1][1] + 1:
            parts[-1][1] = frame
        else:
            parts.append([frame, frame])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in parts)


def split_chunks(frames: list[int], size: int) -> list[list[int]]:
    """Sorted frames -> chunks of ``size`` frames (the last may be shorter)."""
    if size < 1:
        raise AniRenderError(f"--chunk must be 1 or more frames, not {size}.")
    frames = sorted(set(frames))
    return [frames[i : i + size] for i in range(0, len(frames), size)]


def chunk_command(blend: Path, frames: list[int], out: str | None, scene: str | None) -> list:
    command = [sys.executable, "-m", "anirender.cli", "render", str(blend)]
    command += ["--frames", frames_text(frames), "--resume"]
    if out:
        command += ["--out", str(out)]
    if scene:
        command += ["--scene", scene]
    return command


def rendered_frames(stdout: str) -> list[int]:
    """The frames a worker's ``rendered N frames (1, 2, ...)`` line lists."""
    line = next((x for x in stdout.splitlines() if x.startswith("rendered ")), None)
    if line is None:
        return []
    listed = line.split("(", 1)[1].split(")", 1)[0]
    return [int(f) for f in listed.split(", ") if f != "none"]


def render_chunk(
    blend: Path, frames: list[int], out: str | None = None, scene: str | None = None
) -> list[int]:
    """Render ``frames`` in a worker process; returns the frames it rendered (the others
    were on disk). A worker that reports an error (missing file, wrong engine: status 2)
    raises ``AniRenderError`` with its message, which a retry would only repeat; one that
    dies raises ``ChunkCrashed``."""
    command = chunk_command(Path(blend), frames, out, scene)
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode == 0:
        return rendered_frames(done.stdout)
    tail = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
    if done.returncode == 2:
        raise AniRenderError(f"frames {frames_text(frames)}: " + tail[0].split(": ", 1)[-1])
    raise ChunkCrashed(
        f"The worker rendering frames {frames_text(frames)} of {Path(blend).name} stopped "
        f"(exit status {done.returncode}): {tail[0]}"
    )


def crash_for_test(frame: int) -> None:
    """Test hook: ``ANIRENDER_RENDER_CRASH=FRAME:MARKER`` makes the first worker that
    renders FRAME (MARKER absent, then created) exit at once after writing it, as a
    killed worker would."""
    hook = os.environ.get("ANIRENDER_RENDER_CRASH")
    if not hook:
        return
    at, _, marker = hook.partition(":")
    if int(at) == frame and marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(CRASH_STATUS)
