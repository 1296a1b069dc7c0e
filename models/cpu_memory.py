"""Large tensors on a CPU: keep freed memory for the next frame instead of handing it back.

glibc serves blocks above its mmap threshold (128 KB, growing by itself to at most 32 MB)
with fresh pages from the kernel and unmaps them when freed, so every large intermediate
of every frame faults its pages in again. On the 2-core AMD EPYC, ``torch.mul`` into a
new 69 MB tensor takes 22 ms, into reused memory 4.3 ms; a CoNR frame (256 px, 4 views)
spends a third of its time so. Raising the thresholds keeps freed memory in the heap for
the next allocation (BENCHMARKS.md, "CoNR shader against the official code"). The cost:
the process keeps its peak heap. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

log = logging.getLogger("anirender.execution")

_TRIM_THRESHOLD, _TOP_PAD, _MMAP_THRESHOLD = -1, -2, -3  # mallopt's parameter numbers
#: the shaders' setting: nothing is unmapped or trimmed; the heap grows 256 MB at a time
KEEP = {_MMAP_THRESHOLD: 2**31 - 1, _TRIM_THRESHOLD: 2**31 - 1, _TOP_PAD: 256 << 20}
#: what glibc settles on by itself in a long run of large blocks (its dynamic threshold at
#: its 32 MB cap, trimming at twice that): the benchmarks' stand-in for a plain process
GLIBC_STEADY = {_MMAP_THRESHOLD: 32 << 20, _TRIM_THRESHOLD: 64 << 20, _TOP_PAD: 128 << 10}

_said = False


@functools.cache
def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt does nothing
            return None
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def set_heap(settings: dict[int, int]) -> bool:
    """Apply mallopt ``settings`` (``KEEP`` or ``GLIBC_STEADY``); False where not glibc."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in settings.items())


def keep_freed_memory(allowed: bool | None = True) -> bool:
    """The shaders' setting, unless the user turned it off (``reuse_memory=off`` in
    ``ANIRENDER_EXECUTION``); cheap enough to call before every CPU render. Logged once."""
    global _said
    if allowed is False:
        return False
    applied = set_heap(KEEP)
    if applied and not _said:
        log.info(
            "CPU memory: freed blocks are kept for the next frame (glibc); "
            "ANIRENDER_EXECUTION=reuse_memory=off hands them back instead"
        )
        _said = True
    return applied
