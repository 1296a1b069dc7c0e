"""Hold Python's cyclic garbage collector off while Blender evaluates or renders.

Blender runs a frame change or a render with the GIL released, so a worker thread of
ours (a file writer, an HTTP request to the shader) may run Python meanwhile. Its
allocations can start a garbage collection there, and the collection may free ``bpy``
objects (operator properties, data-block wrappers) while Blender works on the same data:
the "Python Threads are Not Supported" crash of Blender's manual. Our workers never
hold ``bpy`` objects themselves, so keeping the collector off for the section is enough;
the garbage is collected after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def blender_section() -> Iterator[None]:
    """Around a ``bpy`` call that changes frames, evaluates the depsgraph or renders."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
