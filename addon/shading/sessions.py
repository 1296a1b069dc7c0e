"""The shader as the operators meet it: a client picked from the preferences, and
sessions that upload a sheet (an ANR model, a portrait) once and then shade frame after
frame from worker threads.

``client_for(mode, ...)`` gives the in-process, local-service or remote client (cached,
so a loaded model or a started service is reused between operator runs);
``test_connection`` connects as the operators would and records the outcome in
``connection.status``. Nothing here touches ``bpy``."""

from __future__ import annotations

import threading

import numpy as np

from ...errors import AniRenderError
from ...service import protocol
from ..runtime.location import service_python
from .clients import HttpClient, InProcessClient, ShaderClient, as_portrait
from .connection import status
from .local_service import local_service

_clients: dict[tuple, ShaderClient] = {}


def client_for(mode: str, **settings) -> ShaderClient:
    """The client for a service mode (``IN_PROCESS``, ``LOCAL``, ``REMOTE``), cached so
    a loaded model or a started service is reused between operator runs."""
    if mode == "IN_PROCESS":
        weights, reenact_weights = settings.get("weights"), settings.get("reenact_weights")
        key = (mode, weights or None, reenact_weights or None)
        if key not in _clients:
            _clients[key] = InProcessClient(weights, reenact_weights=reenact_weights)
        return _clients[key]
    if mode == "REMOTE":
        return HttpClient(settings.get("remote_url") or "", settings.get("token"))
    if mode == "LOCAL":
        return local_service(**settings, start=True).client()
    raise AniRenderError(f"Unknown service mode '{mode}'.")


def settings_from(prefs) -> dict:
    """Plain settings from the add-on preferences (None: run in process)."""
    if prefs is None:
        return {"mode": "IN_PROCESS"}
    return {
        "mode": prefs.service_mode,
        "python_path": service_python(prefs.python_path),
        "local_port": prefs.local_port,
        "remote_url": prefs.remote_url,
        "token": prefs.token,
        "weights": prefs.weights,
    }


def test_connection(settings: dict) -> dict:
    """Connect as the operators would; records and returns the service's info."""
    settings = dict(settings)
    mode = settings.pop("mode")
    try:
        info = client_for(mode, **settings).info()
    except AniRenderError as exc:
        status.update(text=str(exc), ok=False)
        raise
    conr = info.get("models", {}).get("conr", {})
    status.update(
        text=f"Connected: {info.get('device', '?')}, weights {conr.get('weights', '?')}",
        ok=True,
    )
    return info


#: how a report names the shader a session paints with
SHADER_WORDS = {
    "guided": "guided shader: every sheet view has its UDP",
    "conr": "image-only CoNR: not every sheet view has a UDP",
}


class ShadingSession:
    """One character sheet, shaded frame after frame from worker threads.

    The client is made (a local service started) and the sheet uploaded on the first
    ``shade`` call, in a worker thread, so the operator never blocks Blender for it.
    """

    def __init__(self, settings: dict, images: np.ndarray, udps: np.ndarray | None = None):
        self.settings = dict(settings)
        self.images = images
        self.udps = udps  # the views' own UDPs: the guided shader paints; None: CoNR
        self.shader = "guided" if udps is not None else "conr"
        self.client: ShaderClient | None = None
        self.sheet_id: str | None = None
        self._lock = threading.Lock()

    def shade(self, udp: np.ndarray) -> np.ndarray:
        with self._lock:
            if self.client is None:
                settings = dict(self.settings)
                self.client = client_for(settings.pop("mode"), **settings)
            if self.sheet_id is None:
                self.sheet_id = self.client.upload_sheet(self.images, self.udps)
        return self.client.shade(self.sheet_id, udp)


class AnrSession:
    """One ANR model and identity, shaded frame after frame from worker threads (the
    client is made and the model uploaded on the first call, in a worker thread)."""

    def __init__(self, settings: dict, weights: bytes, identity: int = 0):
        self.settings = dict(settings)
        self.weights = weights
        self.identity = int(identity)
        self.client: ShaderClient | None = None
        self.model_id: str | None = None
        self._lock = threading.Lock()

    def shade(self, uv: np.ndarray, normal: np.ndarray) -> np.ndarray:
        with self._lock:
            if self.client is None:
                settings = dict(self.settings)
                self.client = client_for(settings.pop("mode"), **settings)
            if self.model_id is None:
                self.model_id = self.client.upload_anr(self.weights)
        return self.client.shade_anr(self.model_id, self.identity, uv, normal)


class ReenactSession:
    """One portrait at a time, reenacted from worker threads (live preview, pose
    animation): the client is made (a local service started) on the first call, in the
    worker thread, and a portrait is uploaded again only when its pixels change."""

    def __init__(self, settings: dict):
        self.settings = dict(settings)
        self.client: ShaderClient | None = None
        self._uploaded: tuple[str, str] | None = None  # (content id, service id)
        self._lock = threading.Lock()

    def reenact(self, portrait: np.ndarray, poses, mirror_average: bool = False) -> np.ndarray:
        """uint8 (H, W, 3|4) + poses (N, 20) -> premultiplied float32 (N, H, W, 4)."""
        portrait = protocol.check_portrait(as_portrait(portrait))
        key = protocol.portrait_id(portrait)
        with self._lock:
            if self.client is None:
                settings = dict(self.settings)
                self.client = client_for(settings.pop("mode"), **settings)
            if self._uploaded is None or self._uploaded[0] != key:
                self._uploaded = (key, self.client.upload_portrait(portrait))
            portrait_id = self._uploaded[1]
        return self.client.reenact(portrait_id, poses, mirror_average)
