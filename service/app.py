"""The HTTP face of the shader service (FastAPI). The wire format is in ``protocol``.

Every request passes gates before a handler sees it: the Bearer token (when the service
has one); on a loopback bind, a loopback ``Host`` and, when a browser sends one, a
loopback ``Origin`` (403: a web page, even through DNS rebinding, cannot drive the
service); the npz content type on every POST (415: a page's "simple" cross-site POST
cannot carry it); and the size limit (413 past ``max_request_bytes``, checked on the
declared length and again while the body streams in). Handlers validate arrays with
``protocol`` (400 with a message) and hand frames to the ``ShadingQueue``.

When several copies of the app serve one address (Ray Serve replicas,
``service.ray_serve``), a ``shared`` directory makes what a client uploaded to one copy
(a sheet, an ANR model, a portrait) usable on all: uploads are published there by kind
and id, and a copy that has not prepared one yet fetches it from there and prepares it
(encodes the sheet, loads the model, prepares the portrait) before using it. Without one
(the plain service) an unknown id is a 404 and the client uploads it again.
"""

from __future__ import annotations

import asyncio
import hmac
import platform

import numpy as np
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from ..errors import AniRenderError
from . import protocol
from .portraits import PortraitLibrary, UnknownPortrait
from .queue import QueueStopped, ShadingQueue, UnknownJob, UnknownSheet

