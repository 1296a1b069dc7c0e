"""Write finished frames' files on a worker thread while the next frame renders.

The EXR (numpy + zlib) and PNG encoders release the GIL for their heavy parts, so on a
machine with a spare core a file write costs the render loop nothing. At most ``depth`` frames wait to be written
(bounded memory). A failed write surfaces as an artist's error at the next submit or at
``flush``; nothing here touches ``bpy``.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from ...errors import AniRenderError


class BackgroundWriter:
    def __init__(self, depth: int = 2):
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future, str]] = deque()

    def submit(self, fn, *args, what: str) -> None:
        """Run ``fn(*args)`` in the background; ``what`` names the file in errors."""
        self._collect(block=len(self._pending) >= self.depth)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="anirender-writer")
        self._pending.append((self._pool.submit(fn, *args), what))

    def flush(self) -> None:
        """Wait until every submitted file is written; raise the first failure."""
        while self._pending:
            self._collect(block=True)

    def close(self) -> None:
        """Finish the writes already submitted (no error is raised here) and stop."""
        for future, _ in self._pending:
            future.exception()  # waits; a failure was either reported or is moot now
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _collect(self, block: bool) -> None:
        while self._pending and (block or self._pending[0][0].done()):
            future, what = self._pending.popleft()
            block = False  # waited for one; take the rest only if already done
            error = future.exception()
            if error is not None:
                self.close()
                if isinstance(error, AniRenderError):
                    raise error
                raise AniRenderError(
                    f"Could not write {what} ({error}). Check the disk space and that the "
                    "output folder is still there and writable."
                ) from error
