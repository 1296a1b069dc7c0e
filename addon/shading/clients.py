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
  client uploads it again and retries once. A ``shade`` request that failed inside the
  service (a 5xx answer, or the connection dropped mid-request: a Ray Serve replica that
  died) is sent again a few times, since shading the same frames twice gives the same
  frames; a service that does not answer at all is reported at once.
- ``LocalService``: starts ``python -m anirender.cli serve --port 0`` with the
  interpreter from the preferences, reads the port it prints, hands out an
  ``HttpClient`` with a fresh token, and stops the process when Blender quits (atexit)
  or when asked. The service also exits by itself when its stdin closes, so a crashed
  Blender does not leave it behind.

Every method may be called from worker threads; none touches ``bpy``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np

from ...errors import AniRenderError
from ...models import pose_vector
from ...models.weights import load_conr
from ...service import protocol
from ...service.portraits import PortraitLibrary
from ...service.queue import ShadingQueue
from ...service.sheet_shaders import SheetShaders


class ServiceUnavailable(AniRenderError):
    """The service cannot be reached (not started, stopped, killed, wrong URL)."""


class _FailedMidRequest(ServiceUnavailable):
    """A 5xx answer or a connection dropped mid-request: another try may succeed."""


class ShaderClient:
    """The interface every way of shading offers."""

    where = ""

    def info(self) -> dict:
        raise NotImplementedError

    def upload_sheet(self, images: np.ndarray, udps: np.ndarray | None = None) -> str:
        """A character sheet (uint8 (V, H, W, 4)); with ``udps`` (float32 (V, H, W, 4), each
        view's own UDP) the guided shader paints it, else the image-only CoNR."""
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

    def reenact(self, portrait_id: str, poses, mirror_average: bool = False) -> np.ndarray:
        """Pose vectors (N, 20) -> the portrait reenacted: premultiplied float32
        (N, H, W, 4) at the portrait's size. ``mirror_average``: the face and its mirror
        image averaged (two passes)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- in process


class InProcessClient(ShaderClient):
    """The service's own ``ShadingQueue`` in this process: one worker thread owns the
    model, as in the service (torch's CPU threads also run much faster from a worker
    thread than from Blender's main thread on busy machines)."""

    def __init__(self, weights: str | None = None, device: str = "auto", reenact_weights=None):
        self.weights = weights or None
        self.reenact_weights = reenact_weights or None  # None: the shipped model
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

                self._device = device
                shaders = SheetShaders(
                    load_conr(self.weights, device=device),
                    load_guided=lambda: _load_guided(device),
                )
                self._queue = ShadingQueue(shaders).start()
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

    def upload_sheet(self, images: np.ndarray, udps: np.ndarray | None = None) -> str:
        images = protocol.check_sheet(np.asarray(images))
        if udps is not None:
            udps = protocol.check_sheet_udps(np.asarray(udps, dtype=np.float32), images)
        sheet_id = protocol.sheet_id(images, udps)
        sheet, _ = self._shading_queue().add_sheet(sheet_id, images, udps=udps).result()
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
                # torch: only the in-process mode loads it, on first use
                from ...service.anr_models import AnrLibrary
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

                self._portrait_library = PortraitLibrary(self.reenact_weights, device=device)
            return self._portrait_library

    def upload_portrait(self, images: np.ndarray) -> str:
        portrait = protocol.check_portrait(as_portrait(images))
        return self._portraits().add(portrait).result()[0].portrait_id

    def reenact(self, portrait_id: str, poses, mirror_average: bool = False) -> np.ndarray:
        library = self._portraits()
        portrait = library.portrait(portrait_id)
        poses = pose_batch(poses)
        batch = protocol.reenact_batch(portrait.width * portrait.height)
        return np.concatenate(
            [
                library.reenact(
                    portrait_id, protocol.check_poses(poses[i : i + batch]), mirror_average
                ).result()
                for i in range(0, len(poses), batch)
            ]
        )


# ---------------------------------------------------------------------------- HTTP


class HttpClient(ShaderClient):
    #: seconds to wait before each new try of a ``shade`` request that failed mid-request
    retry_waits = (0.5, 1.0, 2.0)

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
        #: this client's name for the service's turns (a busy neighbour cannot starve it)
        self.client_name = uuid.uuid4().hex[:16]

    # plumbing ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, timeout=None):
        headers = {
            "Accept": f"application/json, {protocol.NPZ_TYPE}",
            protocol.CLIENT_HEADER: self.client_name,
        }
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
            if isinstance(reason, (ConnectionResetError, BrokenPipeError)):
                # also http.client.RemoteDisconnected: the service went away mid-request
                raise _FailedMidRequest(
                    f"The service at {self.url} dropped the connection mid-request ({reason})."
                ) from None
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
            return _FailedMidRequest(f"The service at {self.url} failed: {message}")
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

    def upload_sheet(self, images: np.ndarray, udps: np.ndarray | None = None) -> str:
        images = protocol.check_sheet(np.asarray(images))
        arrays = {"images": images}
        if udps is not None:
            arrays["udps"] = np.asarray(udps, dtype=np.float32)
        answer = self._json("POST", "sheets", protocol.pack(**arrays))
        self._sheets[answer["sheet_id"]] = (images, arrays.get("udps"))
        return answer["sheet_id"]

    def shade(self, sheet_id: str, udp: np.ndarray) -> np.ndarray:
        udp = protocol.check_udp(np.asarray(udp, dtype=np.float32))
        body = protocol.pack(udp=udp)
        for wait in (*self.retry_waits, None):
            try:
                rgba = self._shade_once(sheet_id, body)
                break
            except _FailedMidRequest:
                if wait is None:
                    raise
                time.sleep(wait)
        return protocol.check_rgba(rgba, len(udp), udp.shape[1])

    def _shade_once(self, sheet_id: str, body: bytes) -> np.ndarray:
        try:
            return self._arrays("POST", f"sheets/{sheet_id}/shade", ("rgba",), body)["rgba"]
        except _NotFound:
            if sheet_id not in self._sheets:
                raise AniRenderError(
                    f"The service does not know sheet '{sheet_id}'; upload it first."
                ) from None
            self.upload_sheet(*self._sheets[sheet_id])  # the service restarted
            return self._arrays("POST", f"sheets/{sheet_id}/shade", ("rgba",), body)["rgba"]

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

    def reenact(self, portrait_id: str, poses, mirror_average: bool = False) -> np.ndarray:
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
            flags = {"mirror": np.bool_(True)} if mirror_average else {}
            body = protocol.pack(poses=chunk, **flags)
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


def _load_guided(device: str):
    # torch: the guided shader loads with the first sheet whose views carry UDPs
    from ...models.guided import load_guided

    return load_guided(device=device)


def pose_batch(poses) -> np.ndarray:
    """float32 (N, 20) from one pose or many; at least one."""
    poses = np.asarray(poses, np.float32)
    if poses.size == 0 or poses.size % pose_vector.POSE_SIZE:
        raise AniRenderError(
            f"Reenacting needs one or more poses of {pose_vector.POSE_SIZE} values; got an array "
            f"of shape {poses.shape}."
        )
    return poses.reshape(-1, pose_vector.POSE_SIZE)


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


# ------------------------------------------------------------------ from preferences
