"""From one shader level to the next as two C loops on a CPU (``level_step.c``).

Between two blocks the torch path doubles, warps, weighs and mixes the views, then
concatenates, converts and transposes the next block's inputs: some thirty passes over
maps larger than the cache, about half of a bf16 frame on the 2-core Intel Xeon. The
loops read each block output once and write the next block's inputs channels-last in
the convolutions' type (BENCHMARKS.md). Like ``last_level``, an execution choice
(``native``), only offered where the C compiler built it (``models.native``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import native

SOURCE = Path(__file__).with_name("level_step.c")
_P, _I = ctypes.c_void_p, ctypes.c_int
_LOW_ARGS = [_P, _P, _I, _I, _I, _I, _I, _I, _P, _I, _I]
_NEXT_ARGS = [_P, _P, _P, *[_I] * 14, _P, _I, _P, _I, _I, _P, _I, _I]


def library() -> ctypes.CDLL | None:
    """The built loops, or None (no compiler, or the build failed)."""
    lib = native.load(SOURCE)
    if lib is not None and not getattr(lib, "_anirender_typed", False):
        for kind in ("f32", "bf16"):
            low, step = getattr(lib, f"level_{kind}_low"), getattr(lib, f"level_{kind}_next")
            low.argtypes, low.restype = _LOW_ARGS, ctypes.c_int
            step.argtypes, step.restype = _NEXT_ARGS, ctypes.c_int
        lib._anirender_typed = True
    return lib


@dataclass
class NextLevel:
    """The next block's inputs (channels-last, the convolutions' type) and the flow so far
    (fp32, NCHW-shaped view of a channels-last map) for the level after it."""

    view_input: torch.Tensor
    frame_input: torch.Tensor
    view_names: tuple[str, ...]
    frame_names: tuple[str, ...]
    flow: torch.Tensor


def sheet_channels_last(rgba: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
    """The sheet's RGBA and features at one level as one fp32 (images, H, W, C) map, kept
    on the RGBA tensor (a sheet is encoded once and shaded for many frames)."""
    kept = getattr(rgba, "_anirender_with_features", None)
    if kept is not None and kept[0] is feature:
        return kept[1]
    parts = [rgba] if feature is None else [rgba, feature]
    joined = torch.cat(parts, 1).float().permute(0, 2, 3, 1).contiguous()
    rgba._anirender_with_features = (feature, joined)
    return joined


def step(
    out: torch.Tensor,
    split: list[int],
    views: int,
    flow_so_far: torch.Tensor | None,
    sheet_rgba: torch.Tensor,
    sheet_feature: torch.Tensor | None,
    target: torch.Tensor | None,
    next_ranges: dict[str, tuple[int, int]],
) -> NextLevel | None:
    """The next block's inputs from this block's output (frames * views, C, h, w), laid
    out as ``ShaderBlock.split`` says; None where the loops are not built or do not apply
    (then the torch path runs)."""
    lib = library()
    if lib is None or not _applies(out):
        return None
    _flow, m, mflows, loc, lflows, _mask = split
    images, c, h, w = out.shape
    frames, groups = images // views, mflows // 2
    if images % views or not groups or m % groups or loc % groups or (loc and lflows != mflows):
        return None
    H, W = 2 * h, 2 * w
    sheet = sheet_channels_last(sheet_rgba, sheet_feature)
    if sheet.shape[1:3] != (H, W) or sheet.shape[0] not in (views, images):
        return None
    target_c = 0 if target is None else target.shape[1]
    view_names = ("flow", "rgba", *(("feature",) if sheet_feature is not None else ()))
    view_names += ("local_message",) if loc else ()
    frame_names = (*(("target",) if target_c else ()), "mixed_flow", "mixed_rgba")
    frame_names += ("mixed_message",)
    view_c, frame_c = 2 + sheet.shape[3] + loc, target_c + 6 + m
    width = {name: stop - start for name, (start, stop) in next_ranges.items()}
    if sum(width[n] for n in view_names) != view_c or sum(width[n] for n in frame_names) != (
        frame_c
    ):
        return None  # not the next block's inputs: leave it to the torch path
    kind = "bf16" if out.dtype == torch.bfloat16 else "f32"
    low_fn, next_fn = getattr(lib, f"level_{kind}_low"), getattr(lib, f"level_{kind}_next")

    mask0 = 2 + m + mflows + loc + lflows
    low = torch.empty(images, h, w, 3 + m)
    so_far = None
    if flow_so_far is not None:
        so_far = flow_so_far.float().permute(0, 2, 3, 1).contiguous()
    failed = []

    def low_rows(first: int, end: int) -> None:
        code = low_fn(
            out.data_ptr(), None if so_far is None else so_far.data_ptr(), images, h, w, c,
            mask0, m, low.data_ptr(), first, end,
        )  # fmt: skip
        failed.append(code)

    native.run_in_parts(low_rows, images * h)
    view_in = torch.empty(images, H, W, view_c, dtype=out.dtype)
    frame_in = torch.empty(frames, H, W, frame_c, dtype=out.dtype)
    flow = torch.empty(images, H, W, 2)
    if target_c:
        frame_in[..., :target_c].copy_(target.permute(0, 2, 3, 1))

    def next_rows(first: int, end: int) -> None:
        code = next_fn(
            out.data_ptr(), low.data_ptr(), sheet.data_ptr(), int(sheet.shape[0] == views),
            sheet.shape[3], frames, views, h, w, c, 2, m, 2 + m, 2 + m + mflows, loc,
            2 + m + mflows + loc, groups, view_in.data_ptr(), view_c, frame_in.data_ptr(),
            frame_c, target_c, flow.data_ptr(), first, end,
        )  # fmt: skip
        failed.append(code)

    native.run_in_parts(next_rows, frames * H)
    if any(failed):  # sizes beyond the loops' buffers
        return None
    return NextLevel(
        view_in.permute(0, 3, 1, 2),
        frame_in.permute(0, 3, 1, 2),
        view_names,
        frame_names,
        flow.permute(0, 3, 1, 2),
    )


def _applies(out: torch.Tensor) -> bool:
    return (
        out.device.type == "cpu"
        and out.dtype in (torch.float32, torch.bfloat16)
        and out.dim() == 4
        and out.is_contiguous(memory_format=torch.channels_last)
        and not (torch.is_grad_enabled() and out.requires_grad)
    )
