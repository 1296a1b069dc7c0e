"""models.metrics on hand-made frames: what the silhouette and garment scores count."""

from __future__ import annotations

import numpy as np
import pytest

from anirender.models.metrics import (
    pixel_labels,
    region_colour_errors,
    silhouette_metrics,
    uv_label_map,
)


def frame(colour, box, size=8):
    """Premultiplied RGBA (1, size, size, 4): ``colour`` inside rows/cols ``box``."""
    out = np.zeros((1, size, size, 4), np.float32)
    (r0, r1), (c0, c1) = box
    out[0, r0:r1, c0:c1, :3] = colour
    out[0, r0:r1, c0:c1, 3] = 1.0
    return out


def test_silhouette_metrics_count_only_the_character():
    truth = frame((1.0, 0.0, 0.0), ((2, 6), (2, 6)))  # 16 red pixels
    wrong = frame((0.0, 0.0, 1.0), ((2, 6), (2, 6)))  # the same shape, blue
    same = silhouette_metrics(truth, truth)
    assert same["l1"] == 0 and same["pixels"] == 16
    # over white: red vs blue differ by 1 in R and B, 0 in G -> 2/3 per pixel
    assert silhouette_metrics(wrong, truth)["l1"] == pytest.approx(2 / 3)
    # a missing half shows white where the truth is red: 1 in G and B on 8 of 16 pixels
    half = frame((1.0, 0.0, 0.0), ((2, 4), (2, 6)))
    assert silhouette_metrics(half, truth)["l1"] == pytest.approx(8 * (2 / 3) / 16)
    # a bigger canvas of background changes nothing (the score lives in the silhouette)
    big_truth, big_wrong = (
        np.pad(truth, ((0, 0), (0, 24), (0, 24), (0, 0))),
        np.pad(wrong, ((0, 0), (0, 24), (0, 24), (0, 0))),
    )
    assert silhouette_metrics(big_wrong, big_truth)["l1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        silhouette_metrics(np.zeros_like(truth), np.zeros_like(truth))


def test_region_errors_compare_mean_colours_per_label():
    truth = frame((0.2, 0.4, 0.6), ((0, 8), (0, 8)))
    truth[0, 4:, :, :3] = (0.8, 0.8, 0.8)
    labels = np.zeros((1, 8, 8), int)
    labels[0, 4:] = 1
    labels[0, :, 0] = -1  # not judged
    predicted = truth.copy()
    predicted[0, 4:, :, :3] = (0.5, 0.8, 0.8)  # the lower region's colour is off in red
    errors = region_colour_errors(predicted, truth, labels, ("upper", "lower", "empty"))
    assert errors == {"upper": 0.0, "lower": pytest.approx(0.1)}


def test_labels_from_the_uv_layout_and_loose_parts():
    # a UV layout: corners with U < 0.5 are label 0, the others label 1
    corners = np.array([[u, v] for u in (0.1, 0.4, 0.6, 0.9) for v in (0.1, 0.9)])
    label_map = uv_label_map(corners, (corners[:, 0] > 0.5).astype(int), 4)
    assert label_map.shape == (4, 4)
    assert (label_map[:, :2] == 0).all() and (label_map[:, 2:] == 1).all()
    uv = np.zeros((1, 8, 8, 4), np.float32)
    uv[0, 2:6, 2:6, 0] = np.linspace(0.05, 0.95, 4)[None, :]
    uv[0, 2:6, 2:6, 1] = 0.5
    uv[0, 2:6, 2:6, 3] = 1.0
    alpha = np.zeros((1, 8, 8), np.float32)
    alpha[0, 1:7, 2:6] = 1.0  # the look also covers a row above and below the body
    labels = pixel_labels(uv, alpha, label_map, above=7, below=9)
    assert (labels[0, 2:6, 2:4] == 0).all() and (labels[0, 2:6, 4:6] == 1).all()
    assert (labels[0, 1, 2:6] == 7).all() and (labels[0, 6, 2:6] == 9).all()
    assert (labels[0, 0] == -1).all() and (labels[0, :, :2] == -1).all()
