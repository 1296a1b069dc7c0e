"""``anirender serve``: load CoNR, start the shading worker, serve HTTP with uvicorn.

Head reenactment (``/v1/portraits``) uses the shipped small model unless
``--reenact-weights`` names another; a named file is loaded at start, so a bad path
stops the service at once instead of failing the first request.

The socket is bound before uvicorn starts, so ``--port 0`` works: the service prints
``ANIRENDER_SERVICE_PORT=<port>`` on its own line (flushed) once it listens, which is what
the add-on's local-service launcher waits for.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading

from ..errors import AniRenderError
from ..models.weights import load_conr, resolve_weights
from . import protocol
from .portraits import PortraitLibrary
from .queue import ShadingQueue
from .sheet_shaders import SheetShaders


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise AniRenderError("--device cuda was asked for, but torch sees no CUDA GPU here.")
    return name


def refuse_open_host_without_token(host: str, token: str | None) -> None:
    """The service binds off loopback only with a token (plain and Ray Serve alike)."""
    if not is_loopback(host) and not token:
        raise AniRenderError(
            f"Refusing to listen on {host} without a token: anyone on the network could use "
            f"it. Pass --token (or set {protocol.TOKEN_ENV}), or use --host 127.0.0.1."
        )


def build_queue(
    weights: str | None, device: str, max_batch: int, max_cache_bytes: int | None = 2 << 30
):
    """Load the model and start a ``ShadingQueue`` around it; also the info it reports."""
    import numpy as np
    import torch

    device = pick_device(device)
    path = resolve_weights(weights)
    model = load_conr(str(path), device=device)
    config = model.config
    info = {
        "service": "anirender",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "models": {
            "conr": {
                "weights": path.name,
                "config": {
                    "width": config.width,
                    "shader_channels": config.shader_channels,
                    "flow_groups": config.flow_groups,
                },
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        },
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    # torch: the guided shader's module, with the model it serves
    from ..models.guided import SHIPPED_GUIDED, load_guided

    info["models"]["guided"] = {
        "weights": SHIPPED_GUIDED.name,
        "used_for": "sheets uploaded with each view's UDP",
    }
    shaders = SheetShaders(model, load_guided=lambda: load_guided(device=device))
    queue = ShadingQueue(shaders, max_batch=max_batch, max_sheet_bytes=max_cache_bytes)
    return queue.start(), info


def serve(
    host: str = "127.0.0.1",
    port: int = protocol.DEFAULT_PORT,
    device: str = "auto",
    token: str | None = None,
    weights: str | None = None,
    max_request_mb: float = 256,
    max_batch: int = 8,
    exit_with_stdin: bool = False,
    reenact_weights: str | None = None,
    max_cache_mb: float = 2048,
) -> None:
    import uvicorn

    # fastapi: the app is built when serving starts, not for --help
    from .app import create_app

    refuse_open_host_without_token(host, token)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AniRenderError(
            f"Cannot listen on {host}:{port} ({exc.strerror}); another program may use the "
            "port. Pick another with --port (0 picks a free one)."
        ) from exc
    portraits = None
    try:
        queue, info = build_queue(weights, device, max_batch, int(max_cache_mb * 2**20))
        portraits = PortraitLibrary(reenact_weights, device=info["device"], max_batch=max_batch)
        if reenact_weights:
            portraits.load()
    except BaseException:
        sock.close()
        if portraits is not None:
            portraits.stop()
        raise
    info["models"]["reenact"] = {"weights": portraits.weights_name}
    app = create_app(
        queue,
        token=token,
        max_request_bytes=int(max_request_mb * 2**20),
        info=info,
        portraits=portraits,
        local_only=is_loopback(host),
    )
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    sock.listen(128)  # connections wait in the backlog until uvicorn takes over
    bound = sock.getsockname()[1]
    print(f"{protocol.PORT_LINE}{bound}", flush=True)
    print(f"anirender service on http://{host}:{bound} ({info['device']})", flush=True)
    if exit_with_stdin:

        def stop():
            server.should_exit = True

        threading.Thread(target=exit_on_eof, args=(stop,), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        queue.stop()
        portraits.stop()
        sock.close()


def exit_on_eof(stop) -> None:
    """Call ``stop()`` when the parent closes our stdin (or dies): no orphaned services."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop()
