"""``anirender serve --ray``: the same FastAPI app as a Ray Serve deployment.

Each replica is a Ray actor that loads CoNR, starts its own ``ShadingQueue`` (one worker
thread that batches the frames of all requests reaching that replica, as in the plain
service) and builds the app with ``service.app.create_app`` behind ``@serve.ingress``:
the same routes, wire format, token rule (a token is required off loopback) and size
limits. Ray Serve's HTTP proxy spreads requests over the replicas, restarts a replica that
dies and, with ``--replicas auto``, adds and removes replicas with the load.

Uploads (sheets, ANR models, portraits): an upload is prepared on the replica it reaches
(the sheet encoded, the model loaded, the portrait prepared) and published to a small Ray
actor, the *upload directory* (named ``<app>-uploads`` in the ``anirender`` namespace,
bounded by bytes, least recently used dropped first). A replica asked to use one it has
not prepared (another replica took the upload, or it was restarted) fetches it from the
directory, prepares it once and carries on; only what the directory no longer holds is a
404, and the client uploads it again as after a restart. Deleting removes it from the
directory and from the replica that took the request; other replicas drop their copy
when their cache needs the room.

Sequence jobs (``/v1/jobs``) would live on the replica that took the submission while
the polls reach any replica, so with more than one replica (or ``auto``) a submission is
refused (400) with a message saying to send ``shade`` requests (the add-on does) or to
run one replica.

Weights are read by every replica from the path the command resolved: on a cluster of
several machines that path must exist on each (the shipped model travels with the
AniRender install; imported weights belong on shared storage).

This module imports Ray at the top: only ``anirender serve --ray`` imports it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import ray
from ray import serve
from ray.serve.exceptions import RayServeException

from ..errors import AniRenderError
from ..models.weights import resolve_weights
from ..words import counted
from . import protocol
from .app import create_app
from .portraits import PortraitLibrary
from .serve import build_queue, exit_on_eof, is_loopback, refuse_open_host_without_token
from .store import LruStore

APP_NAME = "anirender"
NAMESPACE = "anirender"
#: what the upload directory keeps (sheet images, ANR safetensors bytes, portraits)
UPLOAD_DIRECTORY_BYTES = 1 << 30


def _nbytes(payload) -> int:
    return payload.nbytes if hasattr(payload, "nbytes") else len(payload)


@ray.remote(num_cpus=0, max_restarts=-1)
class UploadDirectory:
    """What clients uploaded, by kind ("sheet", "anr", "portrait") and content id,
    readable by every replica (least recently used dropped first past ``max_bytes``). A
    restarted directory is empty: replicas then answer 404 for what they have not
    prepared, and clients upload it again."""

    def __init__(self, max_bytes: int = UPLOAD_DIRECTORY_BYTES):
        self._uploads = LruStore(4096, max_bytes, size_of=_nbytes)

    def publish(self, kind: str, key: str, payload) -> bool:
        """Keep ``payload``; True when it was here already."""
        known = f"{kind}/{key}" in self._uploads
        self._uploads.put(f"{kind}/{key}", payload)
        return known

    def fetch(self, kind: str, key: str):
        return self._uploads.get(f"{kind}/{key}")

    def forget(self, kind: str, key: str) -> bool:
        return self._uploads.pop(f"{kind}/{key}") is not None


class SharedUploads:
    """A replica's view of the upload directory (``create_app``'s ``shared``).

    When the directory cannot be reached (it is restarting), a replica carries on with
    its own caches: publishing is skipped and fetching finds nothing (a 404, so the client
    uploads again)."""

    def __init__(self, name: str):
        self.name = name

    def _directory(self):
        return ray.get_actor(self.name, namespace=NAMESPACE)

    async def publish(self, kind: str, key: str, payload) -> bool:
        try:
            return bool(await self._directory().publish.remote(kind, key, payload))
        except (ValueError, ray.exceptions.RayError):
            return False

    async def fetch(self, kind: str, key: str):
        try:
            return await self._directory().fetch.remote(kind, key)
        except (ValueError, ray.exceptions.RayError):
            return None

    async def forget(self, kind: str, key: str) -> bool:
        try:
            return bool(await self._directory().forget.remote(kind, key))
        except (ValueError, ray.exceptions.RayError):
            return False


@serve.ingress()
class ShaderReplica:
    """One replica: CoNR, its shading queue and portrait library, and the app."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.queue, info = build_queue(
            settings["weights"], settings["device"], settings["max_batch"]
        )
        self.portraits = PortraitLibrary(
            settings["reenact_weights"], device=info["device"], max_batch=settings["max_batch"]
        )
        if settings["reenact_weights"]:
            self.portraits.load()
        info["models"]["reenact"] = {"weights": self.portraits.weights_name}
        context = serve.get_replica_context()
        info["ray"] = {
            "replica": context.replica_id.unique_id,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }
        self.info = info

    def __serve_build_asgi_app__(self):
        return create_app(
            self.queue,
            token=self.settings["token"],
            max_request_bytes=self.settings["max_request_bytes"],
            info=self.info,
            portraits=self.portraits,
            shared=SharedUploads(self.settings["upload_directory"]),
            jobs_refused=self.settings["jobs_refused"],
        )

    def __del__(self):
        self.queue.stop()
        self.portraits.stop()


