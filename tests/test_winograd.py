"""Winograd convolutions (``models/winograd.py``): torch's own convolutions up to rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anirender.models import native, winograd


@pytest.fixture(params=["C transforms", "torch transforms"])
def transforms(request, monkeypatch):
    """Every test runs both ways: the C transforms (``winograd.c``, built by this
    machine's compiler) and the torch passes that run where there is no compiler."""
    if request.param == "C transforms":
        assert native.compiler() is not None, "the test machine needs a C compiler (cc)"
        assert winograd.library() is not None
    else:
        monkeypatch.setattr(winograd, "library", lambda: None)
    return request.param


def _conv(cin, cout, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=bias).eval()


@pytest.mark.parametrize(
    "n, cin, cout, h, w, bias, layout",
    [
        (2, 24, 40, 32, 32, True, torch.channels_last),
        (1, 7, 5, 36, 64, False, torch.contiguous_format),
        (3, 16, 16, 64, 32, True, torch.contiguous_format),
    ],
)
def test_equals_torchs_convolution(transforms, n, cin, cout, h, w, bias, layout):
    conv = _conv(cin, cout, bias)
    x = torch.randn(n, cin, h, w, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=layout)
    with torch.inference_mode():
        want = conv(x)
        assert winograd.applies(conv, x)
        got = winograd.convolve(conv, x)
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    # rounding only: the transforms multiply by up to 25, so a few ulps of the output scale
    assert (got - want).abs().max() < 2e-5 * want.abs().max()
    # a real convolution, not a near-copy: shifting the input changes the answer
    with torch.inference_mode():
        moved = winograd.convolve(conv, x.roll(1, -1))
    assert (moved - want).abs().max() > 0.1 * want.abs().max()


def test_filters_follow_the_weights_and_other_cases_fall_back(transforms):
    conv = _conv(8, 8)
    x = torch.randn(1, 8, 32, 32)
    with torch.inference_mode():
        winograd.convolve(conv, x)
        with torch.no_grad():
            conv.weight.mul_(-2.0)  # in place: the kept filters must be redone
        assert (winograd.convolve(conv, x) - conv(x)).abs().max() < 1e-4
    small = 4 if transforms == "C transforms" else 16  # too small to pay
    assert not winograd.applies(conv, torch.randn(1, 8, small, small))
    assert winograd.applies(conv, torch.randn(1, 8, 2 * small, 2 * small))
    assert not winograd.applies(conv, torch.randn(1, 8, 34, 32))  # not whole 4x4 tiles
    assert not winograd.applies(conv, x.bfloat16())  # bf16 rounding is blown up
    strided = nn.Conv2d(8, 8, 3, 2, 1)
    assert not winograd.applies(strided, x)
    with torch.inference_mode():
        assert torch.equal(winograd.convolve(strided, x), strided(x))


def test_filter_transform_is_exact_on_a_single_tap(transforms):
    """A filter with one tap (the centre) is the identity: the transform round-trips it."""
    conv = _conv(3, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c, 1, 1] = 1.0
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert (winograd.convolve(conv, x) - x).abs().max() < 1e-5
    assert F.conv2d(x, conv.weight, padding=1).sub(x).abs().max() < 1e-6


@pytest.mark.parametrize(
    "n, cin, cout, h, w, bias", [(2, 12, 20, 64, 68, True), (1, 8, 5, 64, 64, False)]
)
def test_transposed_equals_torchs(transforms, n, cin, cout, h, w, bias):
    """A stride-2 4x4 transposed convolution as one 3x3 Winograd convolution to the 2x2
    output pixels of each input pixel: torch's own up to rounding, borders included."""
    torch.manual_seed(2)
    up = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias).eval()
    x = torch.randn(n, cin, h, w).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = up(x)
        assert winograd.applies_transposed(up, x)
        got = winograd.convolve(up, x)
    assert got.shape == want.shape == (n, cout, 2 * h, 2 * w)
    # the C transforms run one 2x2 convolution per output phase by F(4x4, 2x2)
    rows = 25 if transforms == "C transforms" else 36
    assert winograd.transformed_filters(up).shape == (rows, cin, 4 * cout)
    assert (got - want).abs().max() < 2e-5 * want.abs().max()
    assert not winograd.applies_transposed(nn.ConvTranspose2d(cin, cout, 4, 2, 1, 1), x)
    if transforms == "C transforms":  # wider than the C loops take: oneDNN's
        wide = winograd.C_MAX_CHANNELS + 1
        assert not winograd.applies_transposed(
            nn.ConvTranspose2d(wide, 1, 4, 2, 1), torch.empty(1, wide, 32, 32)
        )
    assert not winograd.applies_transposed(nn.ConvTranspose2d(cin, cout, 3, 2, 1), x)


@pytest.mark.parametrize("threads", [1, 2])
def test_images_in_several_groups_come_out_the_same(transforms, monkeypatch, threads):
    """Large inputs are convolved a few images (torch) or tiles (C) at a time, and the C
    transforms split each chunk between threads; the result does not change, also where
    a chunk ends inside an image or a tile row."""
    conv = _conv(16, 24)
    up = nn.ConvTranspose2d(16, 8, 4, 2, 1).eval()
    x = torch.randn(3, 16, 32, 64, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(winograd, "MIN_SIDE_TRANSPOSED", 32)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            whole = winograd.convolve(conv, x), winograd.convolve(up, x)
            monkeypatch.setattr(winograd, "PRODUCTS_BYTES", 1)
            monkeypatch.setattr(winograd, "CHUNK_TILES", 7)
            parts = winograd.convolve(conv, x), winograd.convolve(up, x)
            want = conv(x), up(x)
    finally:
        torch.set_num_threads(torch_threads)
    for a, b, c in zip(whole, parts, want):
        # the same arithmetic; a matrix library may block other row counts differently
        assert (a - b).abs().max() <= 1e-6 * a.abs().max()
        assert (b - c).abs().max() < 2e-5 * c.abs().max()


def test_the_c_transforms_match_the_torch_passes(monkeypatch):
    """The two ways compute the same transforms: they agree to rounding on a CoNR-like
    stack (channels over one 64-channel block, bias, several chunks)."""
    conv = _conv(70, 66)
    x = torch.randn(2, 70, 32, 32, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(winograd, "CHUNK_TILES", 40)
    assert winograd.library() is not None, "the test machine needs a C compiler (cc)"
    with torch.inference_mode():
        by_c = winograd.convolve(conv, x)
        monkeypatch.setattr(winograd, "library", lambda: None)
        by_torch = winograd.convolve(conv, x)
    assert (by_c - by_torch).abs().max() < 1e-5 * by_torch.abs().max()
