"""The UDP pass as every consumer reads it: one check, one mask quantisation.

A UDP frame is float (H, W, 4): X, Y, Z (the surface point's canonical position, see
``addon.passes.canonical``) in [0, 1] and the occupancy V in [0, 1]; background all 0.
A batch is (B, H, W, 4). numpy only, so Blender, the service and the shaders share it.
"""

from __future__ import annotations

import numpy as np

from ..errors import AniRenderError

#: values this far outside [0, 1] are rounding, not a broken pass; they are clipped
TOLERANCE = 1e-6


def check_udp(
    udp, size: int | None = None, name: str = "UDP", error: type = AniRenderError
) -> np.ndarray:
    """A checked float32 (B, H, W, 4) UDP batch (one (H, W, 4) frame becomes B = 1):
    floats, at least one frame, finite, within [0, 1] (``TOLERANCE`` clipped), and
    ``size`` x ``size`` when given. Raises ``error`` with a message for the artist."""
    udp = np.asarray(udp)
    if udp.ndim == 3:
        udp = udp[None]
    if (
        udp.ndim != 4
        or udp.shape[-1] != 4
        or udp.shape[0] < 1
        or not np.issubdtype(udp.dtype, np.floating)
    ):
        raise error(f"{name} must be float (frames, H, W, 4) XYZV; got {udp.dtype} {udp.shape}.")
    if size is not None and udp.shape[1:3] != (size, size):
        raise error(
            f"{name} is {udp.shape[2]}x{udp.shape[1]} but the sheet is {size}x{size}; "
            "use the same working size for both."
        )
    if not np.isfinite(udp).all():
        raise error(f"{name} contains NaN or infinite values.")
    lo, hi = float(udp.min()), float(udp.max())
    if lo < -TOLERANCE or hi > 1 + TOLERANCE:
        raise error(f"{name} values must lie in [0, 1]; found {lo:.4g} .. {hi:.4g}.")
    return np.ascontiguousarray(np.clip(udp, 0.0, 1.0), dtype=np.float32)


def quantise_udp_mask(udp: np.ndarray) -> np.ndarray:
    """UDP with V quantised like the CoNR reference's uint8 round trip (truncated)."""
    out = np.array(udp, dtype=np.float32, copy=True)
    out[..., 3] = (udp[..., 3] * 255).clip(0, 255).astype(np.uint8) / np.float32(255.0)
    return out
