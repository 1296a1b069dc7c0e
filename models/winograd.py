"""3x3 stride-1 convolutions (and stride-2 4x4 transposed ones, rewritten as 3x3) by
Winograd's F(4x4, 3x3), for fp32 inference on a CPU.

oneDNN already runs CoNR's 224-channel 3x3 convolutions near the CPU's peak, so only less
arithmetic makes them faster. Winograd's minimal filtering draws each 4x4 tile of output
from a 6x6 tile of input with 36 products per channel pair instead of 144: the input and
the filters go through small fixed transforms, the products become 36 matrix products
over all tiles, and a last transform turns them back into pixels. On the 2-core AMD EPYC,
a 224 -> 224 convolution at 64 px on 4 images took 40 ms against oneDNN's 65
(BENCHMARKS.md). The two transforms are C loops (``winograd.c``) over chunks of tiles
that stay in cache, where this machine's compiler built them, else torch passes. The
result differs from direct convolution by rounding only, about 1e-5
of the output's scale (the transforms multiply by up to 25). bf16 is not offered: its
rounding, multiplied by those transforms, moved outputs by 0.4.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import native

SOURCE = Path(__file__).with_name("winograd.c")

#: below this side (in output pixels) oneDNN's direct convolution was as fast or faster
#: than the torch transforms; the C transforms win from 8 px on (Intel Xeon, 224 -> 224,
#: 4 images: 16 px 1.8 against 4.0 ms, 8 px 0.9 against 1.4)
MIN_SIDE = 32
MIN_SIDE_C = 8
#: the same for transposed convolutions, in input pixels: at 32 px the torch transforms
#: gained 1-3 % for filters 9x the size of the weights (108 MB for one of CoNR's), the C
#: ones 12 % (224 -> 836 channels: 123 against 140 ms); smaller sides would keep filters
#: of 200-800 MB for ~10 %
MIN_SIDE_TRANSPOSED = 64
MIN_SIDE_TRANSPOSED_C = 32
#: the most input channels the C transforms take (``winograd.c``'s row of zeros beyond
#: the border); wider inputs keep the torch transforms, or oneDNN for transposed ones
C_MAX_CHANNELS = 8192

# G (6x3): the filter transform of F(4x4, 3x3) with interpolation points 0, +-1, +-2
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)


def _whole_tiles_in_fp32_on_cpu(conv, x: torch.Tensor, sides: tuple[int, int]) -> bool:
    """``sides``: the smallest side that pays by the torch and by the C transforms."""
    min_side = sides[1] if library() is not None else sides[0]
    return (
        conv.dilation == (1, 1)
        and conv.groups == 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and x.shape[-2] % 4 == 0
        and x.shape[-1] % 4 == 0
        and min(x.shape[-2:]) >= min_side
    )


def applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` on ``x`` can and should go through :func:`conv3x3`."""
    return (
        (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
        and conv.padding_mode == "zeros"
        and _whole_tiles_in_fp32_on_cpu(conv, x, (MIN_SIDE, MIN_SIDE_C))
    )


def applies_transposed(conv: nn.ConvTranspose2d, x: torch.Tensor) -> bool:
    """Whether the transposed ``conv`` on ``x`` can and should go through
    :func:`conv_transpose4x4`."""
    return (
        (conv.kernel_size, conv.stride, conv.padding) == ((4, 4), (2, 2), (1, 1))
        and conv.output_padding == (0, 0)
        and _whole_tiles_in_fp32_on_cpu(conv, x, (MIN_SIDE_TRANSPOSED, MIN_SIDE_TRANSPOSED_C))
        and (library() is None or x.shape[1] <= C_MAX_CHANNELS)
    )


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) filters -> (36, in, out): G w G^T per channel pair, in float64."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def transformed_filters(conv: nn.Conv2d | nn.ConvTranspose2d) -> torch.Tensor:
    """``conv``'s transformed filters, kept on the module until its weights change."""
    w = conv.weight
    by_phase = isinstance(conv, nn.ConvTranspose2d) and library() is not None
    stamp = (w.data_ptr(), w._version, w.dtype, by_phase)
    kept = conv.__dict__.get("_winograd_filters")
    if kept is None or kept[0] != stamp:
        if by_phase:
            filters = filter_transform2(transposed_as_2x2(w))
        elif isinstance(conv, nn.ConvTranspose2d):
            filters = filter_transform(transposed_as_3x3(w))
        else:
            filters = filter_transform(w)
        kept = (stamp, filters)
        conv.__dict__["_winograd_filters"] = kept
    return kept[1]


