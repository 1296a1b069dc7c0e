"""One way to ask for shaded frames, three ways to get them.

``ShaderClient`` is what operators use: ``upload_sheet(images) -> sheet_id``,
``shade(sheet_id, udp) -> rgba``, ``info()``; for head reenactment
``upload_portrait(image) -> portrait_id``, ``reenact(portrait_id, poses) -> rgba``.
Behind it:

- ``InProcessClient``: the networks run inside this Python (needs torch here). The model
  is loaded lazily on first use; this is the one place Blender-side code reaches into
  ``anirender.models``.
- ``HttpClient``: a running service (``anirender serve``), local or remote, Bearer token,
  the numpy-only wire format of ``service.protocol``. Standard library HTTP only, since
  Blender's Python has no httpx. If the service forgot a sheet (it restarted), the
  client uploads it again and retries once.
- ``LocalService``: starts ``python -m anirender.cli serve --port 0`` with the
  interpreter from the preferences, reads the port it prints, hands out an
  ``HttpClient`` with a fresh token, and stops the process when Blender quits (atexit)
  or when asked. The service also exits by itself when its stdin closes, so a crashed
  Blender does not leave it behind.

Every method may be called from worker threads; none touches ``bpy``.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np

from ..errors import AniRenderError
from ..service import protocol


class ServiceUnavailable(AniRenderError):
    """The service cannot be reached (not started, stopped, killed, wrong URL)."""


class ShaderClient:
    """The interface every way of shading offers."""

    where = ""

    def info(self) -> dict:
        raise NotImplementedError

    def upload_sheet(self, images: np.ndarray) -> str:
        raise NotImplementedError

    def shade(self, sheet_id: str, udp: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def upload_anr(self, weights: bytes) -> str:
        """Load an ANR model (the bytes of its safetensors file); returns its id."""
        raise NotImplementedError

    def shade_anr(self, model_id: str, identity: int, uv, normal) -> np.ndarray:
        """UV + normal passes (B, H, W, 4) -> premultiplied RGBA (B, H, W, 4)."""
        raise NotImplementedError

    def upload_portrait(self, images: np.ndarray) -> str:
        """A portrait to reenact (uint8 (H, W, 4) straight RGBA); returns its id."""
        raise NotImplementedError

    def reenact(self, portrait_id: str, poses) -> np.ndarray:
        """Pose vectors (N, 20) -> the portrait reenacted: premultiplied float32
        (N, H, W, 4) at the portrait's size."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- in process


