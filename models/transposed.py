"""Stride-2 4x4 transposed convolutions on small maps as four matrix products, on a CPU.

CoNR's coarsest shader levels end in transposed convolutions from 224 channels to
thousands on maps of 4-16 px (224 -> 6212 at 4 px). oneDNN runs these at a fraction of
the CPU's speed (fp32 at 4 px: 75 GFLOP/s). Each output phase (a, b) of such a
convolution, pixel (2 i + a, 2 j + b), is a 2x2 convolution of the input, so it is one
matrix product of the input's four shifted copies side by side (N H W x 4 C) with that
phase's taps (4 C x out): on the Intel Xeon, fp32 62 -> 17 ms at 4 px and 59 -> 32 at
8 px, bf16 25 -> 6 and 18 -> 6 (BENCHMARKS.md). From 16 px on the gain is small or
gone, so larger maps keep oneDNN (or Winograd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the largest input side (px) taken here
MAX_SIDE = 8

# phase -> the transposed taps that reach it, for input rows i - 1 + a and i + a
_TAPS = {0: (3, 1), 1: (2, 0)}


def applies(conv: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv`` on ``x`` goes through :func:`convolve`: a stride-2, 4x4,
    padding-1 transposed convolution on a CPU map of at most ``MAX_SIDE`` px, inference."""
    return (
        isinstance(conv, nn.ConvTranspose2d)
        and (conv.kernel_size, conv.stride, conv.padding) == ((4, 4), (2, 2), (1, 1))
        and conv.output_padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and x.device.type == "cpu"
        and x.dim() == 4
        and max(x.shape[-2:]) <= MAX_SIDE
        and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
    )


def phase_taps(weight: torch.Tensor) -> torch.Tensor:
    """(in, out, 4, 4) transposed weights -> (2, 2, 4 in, out): phase (a, b)'s taps,
    rows ordered (u, v, in) for input pixel (i - 1 + a + u, j - 1 + b + v)."""
    cin, out = weight.shape[:2]
    taps = weight.new_empty(2, 2, 2, 2, cin, out)
    for a in (0, 1):
        for b in (0, 1):
            for u, ku in enumerate(_TAPS[a]):
                for v, kv in enumerate(_TAPS[b]):
                    taps[a, b, u, v] = weight[:, :, ku, kv]
    return taps.reshape(2, 2, 4 * cin, out).contiguous()


def _kept_taps(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``conv``'s phase taps, kept on the module until its weights change."""
    w = conv.weight
    stamp = (w.data_ptr(), w._version, w.dtype)
    kept = conv.__dict__.get("_phase_taps")
    if kept is None or kept[0] != stamp:
        kept = (stamp, phase_taps(w.detach()))
        conv.__dict__["_phase_taps"] = kept
    return kept[1]


def convolve(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` as four matrix products; channels-last (N, out, 2H, 2W)."""
    n, c, h, w = x.shape
    taps = _kept_taps(conv)
    out = taps.shape[-1]
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H + 2, W + 2, C)
    y = torch.empty(n, h, 2, w, 2, out, dtype=taps.dtype)
    for a in (0, 1):
        for b in (0, 1):
            shifted = [
                padded[:, a + u : a + u + h, b + v : b + v + w] for u in (0, 1) for v in (0, 1)
            ]
            columns = torch.cat(shifted, -1).reshape(n * h * w, 4 * c)
            phase = torch.mm(columns.to(taps.dtype), taps[a, b])
            if conv.bias is not None:
                phase += conv.bias
            y[:, :, a, :, b] = phase.view(n, h, w, out)
    return y.view(n, 2 * h, 2 * w, out).permute(0, 3, 1, 2)
