"""Live reenactment preview: a portrait + the pose sliders -> an image in the Image Editor.

The main thread only reads sliders and writes pixels: ``PreviewSession.tick`` (run by
``bpy.app.timers`` every ``TICK`` seconds) notices a changed pose, waits until the
sliders have been still for ``DEBOUNCE`` seconds, and hands the newest request to one
worker thread; requests made while the worker is busy replace each other, so a drag
costs at most one inference in flight plus the last pose. The worker calls
``reenact(portrait_rgba_uint8, pose20) -> rgba`` and never touches ``bpy``.

Which ``reenact`` runs: the shader client chosen in the AniRender preferences (in
Blender, local service, remote service; addon/client.py ``ReenactSession``). The
client is made, a local service started and the portrait uploaded on the worker thread,
so none of it blocks Blender.
"""

from __future__ import annotations

import queue
import threading
import time

import bpy
import numpy as np

from ...errors import AniRenderError
from ...models.alpha import to_straight_uint8
from ..core.prefs import preferences
from ..core.settings import morph_settings
from ..shading.sessions import ReenactSession, settings_from
from . import sliders as morphs

RESULT_IMAGE = "AniRender Reenactment"
TICK = 0.05
DEBOUNCE = 0.12


def default_reenact(weights: str | None = None, mirror_average: bool = False):
    """The ``reenact(portrait, pose) -> uint8 rgba`` callable to use (see the module doc).

    Cheap to make: nothing connects until its first call (on the preview's worker).
    ``weights`` (a character's tuned weights) run in Blender's own Python;
    ``mirror_average`` averages with the mirrored face (two passes).
    """
    if weights:
        return _tuned_reenact(weights, mirror_average)

    session = ReenactSession(settings_from(preferences()))

    def reenact(portrait, pose):
        return to_straight_uint8(session.reenact(portrait, [pose], mirror_average)[0])

    return reenact


def tuned_weights_path(weights: str) -> str:
    """The absolute path of a character's tuned weights, checked: they run in Blender's
    own Python, so the file and PyTorch must both be there."""
    import importlib.util
    import os

    path = bpy.path.abspath(weights)
    if not os.path.isfile(path):
        raise AniRenderError(
            f"The tuned weights {path} are missing; tune again or clear Tuned Weights."
        )
    if importlib.util.find_spec("torch") is None:
        raise AniRenderError("Reenacting with tuned weights needs PyTorch in Blender's Python.")
    return path


def _tuned_reenact(weights: str, mirror_average: bool = False):
    path = tuned_weights_path(weights)
    holder = {}

    def reenact(portrait, pose):
        if "model" not in holder:
            # torch: loaded on the preview's worker, on first use
            from ...models.reenact import Reenactor

            holder["model"] = Reenactor(path, mirror_average=mirror_average)
        return holder["model"].reenact(portrait, pose)

    return reenact


def reenact_for(owner):
    """The reenact callable for a character: its tuned weights when set, else the default;
    mirror-averaged when its Mirror Average is on."""
    settings = morph_settings(owner)
    if settings is None:
        return default_reenact()
    return default_reenact(settings.tuned_weights, settings.mirror_average)


def restart_if_live(owner) -> None:
    """Restart a running live preview so it picks up the character's current weights."""
    if owner.name in _SESSIONS:
        start_preview(owner)


def image_to_rgba(image) -> np.ndarray:
    """A Blender image as uint8 H x W x 4, top row first."""
    width, height = image.size
    if width == 0 or height == 0:
        raise AniRenderError(f'Image "{image.name}" has no pixels (is its file missing?).')
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    rgba = pixels.reshape(height, width, 4)[::-1]
    return (np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8)


def show_rgba(rgba: np.ndarray, name: str = RESULT_IMAGE):
    """Write uint8 RGBA into an image data-block (created once) and show it in Image Editors."""
    height, width = rgba.shape[:2]
    image = bpy.data.images.get(name)
    if image is None or tuple(image.size) != (width, height):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(name, width, height, alpha=True)
    flat = (rgba[::-1].astype(np.float32) / 255.0).ravel()
    image.pixels.foreach_set(flat)
    image.update()
    for window in getattr(bpy.context.window_manager, "windows", ()):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
    return image


