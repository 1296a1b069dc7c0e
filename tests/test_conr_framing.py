"""Official framing: centred square around alpha, resize, paste back."""

import numpy as np
import pytest

from anirender.errors import AniRenderError
from anirender.models import alpha, framing


def test_square_is_centred_on_the_alpha_box():
    alpha = np.zeros((60, 80), bool)
    alpha[10:30, 40:50] = True  # 20 tall, 10 wide
    crop = framing.square_crop_around(alpha)
    assert (crop.top, crop.left, crop.side) == (10, 35, 20)
    assert framing.square_crop_around(np.zeros((5, 5), bool)) is None


def test_crop_outside_the_frame_is_zero_padded():
    image = np.arange(1, 5 * 6 * 2 + 1, dtype=np.float32).reshape(5, 6, 2)
    alpha = np.zeros((5, 6), bool)
    alpha[0:5, 5] = True  # a tall strip on the right edge: the square leaves the frame
    crop = framing.square_crop_around(alpha)
    square = framing.crop_square(image, crop)
    assert square.shape == (5, 5, 2)
    assert crop.left + crop.side > 6
    inside = 6 - crop.left
    np.testing.assert_array_equal(square[:, :inside], image[:, crop.left :])
    assert (square[:, inside:] == 0).all()


def test_resize_rules():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    down = framing.resize_image(image, 4)  # area: exact 2x2 means
    means = image.astype(np.float64).reshape(4, 2, 4, 2, 4).mean((1, 3))
    assert np.abs(down.astype(np.float64) - means).max() <= 0.5 + 1e-9
    udp = rng.random((8, 8, 4), dtype=np.float32)
    up = framing.resize_udp(udp, 16)  # nearest: no new values
    np.testing.assert_array_equal(up, udp.repeat(2, 0).repeat(2, 1))
    smooth = np.linspace(0, 1, 8, dtype=np.float32)[None, :, None].repeat(8, 0)
    big = framing.resize_image(smooth, 16)  # bilinear when enlarging
    assert np.all(np.diff(big[4, :, 0]) >= -1e-7) and big.dtype == np.float32


def test_frame_and_paste_back_round_trip():
    h, w, size = 90, 70, 128
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    udp = np.zeros((h, w, 4), np.float32)
    body = (np.abs(yy - 45) < 30) & (np.abs(xx - 30) < 12)
    udp[body] = 0.5
    udp[..., 3] = body
    framed, crop = framing.frame_udp(udp, size)
    assert framed.shape == (size, size, 4)
    assert crop.side == 59 and framed[..., 3].max() == 1
    # a "render" that is a smooth picture of the framed mask comes back where it was
    shade = np.stack(
        [framed[..., 3] * 0.25, framed[..., 3] * 0.5, framed[..., 0], framed[..., 3]], -1
    )
    back = framing.paste_back(shade, crop, h, w)
    assert back.shape == (h, w, 4)
    assert np.abs(back[..., 3] - body).mean() < 0.05
    assert back[:, 60:].max() == 0  # outside the square nothing is painted
    empty, none = framing.frame_udp(np.zeros((h, w, 4), np.float32), size)
    assert none is None and not empty.any()
    assert not framing.paste_back(empty, none, h, w).any()


def test_sheet_framing_premultiplies_then_crops():
    image = np.zeros((50, 40, 4), np.uint8)
    image[10:20, 5:35] = (200, 100, 50, 128)
    framed = framing.frame_sheet_image(image, 128)
    assert framed.shape == (128, 128, 4)
    centre = framed[64, 64]
    np.testing.assert_array_equal(centre, [100, 50, 25, 128])  # truncated premultiply
    with pytest.raises(AniRenderError, match="fully transparent"):
        framing.frame_sheet_image(np.zeros((50, 40, 4), np.uint8), 128)


def test_alpha_conversions():
    rgba = np.array([[[0.25, 0.1, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    straight = alpha.to_straight_uint8(rgba)
    np.testing.assert_array_equal(straight[0, 0], [128, 51, 0, 128])
    np.testing.assert_array_equal(straight[0, 1], [0, 0, 0, 0])
    np.testing.assert_array_equal(alpha.to_premultiplied_uint8(rgba)[0, 0], [64, 26, 0, 128])


@pytest.mark.parametrize("side, size", [(128, 300), (128, 77), (256, 513), (90, 45), (100, 33)])
def test_numpy_resize_matches_the_reference_resize(side, size):
    """Blender's side pastes frames back without torch or Pillow: same numbers."""
    rng = np.random.default_rng(side + size)
    image = rng.random((side, side, 4), dtype=np.float32)
    want = framing.resize_image(image, size)
    got = framing.resize_image_numpy(image, size)
    assert got.shape == want.shape == (size, size, 4) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4


def test_shade_in_frame_is_frame_shade_paste():
    h, w, size = 72, 120, 64
    udp = np.zeros((h, w, 4), np.float32)
    udp[20:60, 70:90] = (0.3, 0.6, 0.9, 1.0)
    seen = []

    def shade(batch):
        seen.append(batch.shape)
        return np.concatenate([batch[..., :3] * batch[..., 3:], batch[..., 3:]], -1)

    out = framing.shade_in_frame(shade, udp, size)
    assert seen == [(1, size, size, 4)] and out.shape == (h, w, 4)
    framed, crop = framing.frame_udp(udp, size)
    want = framing.paste_back(shade(framed[None])[0], crop, h, w)
    assert np.abs(out - want).max() < 1e-4
    assert out[..., 3][20:60, 70:90].min() > 0.99 and out[..., 3][:, :55].max() == 0
    assert not framing.shade_in_frame(shade, np.zeros_like(udp), size).any()
    assert len(seen) == 2  # the empty frame was not shaded