class InProcessClient(ShaderClient):
    """The service's own ``ShadingQueue`` in this process: one worker thread owns the
    model, as in the service (torch's CPU threads also run much faster from a worker
    thread than from Blender's main thread on busy machines)."""

    def __init__(self, weights: str | None = None, device: str = "auto"):
        self.weights = weights or None
        self.device = device
        self.where = "in Blender"
        self.last_shading_seconds = 0.0
        self._queue = None
        self._lock = threading.Lock()

    def _torch_device(self, doing: str) -> str:
        """The torch device to run on ("auto" resolved); a clear error without PyTorch."""
        try:
            import torch
        except ImportError:
            raise AniRenderError(
                f"{doing} in Blender needs PyTorch, which this Python lacks. Choose Local "
                "Service or Remote Service in the AniRender preferences."
            ) from None
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _shading_queue(self):
        with self._lock:
            if self._queue is None:
                device = self._torch_device("Running the networks")
                from ..models.weights import load_conr
                from ..service.queue import ShadingQueue

                self._device = device
                self._queue = ShadingQueue(load_conr(self.weights, device=device)).start()
            return self._queue

    def info(self) -> dict:
        queue = self._shading_queue()
        return {
            "service": "anirender (in process)",
            "device": self._device,
            "models": {"conr": {"weights": str(self.weights or "conr")}},
            "sheets": [{"sheet_id": s.sheet_id, "views": s.views} for s in queue.sheets()],
            "stats": dict(queue.stats),
        }

    def upload_sheet(self, images: np.ndarray) -> str:
        images = protocol.check_sheet(np.asarray(images))
        sheet, _ = self._shading_queue().add_sheet(protocol.sheet_id(images), images).result()
        return sheet.sheet_id

    def shade(self, sheet_id: str, udp: np.ndarray) -> np.ndarray:
        queue = self._shading_queue()
        udp = protocol.check_udp(np.asarray(udp, dtype=np.float32), queue.sheet(sheet_id).size)
        future = queue.shade(sheet_id, udp)
        rgba = future.result()
        self.last_shading_seconds = future.shading_seconds
        return rgba

    def close(self) -> None:
        with self._lock:
            if self._queue is not None:
                self._queue.stop()
                self._queue = None
            if getattr(self, "_portrait_library", None) is not None:
                self._portrait_library.stop()
                self._portrait_library = None

    def _anr(self):
        if getattr(self, "_anr_library", None) is None:
            try:
                from ..models.anr import AnrLibrary
            except ImportError:
                raise AniRenderError(
                    "Running ANR in Blender needs PyTorch, which this Python lacks. Choose "
                    "Local Service or Remote Service in the AniRender preferences."
                ) from None
            self._anr_library = AnrLibrary()
        return self._anr_library

    def upload_anr(self, weights: bytes) -> str:
        return self._anr().add(weights)[0]

    def shade_anr(self, model_id: str, identity: int, uv, normal) -> np.ndarray:
        try:
            return self._anr().render(model_id, identity, uv, normal)
        except KeyError:
            raise AniRenderError(f"Unknown ANR model '{model_id}'; upload it first.") from None

    def _portraits(self):
        """The service's ``PortraitLibrary`` (its own model thread), made on first use."""
        with self._lock:
            if getattr(self, "_portrait_library", None) is None:
                device = self._torch_device("Reenacting portraits")
                from ..service.portraits import PortraitLibrary

                self._portrait_library = PortraitLibrary(device=device)
            return self._portrait_library

    def upload_portrait(self, images: np.ndarray) -> str:
        portrait = protocol.check_portrait(as_portrait(images))
        return self._portraits().add(portrait).result()[0].portrait_id

    def reenact(self, portrait_id: str, poses) -> np.ndarray:
        library = self._portraits()
        portrait = library.portrait(portrait_id)
        poses = pose_batch(poses)
        batch = protocol.reenact_batch(portrait.width * portrait.height)
        return np.concatenate(
            [
                library.reenact(portrait_id, protocol.check_poses(poses[i : i + batch])).result()
                for i in range(0, len(poses), batch)
            ]
        )


# ---------------------------------------------------------------------------- HTTP


