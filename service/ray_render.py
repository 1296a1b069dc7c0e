"""``anirender render --ray``: the chunks of ``service.render_chunks`` as Ray tasks.

One Ray task per chunk (one CPU each, or ``gpus`` GPUs), each rendering its chunk in a
worker process with ``bpy`` (``render_chunk``) into the output folder, which on a real
cluster is shared storage every node mounts at the same path. A task whose worker dies
(``ChunkCrashed``) or whose Ray worker or node is lost is run again, up to ``retries``
times; the retry keeps the frames the dead attempt finished (``--resume``). An
``AniRenderError`` (missing file, wrong engine) is not retried: it stops the render.

This module imports Ray at the top: only ``anirender render --ray`` imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import ray

from ..errors import AniRenderError
from .render_chunks import ChunkCrashed, frames_text, render_chunk

RETRIES = 3


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or $RAY_ADDRESS; "auto": the one ``ray start``
    began here), or start a local one on 127.0.0.1; True when this call started Ray."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        options = {"address": "local", "include_dashboard": False}
        options["_node_ip_address"] = "127.0.0.1"
    else:
        options = {"address": address}
    try:
        ray.init(**options, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as exc:
        raise AniRenderError(
            f"Cannot reach the Ray cluster at {address} ({exc}). Start it with "
            "`ray start --head`, or check --address / RAY_ADDRESS."
        ) from None
    return True


def render_chunks_on_ray(
    blend: Path,
    chunks: list[list[int]],
    out: str | None,
    scene: str | None,
    on_chunk: Callable[[list[int], list[int]], None],
    retries: int = RETRIES,
    gpus: float = 0.0,
) -> list[int]:
    """Run every chunk as a Ray task; ``on_chunk(chunk, rendered)`` as each finishes
    (any order). Returns all frames rendered, sorted."""
    task = ray.remote(
        num_cpus=1, num_gpus=gpus, max_retries=retries, retry_exceptions=[ChunkCrashed]
    )(render_chunk)
    blend = Path(blend).resolve()
    pending = {task.remote(blend, chunk, out, scene): chunk for chunk in chunks}
    rendered: list[int] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(ready[0])
            try:
                frames = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                if isinstance(cause, AniRenderError):
                    raise AniRenderError(str(cause)) from None
                last = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                raise AniRenderError(
                    f"Frames {frames_text(chunk)} failed {retries + 1} times; the last "
                    f"error: {last}"
                ) from None
            rendered += frames
            on_chunk(chunk, frames)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return sorted(rendered)
