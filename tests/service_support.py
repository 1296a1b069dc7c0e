"""Helpers for the service tests: seeded tiny CoNR weights and a real ``anirender serve``.

The service runs as a subprocess (``python -m anirender.cli serve --port 0``) on
127.0.0.1; the port is read from the line it prints. ``running_service`` always stops
what it started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from anirender.service import protocol

SIZE = 128
TINY = {"width": 1 / 16, "shader_channels": 16, "flow_groups": 4}


def make_tiny_weights(path: Path, seed: int = 0) -> Path:
    """A tiny CoNR (same architecture, 1/16 width) with seeded weights, as safetensors."""
    import torch

    from anirender.models.conr.config import CoNRConfig
    from anirender.models.conr.model import CoNR

    torch.manual_seed(seed)
    model = CoNR(CoNRConfig(**TINY))
    # At the default init the untrained net answers nearly the same frame for any pose;
    # a gain of 2.5 on the weights makes its output follow the pose and the sheet, so a
    # swapped or lost frame shows in the tests.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter.mul_(2.5)
    model.save_safetensors(path, metadata={"seed": seed})
    return path


def sheet_images(views: int = 2, size: int = SIZE, seed: int = 1) -> np.ndarray:
    """A cut-out character sheet: coloured ellipses on a transparent background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = np.zeros((views, size, size, 4), np.uint8)
    for v in range(views):
        inside = ((xx - 0.5) / 0.25) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1
        colour = rng.integers(40, 255, size=3)
        images[v][inside] = [*colour, 255]
    return images


def udp_frames(count: int, size: int = SIZE, seed: int = 2) -> np.ndarray:
    """Distinct, valid UDP frames (a moving disc of canonical colours)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.zeros((count, size, size, 4), np.float32)
    for i in range(count):
        cx, cy = 0.3 + 0.4 * rng.random(), 0.3 + 0.4 * rng.random()
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < 0.06
        out[i, ..., 0] = xx * inside
        out[i, ..., 1] = yy * inside
        out[i, ..., 2] = rng.random() * inside
        out[i, ..., 3] = inside
    return out


class Service:
    def __init__(self, process: subprocess.Popen, port: int, lines: list[str]):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.lines = lines

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def start_service(
    weights: Path, *args: str, env: dict | None = None, timeout=120, stdin=subprocess.DEVNULL
) -> Service:
    command = [sys.executable, "-m", "anirender.cli", "serve", "--port", "0", "--device", "cpu"]
    command += ["--weights", str(weights), *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=stdin,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )
    lines: list[str] = []
    port = []
    ready = threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line.rstrip())
            if line.startswith(protocol.PORT_LINE):
                port.append(int(line.strip()[len(protocol.PORT_LINE) :]))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    end = time.monotonic() + timeout
    while not ready.wait(0.1) and time.monotonic() < end:
        pass
    if not port:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        raise RuntimeError("service did not start:\n" + "\n".join(lines))
    return Service(process, port[0], lines)


@contextlib.contextmanager
def running_service(weights: Path, *args: str, env: dict | None = None, timeout=120):
    service = start_service(weights, *args, env=env, timeout=timeout)
    try:
        yield service
    finally:
        if service.process.poll() is None:
            service.process.terminate()
            try:
                service.process.wait(15)
            except subprocess.TimeoutExpired:
                service.kill()


def reference_frames(model, images: np.ndarray, udp: np.ndarray) -> np.ndarray:
    """What the service should answer, computed in process on a worker thread.

    (On these busy shared cores torch's CPU threads run many times faster from a worker
    thread than from the main thread; the service's model also lives on one.)
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: model.render(model.encode_sheet(images), udp)).result()