class HttpClient(ShaderClient):
    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0):
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise AniRenderError(
                f"The service URL '{url}' must start with http:// or https:// "
                "(for example http://127.0.0.1:8765)."
            )
        self.url = url
        self.where = url
        self.token = token or None
        self.timeout = timeout
        self._sheets: dict[str, np.ndarray] = {}  # kept to upload again after a restart
        self._portrait_images: dict[str, np.ndarray] = {}  # the same for portraits
        #: model seconds of the last ``shade`` answer (what is left of its time is transfer)
        self.last_shading_seconds = 0.0

    # plumbing ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, timeout=None):
        headers = {"Accept": f"application/json, {protocol.NPZ_TYPE}"}
        if body is not None:
            headers["Content-Type"] = protocol.NPZ_TYPE
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url + "/v1/" + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as answer:
                return answer.read(), answer.headers
        except urllib.error.HTTPError as exc:
            raise self._service_error(exc) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnavailable(
                f"The neural shader service at {self.url} does not answer ({reason}). Start it "
                "(AniRender preferences > Start Local Service, or `anirender serve`) and try "
                "again."
            ) from None

    def _service_error(self, exc: urllib.error.HTTPError) -> AniRenderError:
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError, OSError):
            message = exc.reason
        if exc.code == 401:
            return AniRenderError(
                f"The service at {self.url} refused the token. Set the service's token in "
                "the AniRender preferences."
            )
        if exc.code == 404:
            return _NotFound(str(message))
        if exc.code >= 500:
            return ServiceUnavailable(f"The service at {self.url} failed: {message}")
        return AniRenderError(f"The service at {self.url} refused the request: {message}")

    def _json(self, method: str, path: str, body: bytes | None = None, timeout=None) -> dict:
        data, _ = self._request(method, path, body, timeout)
        return json.loads(data)

    def _arrays(self, method, path, names, body=None) -> dict:
        data, headers = self._request(method, path, body)
        kind = headers.get("Content-Type", "")
        if protocol.NPZ_TYPE not in kind:
            raise AniRenderError(f"The service at {self.url} answered {kind!r}, not arrays.")
        self.last_shading_seconds = float(headers.get(protocol.SHADING_SECONDS) or 0.0)
        return protocol.unpack(data, names, limit=max(len(data) * 4, 1 << 20))

    # the interface ----------------------------------------------------------------------
    def health(self) -> dict:
        return self._json("GET", "health", timeout=10)

    def info(self) -> dict:
        return self._json("GET", "info", timeout=10)

    def upload_sheet(self, images: np.ndarray) -> str:
        images = protocol.check_sheet(np.asarray(images))
        answer = self._json("POST", "sheets", protocol.pack(images=images))
        self._sheets[answer["sheet_id"]] = images
        return answer["sheet_id"]

    def shade(self, sheet_id: str, udp: np.ndarray) -> np.ndarray:
        udp = protocol.check_udp(np.asarray(udp, dtype=np.float32))
        body = protocol.pack(udp=udp)
        try:
            rgba = self._arrays("POST", f"sheets/{sheet_id}/shade", ("rgba",), body)["rgba"]
        except _NotFound:
            if sheet_id not in self._sheets:
                raise AniRenderError(
                    f"The service does not know sheet '{sheet_id}'; upload it first."
                ) from None
            self.upload_sheet(self._sheets[sheet_id])  # the service restarted
            rgba = self._arrays("POST", f"sheets/{sheet_id}/shade", ("rgba",), body)["rgba"]
        return protocol.check_rgba(rgba, len(udp), udp.shape[1])

    # whole sequences as service-side jobs -------------------------------------------------
    def submit_sequence(self, sheet_id: str, udp: np.ndarray, frames) -> str:
        """Queue a whole sequence on the service; returns the job id to poll."""
        udp = protocol.check_udp(np.asarray(udp, dtype=np.float32))
        body = protocol.pack(udp=udp, frames=np.asarray(frames, dtype=np.int64))
        return self._json("POST", f"jobs?sheet_id={sheet_id}", body)["job_id"]

    def sequence_progress(self, job_id: str) -> dict:
        return self._json("GET", f"jobs/{job_id}", timeout=30)

    def sequence_results(self, job_id: str, start: int = 0, limit: int = 16) -> dict:
        """The finished frames among positions start .. start + limit - 1: index, frames, rgba."""
        path = f"jobs/{job_id}/results?start={int(start)}&limit={int(limit)}"
        return self._arrays("GET", path, ("index", "frames", "rgba"))

    def cancel_sequence(self, job_id: str) -> dict:
        return self._json("DELETE", f"jobs/{job_id}", timeout=30)

    def upload_anr(self, weights: bytes) -> str:
        body = protocol.pack(weights=np.frombuffer(bytes(weights), dtype=np.uint8))
        answer = self._json("POST", "anr", body)
        self._anr_weights = {**getattr(self, "_anr_weights", {}), answer["model_id"]: weights}
        return answer["model_id"]

    def shade_anr(self, model_id: str, identity: int, uv, normal) -> np.ndarray:
        uv, normal = np.asarray(uv, np.float32), np.asarray(normal, np.float32)
        body = protocol.pack(uv=uv, normal=normal)
        path = f"anr/{model_id}/shade?identity={int(identity)}"
        try:
            rgba = self._arrays("POST", path, ("rgba",), body)["rgba"]
        except _NotFound:
            weights = getattr(self, "_anr_weights", {}).get(model_id)
            if weights is None:
                raise
            self.upload_anr(weights)  # the service restarted
            rgba = self._arrays("POST", path, ("rgba",), body)["rgba"]
        if rgba.dtype != np.float32 or rgba.shape != uv.shape:
            raise AniRenderError(f"The service answered {rgba.dtype} {rgba.shape} for ANR.")
        return rgba

    def upload_portrait(self, images: np.ndarray) -> str:
        portrait = protocol.check_portrait(as_portrait(images))
        answer = self._json("POST", "portraits", protocol.pack(portrait=portrait))
        self._portrait_images[answer["portrait_id"]] = portrait
        return answer["portrait_id"]

    def reenact(self, portrait_id: str, poses) -> np.ndarray:
        poses = pose_batch(poses)
        known = self._portrait_images.get(portrait_id)
        if known is not None:
            pixels = known.shape[0] * known.shape[1]
        else:  # uploaded by another client: ask its size
            try:
                answer = self._json("GET", f"portraits/{portrait_id}", timeout=30)
            except _NotFound:
                raise AniRenderError(
                    f"The service does not know portrait '{portrait_id}'; upload it first."
                ) from None
            pixels = int(answer["width"]) * int(answer["height"])
        batch = protocol.reenact_batch(pixels)
        parts = []
        for i in range(0, len(poses), batch):
            chunk = protocol.check_poses(poses[i : i + batch])
            path = f"portraits/{portrait_id}/reenact"
            body = protocol.pack(poses=chunk)
            try:
                rgba = self._arrays("POST", path, ("rgba",), body)["rgba"]
            except _NotFound:
                if known is None:
                    raise
                self.upload_portrait(known)  # the service restarted
                rgba = self._arrays("POST", path, ("rgba",), body)["rgba"]
            if rgba.dtype != np.float32 or rgba.ndim != 4 or rgba.shape[0] != len(chunk):
                raise AniRenderError(
                    f"The service answered {rgba.dtype} {rgba.shape} for {len(chunk)} poses."
                )
            parts.append(rgba)
        return np.concatenate(parts)