class PreviewSession:
    """One owner's live preview: debounced requests, one worker, results on the main thread."""

    def __init__(self, owner_name: str, reenact=None, debounce: float = DEBOUNCE):
        self.owner_name = owner_name
        self.reenact = reenact or default_reenact()
        self.debounce = debounce
        self._requests: queue.Queue = queue.Queue(maxsize=1)
        self._results: queue.Queue = queue.Queue()
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._last_pose = None
        self._changed_at = None
        self._sent_pose = None
        self._portrait_key = None
        self._portrait = None
        self.shown = 0
        self.errors: list[str] = []
        self.timer = self.tick  # one bound method: bpy.app.timers compares by identity
        self._thread = threading.Thread(target=self._work, name="anirender-reenact", daemon=True)
        self._thread.start()

    # worker ---------------------------------------------------------------------------
    def _work(self):
        while not self._stop.is_set():
            try:
                portrait, pose = self._requests.get(timeout=0.1)
            except queue.Empty:
                continue
            self._busy.set()
            try:
                self._results.put((pose, self.reenact(portrait, pose), None))
            except Exception as exc:  # shown to the artist on the main thread
                self._results.put((pose, None, exc))
            finally:
                self._busy.clear()

    # main thread ----------------------------------------------------------------------
    def _portrait_array(self, settings):
        image = settings.portrait
        if image is None:
            raise AniRenderError("Pick a portrait image in the Reenactment Preview panel.")
        key = (image.name, tuple(image.size), image.is_dirty, image.filepath)
        if key != self._portrait_key:
            self._portrait = image_to_rgba(image)
            self._portrait_key = key
        return self._portrait

    def request(self, force: bool = False) -> bool:
        """Queue the current pose if it changed (or ``force``); True when something was sent."""
        owner = bpy.data.objects.get(self.owner_name)
        if owner is None:
            return False
        pose = morphs.get_pose(owner)
        now = time.perf_counter()
        if pose != self._last_pose:
            self._last_pose, self._changed_at = pose, now
        if not force:
            if pose == self._sent_pose or self._changed_at is None:
                return False
            if now - self._changed_at < self.debounce or self._busy.is_set():
                return False
        portrait = self._portrait_array(morph_settings(owner))
        try:
            self._requests.get_nowait()  # drop a request the worker has not taken yet
        except queue.Empty:
            pass
        self._requests.put((portrait, pose))
        self._sent_pose = pose
        return True

    def collect(self):
        """Show finished results (the newest one); returns the shown RGBA or None."""
        latest = None
        while True:
            try:
                latest = self._results.get_nowait()
            except queue.Empty:
                break
        if latest is None:
            return None
        _pose, rgba, exc = latest
        if exc is not None:
            self.errors.append(str(exc))
            return None
        show_rgba(rgba)
        self.shown += 1
        return rgba

    def tick(self):
        """One timer tick: collect results, maybe send a request; seconds to the next tick."""
        if self._stop.is_set():
            return None
        try:
            self.collect()
            self.request()
        except AniRenderError as exc:
            self.errors.append(str(exc))
            stop_preview(self.owner_name)
            return None
        return TICK

    @property
    def idle(self) -> bool:
        return self._requests.empty() and not self._busy.is_set() and self._results.empty()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


_SESSIONS: dict[str, PreviewSession] = {}


def start_preview(owner, reenact=None) -> PreviewSession:
    stop_preview(owner.name)
    session = PreviewSession(owner.name, reenact=reenact or reenact_for(owner))
    _SESSIONS[owner.name] = session
    bpy.app.timers.register(session.timer, first_interval=TICK)
    return session


def stop_preview(owner_name: str) -> None:
    session = _SESSIONS.pop(owner_name, None)
    if session is None:
        return
    if bpy.app.timers.is_registered(session.timer):
        bpy.app.timers.unregister(session.timer)
    session.stop()


def stop_all() -> None:
    for name in list(_SESSIONS):
        stop_preview(name)


def reenact_settings_changed(settings, context):
    """Update of a setting the reenactment reads (Mirror Average): a running live preview
    restarts with it."""
    restart_if_live(settings.id_data)


def live_preview_changed(settings, context):
    """``MorphSettings.live_preview`` update: start or stop the owner's session."""
    owner = settings.id_data
    if settings.live_preview:
        try:
            start_preview(owner)
        except AniRenderError as exc:
            settings.live_preview = False
            print(f"AniRender preview: {exc}")
    else:
        stop_preview(owner.name)
