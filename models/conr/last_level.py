"""The shader's last level (warp, view weights, mix) as one C loop on a CPU.

At 256 px with 4 views the torch path spends about 150-250 ms of a frame here on the
2-core Intel Xeon (a dozen passes: split the block output, build the warp grids, sample,
sigmoid, exp, multiply, sum, divide); the loop in ``last_level.c`` reads the block
output once and writes the mixed message, 3-4x faster (BENCHMARKS.md). It is an
execution choice (``native``), timed like the others, and only offered where the C
compiler built it (``models.native``).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from .. import native

SOURCE = Path(__file__).with_name("last_level.c")
_ARGS = [ctypes.c_void_p] + [ctypes.c_int] * 10 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]


def library() -> ctypes.CDLL | None:
    """The built kernel, or None (no compiler, or the build failed)."""
    lib = native.load(SOURCE)
    if lib is not None and not getattr(lib, "_anirender_typed", False):
        for name in ("last_level_f32", "last_level_bf16"):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = _ARGS, ctypes.c_int
        lib._anirender_typed = True
    return lib


def applies(out: torch.Tensor) -> bool:
    """Whether the kernel can take this block output: CPU, channels-last, fp32 or
    bf16, inference."""
    return (
        out.device.type == "cpu"
        and out.dtype in (torch.float32, torch.bfloat16)
        and out.dim() == 4
        and out.is_contiguous(memory_format=torch.channels_last)
        and not (torch.is_grad_enabled() and out.requires_grad)
    )


def mix(out: torch.Tensor, split: list[int], views: int) -> torch.Tensor | None:
    """The combined message (frames, msg, H, W), channels-last fp32, from the last
    block's output (frames * views, sum(split), H, W) laid out as ``ShaderBlock.split``
    says; None where the kernel is not built or does not apply."""
    lib = library()
    if lib is None or not applies(out):
        return None
    _flow, msg, flows, local, local_flows, _mask = split
    images, channels, h, w = out.shape
    frames = images // views
    groups = flows // 2
    if not msg or not groups or msg % groups or images % views:
        return None
    mask0 = 2 + msg + flows + local + local_flows + 2  # the first two mask channels: flow, RGBA
    mixed = torch.empty(frames, h, w, msg, dtype=torch.float32)
    kernel = lib.last_level_bf16 if out.dtype == torch.bfloat16 else lib.last_level_f32
    source, target = out.data_ptr(), mixed.data_ptr()
    failed = []

    def rows(first: int, end: int) -> None:
        code = kernel(
            source, frames, views, h, w, channels, 2, 2 + msg, mask0, msg, groups, target,
            first, end,
        )  # fmt: skip
        if code:
            failed.append(code)

    native.run_in_parts(rows, frames * h)
    if failed:  # sizes beyond the kernel's buffers
        return None
    return mixed.permute(0, 3, 1, 2)
