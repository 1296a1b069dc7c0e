"""Small C kernels built with this machine's C compiler on first use, loaded by ctypes.

Some shader steps are a dozen passes of torch over maps far larger than the cache (warp,
softmax weights, mixing the views); one loop in C does them in one pass. There is no
wheel to ship for every CPU, so the source travels with the add-on and is compiled here,
for this CPU (``-march=native``), once: the library is kept under
``~/.cache/anirender/native`` (``ANIRENDER_NATIVE_CACHE`` moves it), named by a hash of
the source, the compiler and the CPU. Without a compiler, or when the build fails, the
kernel is not offered and the torch path runs; nothing else changes. ``CC`` picks the
compiler. Only this project's own sources are compiled; nothing a user hands in.

Functions called through ctypes release the GIL, so a kernel can be split over rows
between Python threads (``run_in_parts``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .execution import cpu_name

log = logging.getLogger("anirender.execution")

CACHE_ENV = "ANIRENDER_NATIVE_CACHE"
#: no -ffast-math: with GCC it would also switch denormals off for the whole process
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math")
BUILD_SECONDS = 120

_built: dict[Path, ctypes.CDLL | None] = {}
_pool: ThreadPoolExecutor | None = None


def compiler() -> str | None:
    """The C compiler to use: ``CC``, else cc, gcc or clang on the PATH."""
    return _find_compiler(os.environ.get("CC"), os.environ.get("PATH"))


@functools.cache
def _find_compiler(wanted: str | None, search: str | None) -> str | None:
    if wanted:
        return shutil.which(wanted, path=search)
    names = ("cc", "gcc", "clang")
    return next((path for name in names if (path := shutil.which(name, path=search))), None)


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "anirender" / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


@functools.cache
def _key(source: Path, cc: str) -> str:
    """The build's name: a hash of the source, the compiler, the flags and the CPU (read
    once per process: kernels are looked up on every convolution)."""
    text = source.read_bytes()
    return hashlib.sha1(
        b"\0".join([text, cc.encode(), " ".join(FLAGS).encode(), cpu_name().encode()])
        + _cpu_flags().encode()
    ).hexdigest()[:16]


def load(source: Path) -> ctypes.CDLL | None:
    """The library built from the C file ``source`` for this CPU, built now if need be;
    None when there is no compiler or it fails (said once in the log)."""
    cc = compiler()
    if cc is None:
        return None
    target = cache_dir() / f"{source.stem}-{_key(source, cc)}.so"
    if target in _built:
        return _built[target]
    library = None
    try:
        if not target.is_file():
            _build(cc, source, target)
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("C kernel %s not built (%s); the torch path runs instead", source.name, exc)
    _built[target] = library
    return library


def _build(cc: str, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # built beside the target and renamed: another process may be building it too
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *FLAGS, "-o", tmp, str(source)],
            capture_output=True,
            text=True,
            timeout=BUILD_SECONDS,
        )
        if done.returncode != 0:
            raise OSError(f"{Path(cc).name} failed: {done.stderr.strip()[-400:]}")
        os.replace(tmp, target)
        log.info("C kernel %s built for this CPU: %s", source.name, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_in_parts(kernel: Callable[[int, int], None], rows: int) -> None:
    """``kernel(first_row, end_row)`` over ``rows`` rows, split between as many threads
    as torch uses on the CPU (the C code runs without the GIL)."""
    global _pool
    parts = max(1, min(torch.get_num_threads(), rows))
    if parts == 1:
        kernel(0, rows)
        return
    if _pool is None or _pool._max_workers < parts:
        _pool = ThreadPoolExecutor(parts, thread_name_prefix="anirender-native")
    bounds = [rows * i // parts for i in range(parts + 1)]
    for done in [_pool.submit(kernel, a, b) for a, b in zip(bounds, bounds[1:])]:
        done.result()