def pose_batch(poses) -> np.ndarray:
    """float32 (N, 20) from one pose or many; at least one."""
    poses = np.asarray(poses, np.float32)
    if poses.size == 0 or poses.size % protocol.POSE_SIZE:
        raise AniRenderError(
            f"Reenacting needs one or more poses of {protocol.POSE_SIZE} values; got an array "
            f"of shape {poses.shape}."
        )
    return poses.reshape(-1, protocol.POSE_SIZE)


def as_portrait(images) -> np.ndarray:
    """uint8 (H, W, 4) from (H, W, 3 or 4) or a batch of one; RGB gets an opaque alpha."""
    image = np.asarray(images)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], 2)
    return image


class _NotFound(AniRenderError):
    pass


# ------------------------------------------------------------------- local service


class LocalService:
    """An ``anirender serve`` child process on 127.0.0.1 with a private token."""

    def __init__(self, python: str | None = None, port: int = 0, weights: str | None = None):
        self.python = python or sys.executable
        self.port = port
        self.weights = weights or None
        self.token = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.bound_port: int | None = None
        self._output: collections.deque = collections.deque(maxlen=40)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 180.0) -> LocalService:
        if self.running:
            return self
        if not os.path.isfile(self.python):
            raise AniRenderError(
                f"The Python interpreter '{self.python}' does not exist. Set one with anirender "
                "and torch installed in the AniRender preferences."
            )
        command = [self.python, "-m", "anirender.service.serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--exit-with-stdin"]
        if self.weights:
            command += ["--weights", self.weights]
        env = dict(os.environ, **{protocol.TOKEN_ENV: self.token, "PYTHONUNBUFFERED": "1"})
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )
        except OSError as exc:
            raise AniRenderError(f"Cannot start the service with {self.python}: {exc}") from None
        found = threading.Event()
        threading.Thread(target=self._read_output, args=(self.process, found), daemon=True).start()
        end = time.monotonic() + timeout
        while not found.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > end:
                tail = "\n".join(list(self._output)[-6:])
                self.stop()
                raise AniRenderError(
                    f"The local service did not start with {self.python}. Its last words:\n"
                    f"{tail or '(nothing)'}"
                )
        _STARTED.add(self)
        status.update(text=f"Local service running on port {self.bound_port}", ok=True)
        return self

    def _read_output(self, process, found):
        for line in process.stdout:
            line = line.rstrip()
            self._output.append(line)
            if line.startswith(protocol.PORT_LINE) and not found.is_set():
                self.bound_port = int(line[len(protocol.PORT_LINE) :])
                found.set()

    def client(self) -> HttpClient:
        if not self.running:
            raise ServiceUnavailable(
                "The local service is not running (it stopped or was never started). "
                "Start it again from the AniRender preferences or re-run the operator."
            )
        return HttpClient(f"http://127.0.0.1:{self.bound_port}", self.token)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        _STARTED.discard(self)
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()  # the service exits when its stdin closes
        except OSError:
            pass
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


