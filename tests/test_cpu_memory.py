"""The shaders keep freed CPU memory for the next frame (glibc), and can be told not to."""

import resource
import sys

import pytest
import torch

from anirender.models.cpu_memory import GLIBC_STEADY, KEEP, keep_freed_memory, set_heap
from anirender.models.execution import parse_request

glibc = pytest.mark.skipif(
    not set_heap(GLIBC_STEADY), reason="glibc's mallopt is needed (Linux with glibc)"
)


def frame_faults(warm_up: int, megabytes=64) -> int:
    """Page faults of three "frames", each making and freeing big tensors as a shader does."""
    n = megabytes * 2**20 // 4

    def frame():
        x = torch.empty(n).fill_(1.0)
        y = x * 2
        z = torch.exp(y)
        del x, y, z

    for _ in range(warm_up):
        frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        frame()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 64 * 2**20 // 4096
    try:
        set_heap(GLIBC_STEADY)  # a plain process: blocks over 32 MB come and go as fresh pages
        plain = frame_faults(warm_up=1)
        assert plain > 2 * pages
        assert keep_freed_memory() is True
        kept = frame_faults(warm_up=8)  # the heap settles at the frames' peak (a few frames)
        assert kept < plain / 4, (kept, plain)
    finally:
        set_heap(KEEP)


def test_the_user_can_turn_it_off():
    assert parse_request(env={"ANIRENDER_EXECUTION": "reuse_memory=off"}).reuse_memory is False
    assert parse_request(env={}).reuse_memory is None
    assert keep_freed_memory(False) is False
    if sys.platform != "linux":
        assert keep_freed_memory() is False