def forget_filters(module: nn.Module, kind: type[nn.Module] = nn.Module) -> None:
    """Drop the transformed filters kept under ``module`` (when Winograd is turned off),
    only those of ``kind`` modules if given."""
    for m in module.modules():
        if isinstance(m, kind):
            m.__dict__.pop("_winograd_filters", None)


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


#: images convolved together are capped so that their 36 products stay near this size:
#: beyond it they leave the cache and whole images one at a time ran faster
PRODUCTS_BYTES = 40 << 20


def _winograd(x, filters, bias, phases: int) -> torch.Tensor:
    """The 3x3 convolution of ``x`` with transformed ``filters`` (36, C, phases * out),
    as a channels-last (N, H, W, phases * out) tensor laid out for :func:`conv3x3`
    (``phases`` 1) or :func:`conv_transpose4x4` (``phases`` 4: each input pixel's 2x2
    output pixels)."""
    n, c, h, w = x.shape
    wide = filters.shape[2]
    out_channels = wide // phases
    th, tw = h // 4, w // 4
    side = 2 if phases == 4 else 1
    y = torch.empty(n, th, 4, side, tw, 4, side, out_channels, dtype=x.dtype)
    step = max(1, PRODUCTS_BYTES // (36 * th * tw * wide * x.element_size()))
    for first in range(0, n, step):
        part = x[first : first + step]
        k = part.shape[0]
        padded = F.pad(part.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (k, H+2, W+2, C)
        rows = [torch.empty(k, th, w + 2, c, dtype=x.dtype) for _ in range(6)]
        _input_transform([padded[:, i : i + h : 4] for i in range(6)], rows)
        del padded
        tiles = torch.empty(6, 6, k, th, tw, c, dtype=x.dtype)
        for i, row in enumerate(rows):
            _input_transform([row[:, :, j : j + w : 4] for j in range(6)], list(tiles[i]))
        del rows
        products = torch.bmm(tiles.view(36, -1, c), filters).view(6, 6, k, th, tw, wide)
        del tiles
        if bias is not None:
            # A^T e1 is all ones, so a bias added at tile position (1, 1) reaches every pixel
            products[1, 1] += bias.repeat(phases)
        half = [torch.empty(6, k, th, tw, wide, dtype=x.dtype) for _ in range(4)]
        _output_transform(list(products), half)
        del products
        into = y[first : first + k]
        for p, rows_p in enumerate(half):
            # output pixel (4 tile + p) * side + a, (4 tile + q) * side + b, channel co
            outs = [into[:, :, p, :, :, q].permute(0, 1, 3, 2, 4, 5) for q in range(4)]
            parts = [t.view(k, th, tw, side, side, out_channels) for t in rows_p]
            _output_transform(parts, outs)
    return y.view(n, h * side, w * side, out_channels)


#: tiles transformed and multiplied together by the C transforms. Their 36 input and
#: product rows (4-13 MB at CoNR's channel counts) stay in cache between the steps, and
#: each chunk's products read all the filters once, so fewer tiles starve them: on the
#: Intel Xeon, 224 -> 224 channels at 64 px, 4 images, 64 / 128 / 320 tiles took 35 / 31
#: / 44 ms against oneDNN's 69 (interleaved medians)
CHUNK_TILES = 128


def library() -> ctypes.CDLL | None:
    """The C transforms (``winograd.c``) built for this CPU, or None (no compiler)."""
    lib = native.load(SOURCE)
    if lib is not None and not getattr(lib, "_anirender_typed", False):
        pointer, whole, count = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        lib.winograd_input.argtypes = [pointer, *[whole] * 3, *[count] * 4, pointer]
        lib.winograd_output.argtypes = [pointer, *[whole] * 3, pointer, *[count] * 4, pointer]
        lib.winograd2_input.argtypes = [pointer, *[whole] * 3, *[count] * 6, pointer]
        lib.winograd2_output.argtypes = [
            pointer,
            whole,
            *[count] * 4,
            pointer,
            *[count] * 4,
            pointer,
        ]
        for fn in ("winograd_input", "winograd_output", "winograd2_input", "winograd2_output"):
            getattr(lib, fn).restype = ctypes.c_int
        lib._anirender_typed = True
    return lib


def _in_chunks(filters, tiles: int, transform_in, transform_out) -> bool:
    """Convolve chunk by chunk of ``CHUNK_TILES`` tiles: ``transform_in(first, count,
    lo, hi, into)`` writes tiles [lo, hi) of the chunk into (positions, count, C),
    torch multiplies them by ``filters`` (positions, C, wide), and ``transform_out(first,
    count, lo, hi, products)`` writes their pixels out. The transforms are split
    between threads. False when the input transform refused the input."""
    positions, c, wide = filters.shape
    chunk = min(tiles, CHUNK_TILES)
    ins = torch.empty(positions * chunk * c, dtype=torch.float32)
    outs = torch.empty(positions * chunk * wide, dtype=torch.float32)
    refused = []
    for first in range(0, tiles, chunk):
        count = min(chunk, tiles - first)
        v = ins[: positions * count * c].view(positions, count, c)
        m = outs[: positions * count * wide].view(positions, count, wide)
        into, products = v.data_ptr(), m.data_ptr()

        def part_in(lo, hi, first=first, count=count, into=into):
            if transform_in(first, count, lo, hi, into):
                refused.append(lo)

        native.run_in_parts(part_in, count)
        if refused:
            return False
        torch.bmm(v, filters, out=m)
        native.run_in_parts(
            lambda lo, hi, first=first, count=count, products=products: transform_out(
                first, count, lo, hi, products
            ),
            count,
        )
    return True


def _prepared(x, bias):
    """``x`` channels-last and the bias as contiguous fp32 (or None) for the C loops."""
    x = x.contiguous(memory_format=torch.channels_last)
    bias = None if bias is None else bias.detach().float().contiguous()
    return x, bias, (bias.data_ptr() if bias is not None else None)


def _conv3x3_native(lib, x, filters, bias) -> torch.Tensor | None:
    """:func:`_winograd` for a 3x3 convolution, each transform one C pass over chunks of
    tiles that stay in cache; None where the kernel does not take ``x``."""
    n, c, h, w = x.shape
    out = filters.shape[2]
    x, bias, bias_at = _prepared(x, bias)
    y = torch.empty(n, h, w, out, dtype=torch.float32)
    source, target = x.data_ptr(), y.data_ptr()

    def transform_in(first, count, lo, hi, into):
        return lib.winograd_input(source, h, w, c, first, count, lo, hi, into)

    def transform_out(first, count, lo, hi, products):
        lib.winograd_output(products, h, w, out, bias_at, first, count, lo, hi, target)

    tiles = n * (h // 4) * (w // 4)
    return y if _in_chunks(filters, tiles, transform_in, transform_out) else None


# G (5x2): the filter transform of F(4x4, 2x2) with interpolation points 0, 1, -1, 2
_G2 = ((1 / 2, 0), (-1 / 2, -1 / 2), (-1 / 6, 1 / 6), (1 / 6, 1 / 3), (0, 1))


def filter_transform2(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 2, 2) filters -> (25, in, out): G w G^T per channel pair, in float64."""
    g = torch.tensor(_G2, dtype=torch.float64)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)
    return u.reshape(25, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def transposed_as_2x2(weight: torch.Tensor) -> torch.Tensor:
    """A stride-2, 4x4, padding-1 transposed convolution's (in, out, 4, 4) weights as one
    2x2 convolution per output phase, (4 out, in, 2, 2): phase (a, b), pixel (2 i + a,
    2 j + b), is input pixels i - 1 + a .. i + a through taps 3, 1 (a = 0) or 2, 0."""
    taps = {0: (3, 1), 1: (2, 0)}
    cin, out = weight.shape[:2]
    w = weight.new_zeros(2, 2, out, cin, 2, 2)
    for a in (0, 1):
        for b in (0, 1):
            for u, ku in enumerate(taps[a]):
                for v, kv in enumerate(taps[b]):
                    w[a, b, :, :, u, v] = weight[:, :, ku, kv].t()
    return w.reshape(4 * out, cin, 2, 2)


def _transposed_native(lib, x, filters, bias) -> torch.Tensor | None:
    """A stride-2 4x4 transposed convolution by F(4x4, 2x2) in the C transforms, one 2x2
    convolution per output phase (``filters`` from :func:`transposed_as_2x2`): 25
    products per 4x4 input pixels against 36 for the phases as one 3x3 convolution
    (Intel Xeon, 224 -> 164 channels at 128 px, 4 images: 243 against 333 ms, oneDNN 366).
    Returns channels-last (N, 2H, 2W, out)."""
    n, c, h, w = x.shape
    out = filters.shape[2] // 4
    th, tw = h // 4 + 1, w // 4 + 1  # positions 0 .. h: the odd phases reach one further
    x, bias, bias_at = _prepared(x, bias)
    y = torch.empty(n, 2 * h, 2 * w, out, dtype=torch.float32)
    source, target = x.data_ptr(), y.data_ptr()

    def transform_in(first, count, lo, hi, into):
        return lib.winograd2_input(source, h, w, c, th, tw, first, count, lo, hi, into)

    def transform_out(first, count, lo, hi, products):
        lib.winograd2_output(products, out, h, w, th, tw, bias_at, first, count, lo, hi, target)

    return y if _in_chunks(filters, n * th * tw, transform_in, transform_out) else None


def conv3x3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, w, bias, 1, 1)`` for ``filters = filter_transform(w)``.

    ``x`` is (N, C, H, W) with H and W multiples of 4, best channels-last; the result is
    channels-last. Not differentiable on purpose: inference only.
    """
    lib = library()
    y = _conv3x3_native(lib, x, filters, bias) if lib is not None else None
    if y is None:
        y = _winograd(x, filters, bias, 1)
    return y.permute(0, 3, 1, 2)


def transposed_as_3x3(weight: torch.Tensor) -> torch.Tensor:
    """A stride-2, 4x4, padding-1 transposed convolution's (in, out, 4, 4) weights as a
    3x3 convolution's (4 out, in, 3, 3) on its input: output pixel (2i + a, 2j + b) is
    input pixels i-1..i+1, j-1..j+1 through taps 3, 1 (a = 0) or 2, 0 (a = 1)."""
    taps = {0: (3, 1, None), 1: (None, 2, 0)}  # phase -> transposed tap per 3x3 row
    w = weight.new_zeros(2, 2, weight.shape[1], weight.shape[0], 3, 3)
    for a in (0, 1):
        for b in (0, 1):
            for u, ku in enumerate(taps[a]):
                for v, kv in enumerate(taps[b]):
                    if ku is not None and kv is not None:
                        w[a, b, :, :, u, v] = weight[:, :, ku, kv].t()
    return w.reshape(4 * weight.shape[1], weight.shape[0], 3, 3)


def conv_transpose4x4(x, filters, bias) -> torch.Tensor:
    """``F.conv_transpose2d(x, w, bias, 2, 1)`` for 4x4 ``w``; channels-last (N, out, 2H,
    2W). ``filters``: ``filter_transform2(transposed_as_2x2(w))`` (25 rows) for the C
    transforms, ``filter_transform(transposed_as_3x3(w))`` (36 rows) for the torch ones."""
    if filters.shape[0] == 36:
        return _winograd(x, filters, bias, 4).permute(0, 3, 1, 2)
    lib = library()
    y = _transposed_native(lib, x, filters, bias) if lib is not None else None
    if y is None:
        raise RuntimeError("F(4x4, 2x2) filters need the C transforms (winograd.c)")
    return y.permute(0, 3, 1, 2)


def convolve(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by Winograd where :func:`applies` (or :func:`applies_transposed`)
    says so."""
    if isinstance(conv, nn.ConvTranspose2d):
        if applies_transposed(conv, x):
            return conv_transpose4x4(x, transformed_filters(conv), conv.bias)
    elif applies(conv, x):
        return conv3x3(x, transformed_filters(conv), conv.bias)
    return conv(x)
