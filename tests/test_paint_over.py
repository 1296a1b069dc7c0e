"""The demo's stand-in for an artist's repaint: flat cels and ink, the cut-out kept."""

import numpy as np
import pytest

from anirender.models.metrics import flicker
from anirender.models.paint_over import INK, paint_over


def _shaded_disc(size=64):
    yy, xx = np.mgrid[:size, :size] / size
    rgba = np.zeros((size, size, 4), np.uint8)
    inside = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.16
    shade = np.clip(60 + 180 * xx, 0, 255)  # a smooth gradient: many colours
    rgba[..., 0] = shade
    rgba[..., 1] = 120
    rgba[..., 2] = 255 - shade
    rgba[..., 3] = np.where(inside, 255, 0)
    return rgba, inside


def test_paint_over_flattens_colours_and_inks_the_outline_keeping_the_cut_out():
    rgba, inside = _shaded_disc()
    painted = paint_over(rgba, cels=4)
    np.testing.assert_array_equal(painted[..., 3], rgba[..., 3])
    colours = {tuple(c) for c in painted[..., :3][inside]}
    assert len({tuple(c) for c in rgba[..., :3][inside]}) > 20
    assert len(colours) <= 5  # four cels and the ink
    ink = np.all(painted[..., :3] == INK, axis=-1) & inside
    rim = inside & ~np.roll(inside, 1, 0) | inside & ~np.roll(inside, -1, 1)
    assert ink[rim].mean() > 0.9  # the silhouette is inked
    assert ink[inside].mean() < 0.3  # the cels are not
    np.testing.assert_array_equal(paint_over(rgba, cels=4), painted)  # seeded


def test_paint_over_refuses_what_is_not_straight_rgba():
    with pytest.raises(ValueError, match="uint8 straight RGBA"):
        paint_over(np.zeros((8, 8, 3), np.uint8))


def test_flicker_is_zero_when_the_shader_changes_as_the_truth_does():
    rng = np.random.default_rng(0)
    truth = rng.random((5, 16, 16, 4)).astype(np.float32)
    truth[..., :3] *= truth[..., 3:4]
    assert flicker(truth, truth) == 0.0
    offset = truth.copy()
    offset[..., :3] = np.clip(offset[..., :3] * 0.9, 0, 1)  # wrong but steady colours
    assert flicker(offset, truth) < 0.05
    shimmer = truth.copy()
    shimmer[1::2, ..., :3] *= 0.5  # every other frame darker
    assert flicker(shimmer, truth) > 4 * flicker(offset, truth)
