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
