"""Small-map transposed convolutions as four matrix products (``models/transposed.py``):
torch's own convolutions up to rounding."""

import pytest
import torch
from torch import nn

from anirender.models import transposed


def _up(cin, cout, bias=True, dtype=torch.float32):
    torch.manual_seed(5)
    return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias).eval().to(dtype)


@pytest.mark.parametrize(
    "n, cin, cout, h, w, bias",
    [(4, 24, 300, 4, 4, True), (2, 7, 9, 8, 4, False), (1, 5, 3, 1, 2, True)],
)
def test_equals_torchs_transposed_convolution(n, cin, cout, h, w, bias):
    up = _up(cin, cout, bias)
    x = torch.randn(n, cin, h, w, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        want = up(x)
        assert transposed.applies(up, x)
        got = transposed.convolve(up, x)
    assert got.shape == want.shape == (n, cout, 2 * h, 2 * w)
    assert got.is_contiguous(memory_format=torch.channels_last) or n * h * w == 1
    assert (got - want).abs().max() < 1e-5 * want.abs().max()
    # every phase is its own product: moving the input by one pixel moves the answer
    with torch.inference_mode():
        moved = transposed.convolve(up, x.roll(1, -1))
    assert (moved - want).abs().max() > 0.1 * want.abs().max()


def test_bf16_stays_close_and_the_taps_follow_the_weights():
    up = _up(32, 64)
    x = torch.randn(2, 32, 8, 8)
    with torch.inference_mode():
        want = up(x)
        low = up.to(torch.bfloat16)
        got = transposed.convolve(low, x.bfloat16()).float()
        assert got.dtype == torch.float32
        assert (got - want).abs().max() < 0.03 * want.abs().max()
        up.float()
        with torch.no_grad():
            up.weight.mul_(-1.0)  # in place: the kept taps must be redone
        assert (transposed.convolve(up, x) - up(x)).abs().max() < 1e-5 * want.abs().max()


def test_only_small_inference_maps_are_taken():
    up = _up(8, 8)
    small = torch.randn(1, 8, 4, 4)
    with torch.inference_mode():
        assert transposed.applies(up, torch.randn(1, 8, 8, 8))
        assert not transposed.applies(up, torch.randn(1, 8, 16, 8))  # oneDNN's side
        assert not transposed.applies(nn.ConvTranspose2d(8, 8, 3, 2, 1), small)
        assert not transposed.applies(nn.ConvTranspose2d(8, 8, 4, 2, 1, 1), small)
        assert not transposed.applies(nn.Conv2d(8, 8, 4, 2, 1), small)
    assert not transposed.applies(up, small)  # training keeps torch's differentiable one