API = "/v1"
_NPZ_BODY = {
    "requestBody": {
        "required": True,
        "content": {protocol.NPZ_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_NPZ_ANSWER = {"content": {protocol.NPZ_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
_ERROR = {"description": "JSON {error: message}"}
_ERRORS = {400: _ERROR, 401: _ERROR, 403: _ERROR, 404: _ERROR, 413: _ERROR, 415: _ERROR}
#: the names a loopback service answers to (``Host`` and ``Origin``)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client hung up (mid-upload, or while its frames waited)."""


#: how often a request waiting for its frames checks that its client is still there
DISCONNECT_POLL_SECONDS = 0.2
#: status logged for a request whose client hung up (nobody reads the answer)
CLIENT_GONE = 499


def create_app(
    queue: ShadingQueue,
    token: str | None = None,
    max_request_bytes: int = 256 << 20,
    info: dict | None = None,
    portraits: PortraitLibrary | None = None,
    shared=None,
    jobs_refused: str = "",
    local_only: bool = False,
) -> FastAPI:
    """The FastAPI app around a started ``ShadingQueue`` (and a ``PortraitLibrary`` for
    reenactment: the shipped weights, loaded on first use, unless one is given).

    ``shared``: optional, with ``async publish(kind, key, payload) -> bool`` (True: it was
    there already, so the upload counts as cached), ``async fetch(kind,
    key) -> payload | None`` and ``async forget(kind, key) -> bool`` (kinds: "sheet",
    "anr", "portrait"); what every copy of the app can read (the module's contract).
    ``jobs_refused``: when set, ``POST /v1/jobs`` answers 400 with this message (several
    copies of the app: a job would live on one copy, and polls reach any).
    ``local_only`` (a loopback bind): requests must name a loopback ``Host``/``Origin``."""
    app = FastAPI(
        title="AniRender neural shader service",
        version=str(protocol.VERSION),
        description=protocol.__doc__,
    )
    app.state.queue = queue
    portraits = portraits or PortraitLibrary(device=(info or {}).get("device", "cpu"))
    app.state.portraits = portraits
    static_info = dict(info or {})

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def refusal(request: Request) -> JSONResponse | None:
        """The gates (module docstring): the answer that refuses the request, or None."""
        if token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "Missing or wrong service token (Authorization: Bearer ...).")
        if local_only:
            refused = _foreign_name(request.headers)
            if refused:
                return error(403, refused)
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != protocol.NPZ_TYPE:
                return error(
                    415,
                    f"POST bodies are {protocol.NPZ_TYPE} (numpy.savez); got "
                    f"{kind or 'no Content-Type'}. Send the header Content-Type: "
                    f"{protocol.NPZ_TYPE}.",
                )
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > max_request_bytes
            except ValueError:
                return error(400, "Content-Length is not a number.")
            if too_large:
                return error(413, _too_large_message(max_request_bytes))
        return None

    # a plain ASGI middleware, not @app.middleware: that one wraps ``receive`` so that a
    # handler never hears that its client hung up (``Request.is_disconnected``)
    app.add_middleware(_Gates, refusal=refusal)

    @app.exception_handler(UnknownSheet)
    @app.exception_handler(UnknownJob)
    @app.exception_handler(UnknownPortrait)
    async def not_found(request, exc):
        return error(404, str(exc))

    @app.exception_handler(QueueStopped)
    async def stopping(request, exc):
        return error(503, str(exc))

    @app.exception_handler(AniRenderError)
    async def bad_request(request, exc):
        return error(400, str(exc))

    abandoned = {"requests": 0}  # requests whose client hung up before the answer

    @app.exception_handler(_ClientGone)
    async def client_gone(request, exc):
        abandoned["requests"] += 1
        return Response(status_code=CLIENT_GONE)

    @app.exception_handler(_TooLarge)
    async def too_large(request, exc):
        return error(413, _too_large_message(max_request_bytes))

    async def read_arrays(request: Request, names: tuple[str, ...], optional=()) -> dict:
        from starlette.requests import ClientDisconnect

        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_request_bytes:
                    raise _TooLarge()
                chunks.append(chunk)
        except ClientDisconnect:
            raise _ClientGone() from None
        body = b"".join(chunks)
        if not body:
            raise protocol.WireError(f"The request needs an .npz body with {', '.join(names)}.")
        return await asyncio.to_thread(
            protocol.unpack, body, names, 4 * max_request_bytes, tuple(optional)
        )

    def client_of(request: Request) -> str:
        """Whose work this is, for the queue's turns: the client's own name when it sends
        one (``X-AniRender-Client``), else its address and port (one connection)."""
        named = request.headers.get(protocol.CLIENT_HEADER, "").strip()[:64]
        if named:
            return "name:" + named
        peer = request.client
        return f"peer:{peer.host}:{peer.port}" if peer else "peer:unknown"

    async def while_connected(request: Request, future):
        """The result of a queue future; if the client hangs up first, the future is
        cancelled, so its frames still waiting are dropped unshaded."""
        waiting = asyncio.wrap_future(future)
        while not waiting.done():
            if await request.is_disconnected():
                future.cancel()
                raise _ClientGone()
            await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_SECONDS)
        return waiting.result()

    def npz(**arrays) -> Response:
        return Response(protocol.pack(**arrays), media_type=protocol.NPZ_TYPE)

    async def known_sheet(sheet_id: str):
        """The cached sheet; else, from the shared directory, encoded here first."""
        try:
            return queue.sheet(sheet_id)
        except UnknownSheet:
            images = await shared.fetch("sheet", sheet_id) if shared else None
            if images is None:
                raise
        udps = None
        if isinstance(images, bytes):  # published with its views' UDPs (upload_sheet)
            arrays = protocol.unpack(images, ("images", "udps"), 4 * len(images))
            images, udps = arrays["images"], arrays["udps"]
        sheet, _ = await asyncio.wrap_future(queue.add_sheet(sheet_id, images, udps=udps))
        return sheet

    # ------------------------------------------------------------------ endpoints
    @app.get(f"{API}/health", responses={401: _ERROR})
    def health() -> dict:
        """Liveness: the service answers and its shading worker runs."""
        return {"status": "ok", "protocol": protocol.VERSION}

    @app.get(f"{API}/info", responses={401: _ERROR})
    def service_info() -> dict:
        """Device, model, cached sheets, queue statistics and software versions."""
        return {
            **static_info,
            "protocol": protocol.VERSION,
            "max_request_bytes": max_request_bytes,
            "max_batch": queue.max_batch,
            "queue_depth": queue.depth,
            "sheet_cache": {"bytes": queue.sheet_bytes, "max_bytes": queue.max_sheet_bytes},
            "sheets": [
                {"sheet_id": s.sheet_id, "views": s.views, "size": s.size, "shader": s.shader}
                for s in queue.sheets()
            ],
            "stats": {**queue.stats, "requests_abandoned": abandoned["requests"]},
            "reenact": {
                "weights": portraits.weights_name,
                "portraits": len(portraits.portraits()),
                "max_poses": protocol.MAX_POSES,
                "stats": dict(portraits.stats),
            },
            "versions": {
                **static_info.get("versions", {}),
                "python": platform.python_version(),
                "numpy": np.__version__,
            },
        }

    @app.post(f"{API}/sheets", openapi_extra=_NPZ_BODY, responses=_ERRORS)
    async def upload_sheet(request: Request) -> dict:
        """Upload a character sheet (``images``, optionally ``udps``: each view's UDP); its
        encoding is cached under the id. With UDPs the guided shader paints, else CoNR."""
        arrays = await read_arrays(request, ("images",), optional=("udps",))
        images = protocol.check_sheet(arrays["images"])
        udps = arrays.get("udps")
        if udps is not None:
            udps = await asyncio.to_thread(protocol.check_sheet_udps, udps, images)
        sheet_id = protocol.sheet_id(images, udps)
        future = queue.add_sheet(sheet_id, images, client_of(request), udps=udps)
        sheet, cached = await asyncio.wrap_future(future)
        if shared:
            # a sheet with UDPs travels as one .npz (a sized payload for the directory)
            payload = images if udps is None else protocol.pack(images=images, udps=udps)
            cached = await shared.publish("sheet", sheet_id, payload) or cached
        return {**describe_sheet(sheet), "cached": cached}

    def describe_sheet(sheet) -> dict:
        return {
            "sheet_id": sheet.sheet_id,
            "views": sheet.views,
            "size": sheet.size,
            "shader": sheet.shader,
        }

    @app.get(f"{API}/sheets/{{sheet_id}}", responses=_ERRORS)
    async def get_sheet(sheet_id: str) -> dict:
        return describe_sheet(await known_sheet(sheet_id))

    @app.delete(f"{API}/sheets/{{sheet_id}}", responses=_ERRORS)
    async def delete_sheet(sheet_id: str) -> dict:
        known = await shared.forget("sheet", sheet_id) if shared else False
        try:
            queue.forget_sheet(sheet_id)
        except UnknownSheet:
            if not known:
                raise
        return {"sheet_id": sheet_id, "deleted": True}

    @app.post(
        f"{API}/sheets/{{sheet_id}}/shade",
        openapi_extra=_NPZ_BODY,
        responses={200: _NPZ_ANSWER, **_ERRORS},
        response_class=Response,
    )
    async def shade(sheet_id: str, request: Request) -> Response:
        """Shade ``udp`` frames with a sheet; answers ``rgba`` (premultiplied)."""
        sheet = await known_sheet(sheet_id)
        udp = (await read_arrays(request, ("udp",)))["udp"]
        udp = await asyncio.to_thread(protocol.check_udp, udp, sheet.size)
        future = queue.shade(sheet_id, udp, client_of(request))
        rgba = await while_connected(request, future)
        answer = await asyncio.to_thread(npz, rgba=rgba)
        answer.headers[protocol.SHADING_SECONDS] = f"{future.shading_seconds:.6f}"
        answer.headers[protocol.SHADER] = sheet.shader
        return answer

    @app.post(f"{API}/jobs", openapi_extra=_NPZ_BODY, responses=_ERRORS)
    async def submit_job(request: Request, sheet_id: str = Query(...)) -> dict:
        """Submit a whole sequence (``udp`` + ``frames``); poll it, fetch results, cancel."""
        if jobs_refused:
            raise AniRenderError(jobs_refused)
        sheet = await known_sheet(sheet_id)
        arrays = await read_arrays(request, ("udp", "frames"))
        udp = await asyncio.to_thread(protocol.check_udp, arrays["udp"], sheet.size)
        frames = protocol.check_frames(arrays["frames"], len(udp))
        return queue.submit_job(sheet_id, udp, frames, client_of(request)).progress()

    @app.get(f"{API}/jobs/{{job_id}}", responses=_ERRORS)
    def job_progress(job_id: str) -> dict:
        return queue.job(job_id).progress()

    @app.get(
        f"{API}/jobs/{{job_id}}/results",
        responses={200: _NPZ_ANSWER, **_ERRORS},
        response_class=Response,
    )
    def job_results(
        job_id: str, start: int = Query(0, ge=0), limit: int = Query(16, ge=1, le=256)
    ) -> Response:
        """The finished frames among positions ``start`` .. ``start + limit - 1``."""
        job = queue.job(job_id)
        done = sorted(i for i in list(job.results) if start <= i < start + limit)
        size = job.size
        rgba = np.stack([job.results[i] for i in done]) if done else np.zeros((0, size, size, 4))
        return npz(
            index=np.array(done, dtype=np.int64),
            frames=job.frames[done] if done else np.zeros(0, np.int64),
            rgba=rgba.astype(np.float32, copy=False),
        )

    @app.delete(f"{API}/jobs/{{job_id}}", responses=_ERRORS)
    def cancel_job(job_id: str) -> dict:
        return queue.cancel_job(job_id).progress()

    # ANR: per-character models (``weights``: the bytes of an ANR safetensors file as
    # uint8), shaded from UV + normal passes; loaded lazily, kept by content id
    def anr_library():
        if getattr(app.state, "anr", None) is None:
            # torch: loaded with the first ANR upload
            from .anr_models import AnrLibrary

            app.state.anr = AnrLibrary(device=static_info.get("device", "cpu"))
        return app.state.anr

    async def anr_model(model_id: str) -> dict:
        """The loaded model's description; else, from the shared directory, loaded here."""
        try:
            return anr_library().describe(model_id)
        except KeyError:
            weights = await shared.fetch("anr", model_id) if shared else None
            if weights is None:
                raise UnknownSheet(f"Unknown ANR model '{model_id}'; upload it again.") from None
        await asyncio.to_thread(anr_library().add, weights)
        return anr_library().describe(model_id)

    @app.post(f"{API}/anr", openapi_extra=_NPZ_BODY, responses=_ERRORS)
    async def upload_anr(request: Request) -> dict:
        """Upload an ANR model (``weights``: uint8 bytes of its safetensors file)."""
        weights = (await read_arrays(request, ("weights",)))["weights"]
        if weights.dtype != np.uint8 or weights.ndim != 1:
            raise protocol.WireError("ANR 'weights' are the file's bytes: a 1-D uint8 array.")
        key, model, cached = await asyncio.to_thread(anr_library().add, weights.tobytes())
        if shared:
            cached = await shared.publish("anr", key, weights.tobytes()) or cached
        return {"model_id": key, "identities": model.config.names(), "cached": cached}

    @app.post(
        f"{API}/anr/{{model_id}}/shade",
        openapi_extra=_NPZ_BODY,
        responses={200: _NPZ_ANSWER, **_ERRORS},
        response_class=Response,
    )
    async def shade_anr(
        model_id: str, request: Request, identity: int = Query(0, ge=0, le=1024)
    ) -> Response:
        """Shade ``uv`` + ``normal`` passes with an ANR model; answers ``rgba``."""
        await anr_model(model_id)
        arrays = await read_arrays(request, ("uv", "normal"))
        try:
            rgba = await asyncio.to_thread(
                anr_library().render, model_id, identity, arrays["uv"], arrays["normal"]
            )
        except KeyError:
            raise UnknownSheet(f"Unknown ANR model '{model_id}'; upload it again.") from None
        return await asyncio.to_thread(npz, rgba=rgba)

    # reenactment: a portrait (uint8 RGBA) uploaded once, then posed with 20-value vectors
    def portrait_info(portrait, **extra) -> dict:
        return {
            "portrait_id": portrait.portrait_id,
            "width": portrait.width,
            "height": portrait.height,
            **extra,
        }

    async def known_portrait(portrait_id: str):
        """The prepared portrait; else, from the shared directory, prepared here first."""
        try:
            return portraits.portrait(portrait_id)
        except UnknownPortrait:
            image = await shared.fetch("portrait", portrait_id) if shared else None
            if image is None:
                raise
        portrait, _ = await asyncio.wrap_future(portraits.add(image))
        return portrait

    @app.post(f"{API}/portraits", openapi_extra=_NPZ_BODY, responses=_ERRORS)
    async def upload_portrait(request: Request) -> dict:
        """Upload a portrait (``portrait``: uint8 H x W x 4); cached under its content id."""
        image = protocol.check_portrait((await read_arrays(request, ("portrait",)))["portrait"])
        portrait, cached = await asyncio.wrap_future(portraits.add(image))
        if shared:
            cached = await shared.publish("portrait", portrait.portrait_id, image) or cached
        return portrait_info(portrait, cached=cached)

    @app.get(f"{API}/portraits/{{portrait_id}}", responses=_ERRORS)
    async def get_portrait(portrait_id: str) -> dict:
        return portrait_info(await known_portrait(portrait_id))

    @app.delete(f"{API}/portraits/{{portrait_id}}", responses=_ERRORS)
    async def delete_portrait(portrait_id: str) -> dict:
        known = await shared.forget("portrait", portrait_id) if shared else False
        try:
            portraits.forget(portrait_id)
        except UnknownPortrait:
            if not known:
                raise
        return {"portrait_id": portrait_id, "deleted": True}

    @app.post(
        f"{API}/portraits/{{portrait_id}}/reenact",
        openapi_extra=_NPZ_BODY,
        responses={200: _NPZ_ANSWER, **_ERRORS},
        response_class=Response,
    )
    async def reenact(portrait_id: str, request: Request) -> Response:
        """Reenact a portrait with ``poses`` (float32 N x 20; optional ``mirror``, one
        bool: average with the mirrored face, two passes); answers ``rgba``
        (premultiplied, the portrait's size)."""
        portrait = await known_portrait(portrait_id)
        arrays = await read_arrays(request, ("poses",), optional=("mirror",))
        poses = protocol.check_poses(arrays["poses"], portrait.width * portrait.height)
        mirror = protocol.check_flag(arrays.get("mirror"), "mirror")
        rgba = await asyncio.wrap_future(portraits.reenact(portrait_id, poses, mirror))
        return await asyncio.to_thread(npz, rgba=rgba)

    return app


class _Gates:
    """ASGI middleware: answers an HTTP request with ``refusal(request)`` when that is
    not None, else passes it on untouched."""

    def __init__(self, app, refusal):
        self.app = app
        self.refusal = refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            answer = self.refusal(Request(scope))
            if answer is not None:
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(value: str) -> str:
    """``127.0.0.1:8765`` -> ``127.0.0.1``; ``[::1]:8765`` -> ``::1``; lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _foreign_name(headers) -> str | None:
    """Why a request to a loopback service is refused (a foreign Host or Origin), or None."""
    from urllib.parse import urlsplit

    host = headers.get("host")
    if host is not None and _host_name(host) not in LOOPBACK_NAMES:
        return (
            f"This service on 127.0.0.1 answers only requests addressed to this computer; "
            f"the Host header says {host!r}. Use http://127.0.0.1:<port>."
        )
    origin = headers.get("origin")
    if origin is not None:
        try:
            name = urlsplit(origin).hostname or ""
        except ValueError:
            name = ""
        if name not in LOOPBACK_NAMES:
            return f"A web page from {origin!r} may not use the shader service on this computer."
    return None


def _too_large_message(limit: int) -> str:
    return (
        f"The request is larger than the service accepts ({limit / 2**20:.0f} MiB). Send fewer "
        "frames per request, or start the service with a larger --max-request-mb."
    )
