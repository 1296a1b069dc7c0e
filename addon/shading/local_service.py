"""``LocalService``: an ``anirender serve`` child process on 127.0.0.1 with a private token.

It starts ``python -m anirender.cli serve --port 0`` with the interpreter from the
preferences, reads the port the service prints, hands out an ``HttpClient``, and stops
the process when Blender quits (atexit) or when asked. The service also exits by itself
when its stdin closes, so a crashed Blender does not leave it behind. One local service
runs at a time; changed settings replace it."""

from __future__ import annotations

import atexit
import collections
import os
import secrets
import subprocess
import sys
import threading
import time

from ...errors import AniRenderError
from ...service import protocol
from .clients import HttpClient, ServiceUnavailable
from .connection import status


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
                f"The Python interpreter '{self.python}' does not exist. Click Set Up Shader "
                "Runtime in the AniRender preferences, or choose a Python with anirender and "
                "torch installed there."
            )
        command = [self.python, "-m", "anirender.cli", "serve", "--host", "127.0.0.1"]
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
                hint = ""
                if "No module named" in tail:
                    hint = (
                        "\nThis Python lacks what the shader needs: click Set Up Shader "
                        "Runtime in the AniRender preferences (or choose a Python that has "
                        "anirender and torch)."
                    )
                raise AniRenderError(
                    f"The local service did not start with {self.python}. Its last words:\n"
                    f"{tail or '(nothing)'}{hint}"
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


_local: dict[tuple, LocalService] = {}


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
