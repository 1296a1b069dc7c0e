"""3x3 stride-1 convolutions by Winograd's F(4x4, 3x3), for fp32 inference on a CPU.

oneDNN already runs CoNR's 224-channel 3x3 convolutions near the CPU's peak, so only less
arithmetic makes them faster. Winograd's minimal filtering draws each 4x4 tile of output
from a 6x6 tile of input with 36 products per channel pair instead of 144: the input and
the filters go through small fixed transforms, the products become 36 matrix products
over all tiles, and a last transform turns them back into pixels. On the 2-core AMD EPYC,
a 224 -> 224 convolution at 64 px on 4 images took 40 ms against oneDNN's 65
(BENCHMARKS.md). The result differs from direct convolution by rounding only, about 1e-5
of the output's scale (the transforms multiply by up to 25). bf16 is not offered: its
rounding, multiplied by those transforms, moved outputs by 0.4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: below this side (in output pixels) oneDNN's direct convolution was as fast or faster
MIN_SIDE = 32

# G (6x3): the filter transform of F(4x4, 3x3) with interpolation points 0, +-1, +-2
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)


def applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` on ``x`` can and should go through :func:`conv3x3`."""
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and x.shape[-2] % 4 == 0
        and x.shape[-1] % 4 == 0
        and min(x.shape[-2:]) >= MIN_SIDE
    )


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) filters -> (36, in, out): G w G^T per channel pair, in float64."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def transformed_filters(conv: nn.Conv2d) -> torch.Tensor:
    """``conv``'s transformed filters, kept on the module until its weights change."""
    w = conv.weight
    stamp = (w.data_ptr(), w._version, w.dtype)
    kept = conv.__dict__.get("_winograd_filters")
    if kept is None or kept[0] != stamp:
        kept = (stamp, filter_transform(w))
        conv.__dict__["_winograd_filters"] = kept
    return kept[1]


def _input_transform(d, out) -> None:
    """B^T d for six equally shaped tensors ``d``, written into the six ``out``."""
    d42 = d[4] - d[2]
    torch.add(d42, d[0] - d[2], alpha=4, out=out[0])  # 4 d0 - 5 d2 + d4
    torch.add(d[3] + d[4], d[1] + d[2], alpha=-4, out=out[1])
    torch.add(d[4] - d[3], d[1] - d[2], alpha=4, out=out[2])
    d31 = d[3] - d[1]
    torch.add(d42, d31, alpha=2, out=out[3])
    torch.add(d42, d31, alpha=-2, out=out[4])
    torch.add(d[5] - d[3], d[1] - d[3], alpha=4, out=out[5])  # 4 d1 - 5 d3 + d5


def _output_transform(m, out) -> None:
    """A^T m for six equally shaped tensors ``m``, written into the four ``out``."""
    s12, d12 = m[1] + m[2], m[1] - m[2]
    s34, d34 = m[3] + m[4], m[3] - m[4]
    torch.add(s12, s34, out=out[0]).add_(m[0])
    torch.add(d12, d34, alpha=2, out=out[1])
    torch.add(s12, s34, alpha=4, out=out[2])
    torch.add(d12, d34, alpha=8, out=out[3]).add_(m[5])


def conv3x3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, w, bias, 1, 1)`` for ``filters = filter_transform(w)``.

    ``x`` is (N, C, H, W) with H and W multiples of 4, best channels-last; the result is
    channels-last. Not differentiable on purpose: inference only.
    """
    n, c, h, w = x.shape
    out_channels = filters.shape[2]
    th, tw = h // 4, w // 4
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    rows = [torch.empty(n, th, w + 2, c, dtype=x.dtype) for _ in range(6)]
    _input_transform([padded[:, k : k + h : 4] for k in range(6)], rows)
    tiles = torch.empty(6, 6, n, th, tw, c, dtype=x.dtype)
    for i, row in enumerate(rows):
        _input_transform([row[:, :, k : k + w : 4] for k in range(6)], list(tiles[i]))
    del rows
    products = torch.bmm(tiles.view(36, -1, c), filters).view(6, 6, n, th, tw, out_channels)
    del tiles
    if bias is not None:
        # A^T e1 is all ones, so a bias added at tile position (1, 1) reaches every pixel
        products[1, 1] += bias
    half = [torch.empty(6, n, th, tw, out_channels, dtype=x.dtype) for _ in range(4)]
    _output_transform(list(products), half)
    del products
    y = torch.empty(n, th, 4, tw, 4, out_channels, dtype=x.dtype)
    for a, part in enumerate(half):
        _output_transform(list(part), [y[:, :, a, :, b] for b in range(4)])
    return y.view(n, h, w, out_channels).permute(0, 3, 1, 2)


def convolve(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by Winograd where :func:`applies` says so."""
    if applies(conv, x):
        return conv3x3(x, transformed_filters(conv), conv.bias)
    return conv(x)
