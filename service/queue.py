"""The shading queue: one worker thread owns the model and batches frames.

Requests (from any number of HTTP connections) are split into single frames and put in
a FIFO of their client (``client``: the caller's name for whoever sent them). The worker
serves the clients in turn, one unit of work each: the oldest frame of the next client
and, with it, the next waiting frames of the *same* sheet (any client's), up to
``max_batch``, in one model call; or one sheet to encode. So a client with a long
sequence queued cannot make another's single frame wait for all of it. Each frame's
result goes back to the request it came from; a frame whose request is gone (``alive``
false: a cancelled job, a client that hung up) is dropped unshaded.

Sheet encodings (the parser's work) are cached by sheet id, bounded by count and by their
bytes in memory (``max_sheet_bytes``), least recently used evicted first.

The model is anything with ``encode_sheet(uint8 (V,H,W,4)) -> encoding`` and
``render(encoding, float32 (B,H,W,4)) -> float32 (B,H,W,4)``; a sheet uploaded with its
views' UDPs is encoded by ``encode_sheet(images, udps)`` (``service.sheet_shaders``), and
an encoding's ``shader`` attribute names the shader that paints with it (CoNR when it
has none). This module never imports torch.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from ..errors import AniRenderError
from .store import LruStore, nbytes_of


class UnknownSheet(AniRenderError):
    """The sheet id is not (or no longer) cached: upload the sheet again."""


class UnknownJob(AniRenderError):
    pass


class QueueStopped(AniRenderError):
    pass


@dataclass
class Sheet:
    sheet_id: str
    views: int
    size: int
    encoding: object
    shader: str = "conr"  # "guided" when the sheet's views carry their UDPs


@dataclass
class _Frame:
    """One frame waiting for the worker."""

    client: str
    sheet_id: str
    udp: np.ndarray  # (H, W, 4)
    deliver: object  # callable(rgba (H, W, 4) | None, exc | None, model seconds)
    alive: object = None  # callable() -> bool; False drops the frame (cancelled job)


@dataclass
class _Encode:
    client: str
    sheet_id: str
    images: np.ndarray
    future: Future
    udps: np.ndarray | None = None


def _follow(done: Future, follower: Future, cached: bool) -> None:
    """Give a caller's ``follower`` the outcome of the sheet's one encoding."""
    try:
        if done.exception() is not None:
            follower.set_exception(done.exception())
        else:
            follower.set_result((done.result()[0], cached))
    except InvalidStateError:  # the caller gave up (cancelled its future)
        pass


@dataclass
class SequenceJob:
    """A whole sequence submitted at once; results are collected as frames finish."""

    job_id: str
    sheet_id: str
    frames: np.ndarray
    size: int
    results: dict = field(default_factory=dict)  # index -> rgba (H, W, 4)
    state: str = "running"  # running, done, cancelled, failed
    error: str = ""
    created: float = field(default_factory=time.monotonic)
    shader: str = "conr"

    @property
    def total(self) -> int:
        return len(self.frames)

    def progress(self) -> dict:
        return {
            "job_id": self.job_id,
            "sheet_id": self.sheet_id,
            "state": self.state,
            "done": len(self.results),
            "total": self.total,
            "error": self.error,
            "shader": self.shader,
        }


class ShadingQueue:
    def __init__(
        self,
        model,
        max_batch: int = 8,
        max_sheets: int = 16,
        max_jobs: int = 32,
        max_sheet_bytes: int | None = 2 << 30,
    ):
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self.max_sheets = max_sheets
        self.max_jobs = max_jobs
        self.max_sheet_bytes = max_sheet_bytes
        self._sheets: LruStore[Sheet] = LruStore(
            max_sheets, max_sheet_bytes, size_of=lambda sheet: nbytes_of(sheet.encoding)
        )
        self._jobs: OrderedDict[str, SequenceJob] = OrderedDict()
        #: names this run of the service: job ids start with it, so a job id from before a
        #: restart is recognised as such
        self.run_id = uuid.uuid4().hex[:8]
        # client -> its waiting work, oldest first; served in turn (see module docstring)
        self._waiting: OrderedDict[str, deque] = OrderedDict()
        #: sheet id -> the future of its encoding under way, so that requests arriving
        #: together for a sheet this process lacks share one encoding
        self._encoding: dict[str, Future] = {}
        self._lock = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.stats = {
            "frames_shaded": 0,
            "frames_dropped": 0,  # their request was gone: cancelled job, client hung up
            "batches": 0,
            "largest_batch": 0,
            "sheets_encoded": 0,
        }

    # lifecycle --------------------------------------------------------------------------
    def start(self) -> ShadingQueue:
        with self._lock:
            if self._running:
                return self
            self._running = True
        self._thread = threading.Thread(target=self._work, name="anirender-shader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._running = False
            waiting = [item for items in self._waiting.values() for item in items]
            self._waiting = OrderedDict()
            self._lock.notify_all()
        for item in waiting:
            self._fail(item, QueueStopped("The shader service is shutting down."))
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def depth(self) -> int:
        """Frames and sheets waiting for the worker, all clients together."""
        with self._lock:
            return sum(len(items) for items in self._waiting.values())

    @property
    def sheet_bytes(self) -> int:
        """Memory held by the cached sheet encodings."""
        return self._sheets.bytes

    # sheets -----------------------------------------------------------------------------
    def sheet(self, sheet_id: str) -> Sheet:
        with self._lock:
            sheet = self._sheets.get(sheet_id)
            if sheet is None:
                raise UnknownSheet(
                    f"Unknown character sheet '{sheet_id}'; the service may have restarted. "
                    "Upload the sheet again."
                )
            return sheet

    def sheets(self) -> list[Sheet]:
        with self._lock:
            return list(self._sheets.values())

    def forget_sheet(self, sheet_id: str) -> None:
        with self._lock:
            if self._sheets.pop(sheet_id) is None:
                raise UnknownSheet(f"Unknown character sheet '{sheet_id}'.")

    def add_sheet(
        self, sheet_id: str, images: np.ndarray, client: str = "", udps: np.ndarray | None = None
    ) -> Future:
        """Encode (once) and cache; the future gives ``(Sheet, was_cached)``.

        A sheet already being encoded is not encoded again: the caller waits for that
        encoding (and gets ``was_cached`` True). Each caller has its own future, so one
        that gives up (a client hanging up) cancels nothing for the others."""
        future: Future = Future()
        with self._lock:
            cached = self._sheets.get(sheet_id)
            if cached is not None:
                future.set_result((cached, True))
                return future
            encoding = self._encoding.get(sheet_id)
            first = encoding is None
            if first:
                encoding = self._encoding[sheet_id] = Future()
                encoding.add_done_callback(lambda done: self._encoded(sheet_id, done))
                self._put(_Encode(client, sheet_id, images, encoding, udps))
            encoding.add_done_callback(lambda done: _follow(done, future, not first))
        return future

    def _encoded(self, sheet_id: str, future: Future) -> None:
        with self._lock:
            if self._encoding.get(sheet_id) is future:
                del self._encoding[sheet_id]

    # frames -----------------------------------------------------------------------------
    def shade(self, sheet_id: str, udp: np.ndarray, client: str = "", alive=None) -> Future:
        """Shade (B, H, W, 4) frames; the future gives float32 (B, H, W, 4).

        ``future.shading_seconds`` is then the model time spent on these frames (a
        batch's time is shared among its frames). Frames still waiting when the future
        is cancelled, or when ``alive()`` turns false, are dropped unshaded.
        """
        sheet = self.sheet(sheet_id)
        future: Future = Future()
        future.shading_seconds = 0.0
        out = np.empty(udp.shape, dtype=np.float32)
        remaining = [len(udp)]

        def deliver(i, rgba, exc, seconds):
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
                return
            out[i] = rgba
            future.shading_seconds += seconds
            remaining[0] -= 1
            if remaining[0] == 0:
                future.set_result(out)

        def wanted() -> bool:
            return not future.done() and (alive is None or alive())

        with self._lock:
            for i in range(len(udp)):
                self._put(
                    _Frame(
                        client,
                        sheet.sheet_id,
                        udp[i],
                        lambda r, e, s, i=i: deliver(i, r, e, s),
                        alive=wanted,
                    )
                )
        return future

    # jobs -------------------------------------------------------------------------------
    def submit_job(
        self, sheet_id: str, udp: np.ndarray, frames: np.ndarray, client: str = ""
    ) -> SequenceJob:
        sheet = self.sheet(sheet_id)
        job = SequenceJob(
            f"{self.run_id}-{uuid.uuid4().hex}", sheet_id, frames, sheet.size, shader=sheet.shader
        )

        def deliver(i, rgba, exc, seconds):
            if job.state != "running":
                return
            if exc is not None:
                job.state, job.error = "failed", str(exc)
                return
            job.results[i] = rgba
            if len(job.results) == job.total:
                job.state = "done"

        with self._lock:
            self._evict_jobs()
            self._jobs[job.job_id] = job
            for i in range(len(udp)):
                self._put(
                    _Frame(
                        client,
                        sheet_id,
                        udp[i],
                        lambda r, e, s, i=i: deliver(i, r, e, s),
                        alive=lambda: job.state == "running",
                    )
                )
        return job

    def job(self, job_id: str) -> SequenceJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            run = job_id.split("-", 1)[0] if "-" in job_id else None
            if run is not None and run != self.run_id:
                raise UnknownJob(
                    f"Job '{job_id}' was submitted to an earlier run of the shader service; "
                    "it has restarted since and its frames are gone. Submit the sequence again."
                )
            raise UnknownJob(
                f"Unknown job '{job_id}': this service has no such job (finished jobs are "
                f"kept until {self.max_jobs} newer ones arrive). Submit the sequence again."
            )
        return job

    def cancel_job(self, job_id: str) -> SequenceJob:
        job = self.job(job_id)
        if job.state == "running":
            job.state = "cancelled"
        return job

    def _evict_jobs(self):
        while len(self._jobs) >= self.max_jobs:
            for key, old in self._jobs.items():
                if old.state != "running":
                    del self._jobs[key]
                    break
            else:
                raise AniRenderError(
                    f"The service already runs {self.max_jobs} jobs; wait or cancel some."
                )

    # the worker -------------------------------------------------------------------------
    def _put(self, item) -> None:
        # called with the lock held
        if not self._running:
            raise QueueStopped("The shader service is not running.")
        self._waiting.setdefault(item.client, deque()).append(item)
        self._lock.notify()

    def _take(self):
        """The next unit of work: an _Encode, or a batch of _Frames of one sheet. The
        client served is the one first in turn; it then goes to the back of the line."""
        with self._lock:
            while self._running and not self._waiting:
                self._lock.wait()
            if not self._running:
                return None
            first = None
            while first is None and self._waiting:
                client, items = next(iter(self._waiting.items()))
                first = items.popleft()
                self._waiting.move_to_end(client)
                if isinstance(first, _Frame) and first.alive is not None and not first.alive():
                    first = None  # its request is gone: drop it unshaded
                    self.stats["frames_dropped"] += 1
                self._drop_empty()
            if first is None or isinstance(first, _Encode):
                return first if first is not None else []
            batch = [first]
            own = self._waiting.get(client)
            others = [items for c, items in self._waiting.items() if c != client]
            for items in ([own] if own is not None else []) + others:
                kept = deque()
                while items:
                    item = items.popleft()
                    if (
                        len(batch) < self.max_batch
                        and isinstance(item, _Frame)
                        and item.sheet_id == first.sheet_id
                    ):
                        batch.append(item)
                    else:
                        kept.append(item)
                items.extend(kept)
            self._drop_empty()
            return batch

    def _drop_empty(self) -> None:
        for client in [c for c, items in self._waiting.items() if not items]:
            del self._waiting[client]

    def _work(self) -> None:
        while True:
            work = self._take()
            if work is None:
                return
            if not work:
                continue
            if isinstance(work, _Encode):
                self._encode(work)
            else:
                self._shade(work)

    def _encode(self, item: _Encode) -> None:
        try:
            if item.udps is None:
                encoding = self.model.encode_sheet(item.images)
            else:
                encoding = self.model.encode_sheet(item.images, item.udps)
        except Exception as exc:
            item.future.set_exception(exc)
            return
        shader = getattr(encoding, "shader", "conr")
        sheet = Sheet(item.sheet_id, item.images.shape[0], item.images.shape[1], encoding, shader)
        with self._lock:
            self._sheets.put(item.sheet_id, sheet)
            self.stats["sheets_encoded"] += 1
        item.future.set_result((sheet, False))

    def _shade(self, batch: list[_Frame]) -> None:
        wanted = [f for f in batch if f.alive is None or f.alive()]
        with self._lock:
            self.stats["frames_dropped"] += len(batch) - len(wanted)
        batch = wanted
        if not batch:
            return
        start = time.perf_counter()
        try:
            encoding = self.sheet(batch[0].sheet_id).encoding
            rgba = self.model.render(encoding, np.stack([f.udp for f in batch]))
        except Exception as exc:
            for frame in batch:
                frame.deliver(None, exc, 0.0)
            return
        share = (time.perf_counter() - start) / len(batch)
        with self._lock:
            self.stats["frames_shaded"] += len(batch)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        for frame, result in zip(batch, rgba):
            frame.deliver(result, None, share)

    @staticmethod
    def _fail(item, exc) -> None:
        if isinstance(item, _Encode):
            item.future.set_exception(exc)
        else:
            item.deliver(None, exc, 0.0)
