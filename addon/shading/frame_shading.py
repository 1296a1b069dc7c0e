"""The per-frame walk after the passes: shading, framing, compositing by depth.

One road for every way of rendering a frame: the AniRender render engine (F12, Ctrl+F12,
``anirender render``, a farm's ``blender -b -a``) and the Neural Render Frame / Animation
operators all call ``shade_frame``. Each character is shaded by its own shader:

- ``sheet_shader``: its UDP is framed the official CoNR way (the centred square around
  the character, resized to the working size, nearest), sent through its
  ``ShadingSession`` (whatever client the settings chose: in process, local service,
  remote; the guided shader when every sheet view carries its UDP, else CoNR), and
  the answer pasted back at the frame's size;
- ``anr_shader``: its UV and normal passes (of the ANR model's coarse meshes), padded to
  multiples of 32, go through an ``AnrSession``.

The characters are then composited by depth into one premultiplied RGBA image, and the
passes (UDP, normal, depth, UV) are those of the nearest character at each pixel.

Arrays: H x W x 4 float32, row 0 at the top; RGBA premultiplied, in the shader's own
(display, sRGB-encoded) values; passes as ``addon.passes.renderer`` draws them (the
fourth channel the occupancy, 0 where empty; depth in scene units, 0 where empty).
No ``bpy``: this runs on worker threads as well as in the engine's render thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...models.framing import shade_in_frame
from ...service import protocol
from .sessions import AnrSession, ShadingSession

#: the character passes the per-frame walk draws (``addon.passes`` names)
DRAWN = ("udp", "normal", "depth", "uv")
#: the same for a character shaded by an ANR model (its coarse meshes)
ANR_DRAWN = ("uv", "normal", "depth")


class FrameStopped(Exception):
    """The caller asked to stop (Esc) between two characters of a frame."""


@dataclass
class CharacterFrame:
    """One character's passes for one frame and how to shade it."""

    name: str
    passes: dict[str, np.ndarray]  # what its shader reads; "depth" to composite several
    shade: Callable[[dict], np.ndarray]  # passes -> (H, W, 4) premultiplied RGBA


def sheet_shader(session: ShadingSession, size: int) -> Callable[[dict], np.ndarray]:
    """The sheet's shader through the session's client (guided when the sheet's views
    carry their UDPs, else image-only CoNR), framed at the working ``size``."""
    return lambda passes: shade_in_frame(session.shade, passes["udp"], size)


#: ANR frames' sides are multiples of this (``models.anr.check_passes``)
ANR_MULTIPLE = 32


def anr_shader(session) -> Callable[[dict], np.ndarray]:
    """An ``AnrSession``: UV + normal passes, padded to multiples of 32, then cropped."""

    def shade(passes):
        height, width = passes["uv"].shape[:2]
        pad = ((0, -height % ANR_MULTIPLE), (0, -width % ANR_MULTIPLE), (0, 0))
        uv, normal = (np.pad(passes[n], pad)[None].astype(np.float32) for n in ("uv", "normal"))
        return np.asarray(session.shade(uv, normal))[0, :height, :width]

    return shade


def occupancy(passes: dict) -> np.ndarray:
    """(H, W) bool: where the character's surface is (every pass's fourth channel)."""
    return next(iter(passes.values()))[..., 3] > 0


@dataclass
class ShadedFrame:
    """A frame shaded and composited: ``rgba`` premultiplied, ``passes`` by name."""

    rgba: np.ndarray
    passes: dict[str, np.ndarray] = field(default_factory=dict)
    nearest: np.ndarray | None = None  # (H, W) index of the character seen, -1: none


def shade_frame(
    characters: list[CharacterFrame], should_stop: Callable[[], bool] | None = None
) -> ShadedFrame:
    """Every character shaded, then composited by depth (``should_stop`` is asked
    before each character; True raises ``FrameStopped``)."""
    shaded = []
    for character in characters:
        if should_stop is not None and should_stop():
            raise FrameStopped
        shaded.append(np.asarray(character.shade(character.passes), np.float32))
    return composite_by_depth(characters, shaded)


def composite_by_depth(characters: list[CharacterFrame], shaded: list[np.ndarray]) -> ShadedFrame:
    """Shaded characters over one another, nearest in front, pixel by pixel.

    Where a character's surface is (occupancy > 0) its depth pass orders it; where only its
    shaded outline reaches (alpha past the silhouette), its median depth does. Passes come
    from the nearest surface at each pixel.
    """
    if not characters:
        raise ValueError("no characters to composite")
    height, width = shaded[0].shape[:2]
    count = len(characters)
    occupied = np.stack([occupancy(c.passes) for c in characters])
    surface = np.full((count, height, width), np.inf, np.float32)
    key = np.full((count, height, width), np.inf, np.float32)
    for i, (character, rgba) in enumerate(zip(characters, shaded)):
        depth = character.passes.get("depth")
        if depth is None:  # one character (or no depths): keep the given order
            depth = np.full((height, width), float(i), np.float32)
        else:
            depth = depth[..., 0]
        surface[i] = np.where(occupied[i], depth, np.inf)
        seen = depth[occupied[i]]
        median = float(np.median(seen)) if seen.size else float(i)
        key[i] = np.where(occupied[i], depth, np.where(rgba[..., 3] > 0, median, np.inf))
    order = np.argsort(key, axis=0, kind="stable")  # nearest first
    stack = np.stack(shaded)
    out = np.zeros((height, width, 4), np.float32)
    rows, cols = np.indices((height, width))
    for rank in range(count):
        layer = stack[order[rank], rows, cols]
        out += layer * (1.0 - out[..., 3:4])
    nearest = np.where(np.isfinite(surface).any(0), np.argmin(surface, axis=0), -1)
    passes = {}
    names = set.intersection(*(set(c.passes) for c in characters))
    for name in sorted(names):
        values = np.stack([c.passes[name] for c in characters])
        picked = values[np.maximum(nearest, 0), rows, cols]
        passes[name] = np.where((nearest >= 0)[..., None], picked, 0.0).astype(np.float32)
    return ShadedFrame(np.clip(out, 0.0, 1.0), passes, nearest)


# ------------------------------------------------------------------- sessions, reused

_sessions: dict[tuple, ShadingSession] = {}
_sessions_lock = threading.Lock()


def session_for(
    settings: dict, images: np.ndarray, udps: np.ndarray | None = None
) -> ShadingSession:
    """The ``ShadingSession`` for a sheet (and its views' UDPs, when it has them: the
    guided shader) under these settings, reused from frame to frame and render to render
    (the engine is made anew for every frame)."""
    settings_key = tuple(sorted((k, str(v)) for k, v in settings.items()))
    key = (settings_key, protocol.sheet_id(images, udps))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            if len(_sessions) > 32:
                _sessions.clear()
            session = _sessions[key] = ShadingSession(settings, images, udps)
        return session


def anr_session_for(settings: dict, weights: bytes, identity: int) -> AnrSession:
    """The ``AnrSession`` of an ANR model (its file's bytes) and identity, reused."""
    digest = hashlib.sha256(weights).hexdigest()
    key = (tuple(sorted((k, str(v)) for k, v in settings.items())), "anr", digest, identity)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            if len(_sessions) > 32:
                _sessions.clear()
            session = _sessions[key] = AnrSession(settings, weights, identity)
        return session
