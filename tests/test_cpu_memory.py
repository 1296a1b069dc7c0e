"""The shaders keep freed CPU memory for the next frame (glibc), and can be told not to."""

import json
import subprocess
import sys

import pytest

from anirender.models.cpu_memory import GLIBC_STEADY, KEEP, keep_freed_memory, set_heap
from anirender.models.execution import parse_request

glibc = pytest.mark.skipif(
    not set_heap(KEEP), reason="glibc's mallopt is needed (Linux with glibc)"
)

# In a fresh interpreter: a heap that earlier tests grew would serve the blocks from
# memory it already holds, whatever the setting. Three "frames", each making and freeing
# big tensors as a shader does, counted in page faults (not time).
FRAMES = """
import json, resource, torch
from anirender.models.cpu_memory import GLIBC_STEADY, keep_freed_memory, set_heap
n = 64 * 2**20 // 4

def frame():
    x = torch.empty(n).fill_(1.0)
    y = x * 2
    z = torch.exp(y)
    del x, y, z

def faults(warm_up):
    for _ in range(warm_up):
        frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        frame()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

set_heap(GLIBC_STEADY)  # a plain process: blocks over 32 MB come and go as fresh pages
plain = faults(warm_up=1)
applied = keep_freed_memory()
kept = faults(warm_up=8)  # the heap settles at the frames' peak within a few frames
print(json.dumps({"plain": plain, "kept": kept, "applied": applied}))
"""


@glibc
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 64 * 2**20 // 4096
    run = subprocess.run(
        [sys.executable, "-c", FRAMES], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["applied"] is True
    assert result["plain"] > 2 * pages, result
    assert result["kept"] < result["plain"] / 4, result


def test_the_user_can_turn_it_off():
    assert parse_request(env={"ANIRENDER_EXECUTION": "reuse_memory=off"}).reuse_memory is False
    assert parse_request(env={}).reuse_memory is None
    assert keep_freed_memory(False) is False
    if sys.platform != "linux":
        assert keep_freed_memory() is False
    assert set(GLIBC_STEADY) == set(KEEP)  # the benches switch between the two
