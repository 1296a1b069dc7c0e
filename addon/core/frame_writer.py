"""Write finished frames' files on a worker thread while the next frame renders.

The EXR (numpy + zlib) and PNG encoders release the GIL for their heavy parts, so on a
machine with a spare core a file write costs the render loop little. At most ``depth``
frames wait to be written (bounded memory). A failed write surfaces as an artist's error
at the next submit or at ``flush``; nothing here touches ``bpy``.

Blender runs a frame change or a render with Python's GIL released, and a Python thread
running then can crash it ("Python Threads are Not Supported" in Blender's manual; one
did, in CI, inside ``np.savez_compressed``). So the writer never runs while Blender
evaluates: the caller wraps such calls in ``blender_busy()``, which first waits for the
write in flight, and a file handed over starts only when the next busy section ends
(or at ``flush``). The fast path then writes frame N while it rasterises frame N + 1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from ...errors import AniRenderError


class BackgroundWriter:
    def __init__(self, depth: int = 2):
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._waiting: deque[tuple[tuple, str]] = deque()  # handed over, not started
        self._pending: deque[tuple[Future, str]] = deque()  # started
        self._busy = 0

    def submit(self, fn, *args, what: str) -> None:
        """Write ``fn(*args)`` in the background once Blender is idle; ``what`` names the
        file in errors."""
        self._waiting.append(((fn, *args), what))
        if len(self._waiting) + len(self._pending) > self.depth:
            self._start()
            self._collect(block=True)

    @contextmanager
    def blender_busy(self) -> Iterator[None]:
        """Around a ``bpy`` call that evaluates or renders: no write runs inside it."""
        if not self._busy:
            self._collect(block=True, every=True)
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._start()

    def flush(self) -> None:
        """Wait until every submitted file is written; raise the first failure."""
        self._start()
        self._collect(block=True, every=True)

    def close(self) -> None:
        """Finish the writes already submitted (no error is raised here) and stop."""
        self._start()
        for future, _ in self._pending:
            future.exception()  # waits; a failure was either reported or is moot now
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _start(self) -> None:
        if self._busy:
            return
        while self._waiting:
            job, what = self._waiting.popleft()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="anirender-writer")
            self._pending.append((self._pool.submit(*job), what))

    def _collect(self, block: bool, every: bool = False) -> None:
        while self._pending and (block or self._pending[0][0].done()):
            future, what = self._pending.popleft()
            block = every  # waited for one; take the rest only if already done
            error = future.exception()
            if error is not None:
                self._waiting.clear()
                self.close()
                if isinstance(error, AniRenderError):
                    raise error
                raise AniRenderError(
                    f"Could not write {what} ({error}). Check the disk space and that the "
                    "output folder is still there and writable."
                ) from error
