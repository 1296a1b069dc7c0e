"""Image metrics the shaders are judged by (numpy and scikit-image; no torch).

Frames are premultiplied float RGBA in [0, 1]; they are compared composited on white, so
the background counts as an artist sees it and a missing character costs what it shows.
"""

from __future__ import annotations

import numpy as np

from .alpha import over_white


def image_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """L1, PSNR (dB) and SSIM of premultiplied RGBA frames, compared on white."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = over_white(predicted), over_white(truth)
    l1 = float(np.abs(a - b).mean())
    psnr = float(np.mean([peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(a, b)]))
    ssim = float(
        np.mean(
            [structural_similarity(t, p, data_range=1.0, channel_axis=-1) for p, t in zip(a, b)]
        )
    )
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def flicker(shaded: np.ndarray, truth: np.ndarray) -> float:
    """Temporal error: mean |(N_t - N_t-1) - (T_t - T_t-1)| over consecutive frames.

    ``shaded`` (N) and ``truth`` (T) are premultiplied RGBA sequences (frames, H, W, 4) in
    [0, 1], compared on white. A shader that changes between frames only as the truth
    does scores 0; one that shimmers where the truth is still scores what it adds.
    """
    if len(shaded) != len(truth) or len(shaded) < 2:
        raise ValueError("flicker needs two sequences of the same length, at least 2 frames")
    a, b = over_white(shaded), over_white(truth)
    return float(np.abs(np.diff(a, axis=0) - np.diff(b, axis=0)).mean())