def replica_options(replicas: str | int, gpus_per_replica: float, max_batch: int) -> dict:
    """``serve.deployment`` options for ``--replicas N|auto`` and ``--gpus-per-replica``."""
    options = {
        # each replica batches in its own queue: let enough requests in to fill a batch
        "max_ongoing_requests": max(8, 4 * max_batch),
        "ray_actor_options": {"num_cpus": 1, "num_gpus": float(gpus_per_replica)},
    }
    if str(replicas) == "auto":
        options["num_replicas"] = "auto"
    else:
        try:
            count = int(replicas)
        except ValueError:
            count = 0
        if count < 1:
            raise AniRenderError(
                f"--replicas takes a number of replicas (1 or more) or 'auto'; got '{replicas}'."
            )
        options["num_replicas"] = count
    return options


def deploy(
    *,
    host: str = "127.0.0.1",
    port: int = protocol.DEFAULT_PORT,
    device: str = "auto",
    token: str | None = None,
    weights: str | None = None,
    max_request_mb: float = 256,
    max_batch: int = 8,
    reenact_weights: str | None = None,
    replicas: str | int = 1,
    gpus_per_replica: float = 0.0,
    app_name: str = APP_NAME,
) -> str:
    """Deploy the shader on the Ray cluster this process is connected to (``ray.init``
    first); returns the service's URL once every replica answers."""
    refuse_open_host_without_token(host, token)
    if gpus_per_replica < 0:
        raise AniRenderError("--gpus-per-replica cannot be negative.")
    if gpus_per_replica > 0 and device == "cpu":
        raise AniRenderError("--gpus-per-replica asks for GPUs, but --device cpu was given.")
    if gpus_per_replica == 0 and device == "cuda":
        raise AniRenderError(
            "--device cuda on Ray needs GPUs reserved for the replicas: add "
            "--gpus-per-replica 1 (or a fraction such as 0.5 to share a GPU)."
        )
    if reenact_weights and not Path(reenact_weights).expanduser().is_file():
        raise AniRenderError(f"Head reenactment weights not found: {reenact_weights}")
    options = replica_options(replicas, gpus_per_replica, max_batch)
    settings = {
        # resolved here, so a wrong name stops the command before any replica starts
        "weights": str(resolve_weights(weights)),
        # a replica uses a GPU only when Ray reserved one for it
        "device": "cuda" if gpus_per_replica > 0 else "cpu",
        "max_batch": max_batch,
        "reenact_weights": str(Path(reenact_weights).expanduser()) if reenact_weights else None,
        "token": token,
        "max_request_bytes": int(max_request_mb * 2**20),
        "upload_directory": f"{app_name}-uploads",
        "jobs_refused": ""
        if options["num_replicas"] == 1
        else (
            "This service runs as several Ray Serve replicas, and a sequence job would "
            "live on only one of them while its polls reach any: send the frames with "
            "shade requests (the add-on does), or serve with --replicas 1."
        ),
    }
    if port == 0:
        port = free_port(host)
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
    UploadDirectory.options(
        name=settings["upload_directory"],
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote()
    deployment = serve.deployment(ShaderReplica, name="shader").options(**options)
    try:
        serve.run(deployment.bind(settings), name=app_name, route_prefix="/", logging_config=quiet)
    except (RuntimeError, RayServeException) as exc:  # the replicas did not start
        raise AniRenderError(
            f"The shader replicas did not start on the Ray cluster: {exc}. The replicas' "
            "logs are in the Ray session folder (/tmp/ray/session_latest/logs on the head)."
        ) from None
    bound = _http_port(port)
    if bound != port:
        print(
            f"Ray Serve already listens on port {bound} on this cluster; --port {port} "
            "does not apply.",
            flush=True,
        )
    return f"http://{_url_host(host)}:{bound}"


def undeploy(app_name: str = APP_NAME) -> None:
    """Delete the app and its upload directory from the cluster."""
    try:
        serve.delete(app_name)
    finally:
        try:
            ray.kill(ray.get_actor(f"{app_name}-uploads", namespace=NAMESPACE))
        except ValueError:
            pass


def serve_with_ray(
    *,
    address: str | None = None,
    exit_with_stdin: bool = False,
    **settings,
) -> None:
    """``anirender serve --ray``: join the cluster at ``address`` (or $RAY_ADDRESS; "auto":
    the one ``ray start`` began on this machine) or start a new local one, deploy, print
    the port line and the URL, and keep the deployment until interrupted (SIGINT,
    SIGTERM, or stdin closing with ``exit_with_stdin``); then delete it, and stop the
    local cluster if this command started it."""
    host = settings.get("host", "127.0.0.1")
    refuse_open_host_without_token(host, settings.get("token"))
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = {}
    if address is None:
        # a cluster of its own ("local": never join one `ray start` left running); for a
        # loopback service the node's address is loopback too (Ray's own ports still
        # listen on every interface, behind Ray's token authentication)
        local = {"address": "local", "include_dashboard": False}
        if is_loopback(host):
            local["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(**(local or {"address": address}), namespace=NAMESPACE, logging_level="WARNING")
    except ConnectionError as exc:
        raise AniRenderError(
            f"Cannot reach the Ray cluster at {address} ({exc}). Start it with "
            "`ray start --head`, or check --address / RAY_ADDRESS."
        ) from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = deploy(**settings)
        print(f"{protocol.PORT_LINE}{url.rsplit(':', 1)[1]}", flush=True)
        print(f"anirender service on {url} (Ray Serve, {_replicas_text(settings)})", flush=True)
        if exit_with_stdin:
            threading.Thread(target=exit_on_eof, args=(stop.set,), daemon=True).start()
        while not stop.wait(1.0):
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            undeploy()
        finally:
            if local:
                serve.shutdown()
            ray.shutdown()


def free_port(host: str) -> int:
    """A port nobody listens on now (Ray Serve's proxy cannot bind port 0 itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _http_port(asked: int) -> int:
    """The port Serve's proxies listen on (an existing Serve keeps its own)."""
    try:
        # private in Ray 2.60 (pinned): the running controller's HTTP options
        from ray.serve.context import _get_global_client

        return int(_get_global_client().http_config.port)
    except Exception:
        return asked


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _replicas_text(settings: dict) -> str:
    replicas = settings.get("replicas", 1)
    gpus = settings.get("gpus_per_replica", 0)
    text = "autoscaling replicas" if str(replicas) == "auto" else counted(int(replicas), "replica")
    return text + (f", {gpus:g} GPU each" if gpus else "")
