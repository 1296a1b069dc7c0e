"""Long work as main-thread steps, driven modally with progress and Esc.

A ``Job`` wraps a generator: each ``next()`` does one unit of main-thread work (render
one frame, say) and yields a status message. Work that must not block Blender (HTTP,
file writes) goes to a worker thread through ``Job.submit``; its callback runs later on
the main thread, because worker threads never touch ``bpy``.

``ModalJobOperator`` turns an operator's ``make_job`` into a modal run (timer, status-bar
progress, Esc cancels) under a ``SceneGuard``; ``execute`` runs the same job to the end
synchronously, which is what scripts, the CLI and headless tests use.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ...errors import AniRenderError
from .guard import SceneGuard


class JobCancelled(Exception):
    """Raised inside a job's steps when the user pressed Esc."""


class Job:
    """A long task: a generator of main-thread steps plus optional worker-thread tasks."""

    def __init__(
        self,
        title: str,
        steps: Iterable,
        total: int,
        workers: int = 1,
        max_pending: int = 4,
    ):
        self.title = title
        self.total = max(int(total), 0)
        self.done = 0
        self.message = ""
        self.finished = False
        self.cancelled = False
        self.summary = ""
        # ``steps`` may be a function of the job, for steps that submit worker tasks
        self._steps = iter(steps(self) if callable(steps) else steps)
        self._steps_exhausted = False
        self._workers = workers
        self._max_pending = max_pending
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0
        self._results: queue.Queue = queue.Queue()

    # worker threads -------------------------------------------------------------------
    def submit(self, fn: Callable, *args, then: Callable | None = None) -> None:
        """Run ``fn(*args)`` in a worker thread; ``then(result)`` runs on the main thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="anirender")
        self._pending += 1

        def work():
            try:
                self._results.put((then, fn(*args), None))
            except BaseException as exc:  # handed to the main thread, re-raised there
                self._results.put((then, None, exc))

        self._pool.submit(work)

    def poll(self) -> None:
        """Run callbacks of finished worker tasks (main thread)."""
        while True:
            try:
                then, result, exc = self._results.get_nowait()
            except queue.Empty:
                return
            self._pending -= 1
            if exc is not None:
                raise exc
            if then is not None:
                then(result)

    @property
    def busy_waiting(self) -> bool:
        return self._pending >= self._max_pending or (self._steps_exhausted and self._pending)

    # driving --------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def step(self) -> bool:
        """Do one unit of work. Returns False once the job has finished."""
        if self.finished:
            return False
        self.poll()
        if self.busy_waiting:
            return True
        if not self._steps_exhausted:
            try:
                message = next(self._steps)
            except StopIteration:
                self._steps_exhausted = True
            else:
                self.done += 1
                if message:
                    self.message = str(message)
                return True
        if self._pending:
            return True
        self._close()
        self.finished = True
        return False

    def step_for(self, seconds: float) -> bool:
        """Run steps for about ``seconds`` (keeps Blender's UI responsive)."""
        end = time.perf_counter() + seconds
        while self.step():
            if time.perf_counter() >= end:
                return True
            if self.busy_waiting:
                time.sleep(0.005)
        return False

    def run_to_end(self, on_progress: Callable[[Job], None] | None = None) -> None:
        """Drive the job synchronously (CLI, scripts, headless tests)."""
        while self.step():
            if on_progress is not None:
                on_progress(self)
            if self.busy_waiting:
                time.sleep(0.005)
        if on_progress is not None:
            on_progress(self)

    def cancel(self) -> None:
        """Stop now: close the step generator (its ``finally`` blocks run) and workers."""
        self.cancelled = True
        self.finished = True
        self._close(wait=False)

    def _close(self, wait: bool = True):
        # On Esc the UI must not wait for a worker task already running (a frame being
        # shaded, a volume being meshed): its result is dropped, its thread ends alone.
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


class ModalJobOperator:
    """Mixin for operators whose work is a ``Job``.

    Subclasses implement ``make_job(context, guard) -> Job``; it checks the input and
    raises ``AniRenderError`` before changing anything. Results to keep in the scene are
    declared with ``guard.keep(id_block)``; everything else the job changed is restored.
    """

    _job: Job | None = None
    _guard = None
    _timer = None

    def make_job(self, context, guard) -> Job:  # pragma: no cover - abstract
        raise NotImplementedError

    # synchronous ----------------------------------------------------------------------
    def execute(self, context):
        try:
            with SceneGuard(context) as guard:
                job = self.make_job(context, guard)
                try:
                    job.run_to_end()
                finally:
                    if not job.finished:  # an error mid-run: stop workers, run cleanups
                        job.cancel()
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if job.summary:
            self.report({"INFO"}, job.summary)
        return {"FINISHED"}

    # modal ----------------------------------------------------------------------------
    def invoke(self, context, event):
        if context.window is None:
            return self.execute(context)
        guard = SceneGuard(context).__enter__()
        try:
            job = self.make_job(context, guard)
        except AniRenderError as exc:
            guard.restore()
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self._job, self._guard = job, guard
        wm = context.window_manager
        wm.progress_begin(0, max(job.total, 1))
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        self._show_status(context)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            self._finish(context)
            self.report({"WARNING"}, f"{job.title}: cancelled after {job.done} of {job.total}")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            running = job.step_for(0.1)
        except AniRenderError as exc:
            job.cancel()
            self._finish(context)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception:
            job.cancel()
            self._finish(context)
            raise
        context.window_manager.progress_update(job.done)
        self._show_status(context)
        if running:
            return {"RUNNING_MODAL"}
        self._finish(context)
        if job.summary:
            self.report({"INFO"}, job.summary)
        return {"FINISHED"}

    def _show_status(self, context):
        job = self._job
        text = f"{job.title}: {job.done}/{job.total}"
        if job.message:
            text += f" - {job.message}"
        text += "  (Esc to cancel)"
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def _finish(self, context):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        if self._guard is not None:
            self._guard.restore()
            self._guard = None