_STARTED: set[LocalService] = set()


@atexit.register
def stop_all_local_services() -> None:
    for service in list(_STARTED):
        service.stop()


# ------------------------------------------------------------------ from preferences

_clients: dict[tuple, ShaderClient] = {}
_local: dict[tuple, LocalService] = {}
#: last outcome of "Test connection", shown in the preferences
status = {"text": "not tested", "ok": None}


def client_for(mode: str, **settings) -> ShaderClient:
    """The client for a service mode (``IN_PROCESS``, ``LOCAL``, ``REMOTE``), cached so
    a loaded model or a started service is reused between operator runs."""
    if mode == "IN_PROCESS":
        key = (mode, settings.get("weights") or None)
        if key not in _clients:
            _clients[key] = InProcessClient(settings.get("weights"))
        return _clients[key]
    if mode == "REMOTE":
        return HttpClient(settings.get("remote_url") or "", settings.get("token"))
    if mode == "LOCAL":
        return local_service(**settings, start=True).client()
    raise AniRenderError(f"Unknown service mode '{mode}'.")


def local_service(python_path=None, local_port=0, weights=None, start=False, **_) -> LocalService:
    key = (python_path or sys.executable, int(local_port or 0), weights or None)
    service = _local.get(key)
    if service is None:
        for other in list(_local.values()):  # settings changed: one local service at a time
            other.stop()
        _local.clear()
        service = _local[key] = LocalService(key[0], key[1], key[2])
    if start:
        service.start()
    return service


def stop_local_service() -> bool:
    stopped = False
    for service in list(_local.values()):
        stopped |= service.running
        service.stop()
    _local.clear()
    return stopped


def settings_from(prefs) -> dict:
    """Plain settings from the add-on preferences (None: run in process)."""
    if prefs is None:
        return {"mode": "IN_PROCESS"}
    return {
        "mode": prefs.service_mode,
        "python_path": bpy_path(prefs.python_path),
        "local_port": prefs.local_port,
        "remote_url": prefs.remote_url,
        "token": prefs.token,
        "weights": prefs.weights,
    }


def bpy_path(path: str) -> str:
    path = (path or "").strip()
    return os.path.abspath(os.path.expanduser(path)) if path else ""


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


class ShadingSession:
    """One character sheet, shaded frame after frame from worker threads.

    The client is made (a local service started) and the sheet uploaded on the first
    ``shade`` call, in a worker thread, so the operator never blocks Blender for it.
    """

    def __init__(self, settings: dict, images: np.ndarray):
        self.settings = dict(settings)
        self.images = images
        self.client: ShaderClient | None = None
        self.sheet_id: str | None = None
        self._lock = threading.Lock()

    def shade(self, udp: np.ndarray) -> np.ndarray:
        with self._lock:
            if self.client is None:
                settings = dict(self.settings)
                self.client = client_for(settings.pop("mode"), **settings)
            if self.sheet_id is None:
                self.sheet_id = self.client.upload_sheet(self.images)
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

    def reenact(self, portrait: np.ndarray, poses) -> np.ndarray:
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
        return self.client.reenact(portrait_id, poses)
