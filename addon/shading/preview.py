"""The viewport preview of the AniRender engine (3D View in Rendered shading).

Split so that what can be tested headless is: ``preview_inputs`` (main thread) draws each
character's passes from the viewport's depsgraph for a given view (``ViewMatrices``: the
region's view and window matrices) at a small size; ``shade_preview`` (any thread) shades
and composites them the engine's way (``frame_shading.shade_frame``); ``preview_image``
is both at once. ``PreviewWorker`` runs the shading on one worker thread: ``submit``
never waits, requests made while it is busy collapse into the newest one (a pose or view
dragged through many states shades only the last), and a short quiet time (debounce)
passes before a request is taken. The engine draws the last result it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..passes.evaluated import ViewMatrices, evaluated_passes
from .frame_shading import CharacterFrame, shade_frame

#: the preview's longest side in pixels (the viewport is scaled up to it)
PREVIEW_LONGEST = 192


def preview_size(width: int, height: int, longest: int = PREVIEW_LONGEST) -> tuple[int, int]:
    """A viewport of ``width`` x ``height`` scaled so its longest side is ``longest``."""
    scale = longest / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def preview_inputs(depsgraph, plan, view: ViewMatrices, size: tuple[int, int]):
    """The characters' passes for ``view`` at ``size``, with their shaders; main thread.
    ``plan``: the engine's ``plan_frame`` of the viewport's depsgraph."""
    frames = []
    for character, (meshes, drawn, shader) in zip(plan.characters, plan.draws):
        passes = evaluated_passes(depsgraph, view, meshes, size, drawn)
        frames.append(CharacterFrame(character.name, passes, shader))
    return frames


def shade_preview(frames: list[CharacterFrame]) -> np.ndarray:
    """Premultiplied RGBA (H, W, 4) of the characters, composited by depth."""
    return shade_frame(frames).rgba


def preview_image(depsgraph, plan, view: ViewMatrices, size: tuple[int, int]) -> np.ndarray:
    """The preview of ``view`` at ``size`` (width, height), done at once."""
    return shade_preview(preview_inputs(depsgraph, plan, view, size))


class PreviewWorker:
    """Shades preview requests on one daemon thread, newest request first.

    ``result`` is (key, rgba) of the last finished request, ``error`` the message of the
    last failed one (None after a success). ``shade`` is called with a request's
    arguments."""

    def __init__(self, shade: Callable = shade_preview, debounce: float = 0.15):
        self.shade = shade
        self.debounce = debounce
        self.result: tuple | None = None
        self.error: str | None = None
        self.finished = 0  # requests shaded (or failed) so far
        self._pending: tuple | None = None
        self._busy = False
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="AniRender preview", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        with self._changed:
            return self._pending is None and not self._busy

    def submit(self, key, *args) -> None:
        """Ask for ``shade(*args)``, replacing any request not yet started."""
        with self._changed:
            self._pending = (key, args)
            self._changed.notify_all()

    def wait_finished(self, count: int, timeout: float | None = None) -> bool:
        """Wait until ``count`` requests are finished (for scripts and tests)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.finished >= count, timeout)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _take(self):
        with self._changed:
            while self._pending is None and not self._stopped:
                self._changed.wait()
            if self._stopped:
                return None
            # debounce: wait for a quiet moment, newer requests replacing this one
            while True:
                request = self._pending
                self._changed.wait(self.debounce)
                if self._stopped:
                    return None
                if self._pending is request:
                    break
            self._pending = None
            self._busy = True
            return request

    def _run(self) -> None:
        while True:
            request = self._take()
            if request is None:
                return
            key, args = request
            try:
                rgba = self.shade(*args)
            except Exception as exc:  # shown in the viewport; the worker keeps going
                self.error = str(exc) or type(exc).__name__
            else:
                self.result, self.error = (key, rgba), None
            with self._changed:
                self._busy = False
                self.finished += 1
                self._changed.notify_all()
