"""Official CoNR framing: a centred square around the character, resized to the working size.

The reference crops every sheet image and UDP frame to the square centred on the
bounding box of alpha > 0 (zero padded where the square leaves the frame), resizes it to
the working size (images: linear when enlarging, area when shrinking; UDPs: nearest) and
pastes the rendered frame back into the original frame the same way in reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AniRenderError
from .alpha import premultiply_official


@dataclass(frozen=True)
class SquareCrop:
    """A square of ``side`` pixels at (``top``, ``left``) in a ``height`` x ``width`` frame.

    The square may reach outside the frame; that part is zero padding.
    """

    height: int
    width: int
    top: int
    left: int
    side: int


def square_crop_around(alpha: np.ndarray) -> SquareCrop | None:
    """The centred square around ``alpha > 0``, or None when nothing is visible."""
    alpha = np.asarray(alpha)
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    bh, bw = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    side = max(bh, bw)
    # Python's round (half to even), as the reference computes it
    return SquareCrop(
        height=alpha.shape[0],
        width=alpha.shape[1],
        top=int(round(top - (side - bh) / 2)),
        left=int(round(left - (side - bw) / 2)),
        side=side,
    )


def crop_square(image: np.ndarray, crop: SquareCrop) -> np.ndarray:
    """(H, W, C) -> (side, side, C), zero outside the frame."""
    out = np.zeros((crop.side, crop.side, image.shape[2]), dtype=image.dtype)
    t0, l0 = max(crop.top, 0), max(crop.left, 0)
    t1, l1 = min(crop.top + crop.side, crop.height), min(crop.left + crop.side, crop.width)
    out[t0 - crop.top : t1 - crop.top, l0 - crop.left : l1 - crop.left] = image[t0:t1, l0:l1]
    return out


def resize_image(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize (h, w, C) per channel: bilinear when enlarging, area when shrinking.

    uint8 in, uint8 out (rounded); float in, float32 out.
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    width = width or height
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    data = image.astype(np.float32)
    if height > h and width > w:
        t = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))[None]
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
        out = t[0].permute(1, 2, 0).numpy()
    else:
        out = np.stack(
            [
                np.asarray(
                    Image.fromarray(data[..., c], mode="F").resize((width, height), Image.BOX)
                )
                for c in range(data.shape[2])
            ],
            axis=-1,
        )
    if image.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(np.float32)


def resize_image_numpy(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """``resize_image`` in numpy alone (Blender's Python has no torch or Pillow): the same
    bilinear (torch, align_corners=False) when enlarging and box filter (Pillow's BOX)
    when shrinking, as one weight matrix per axis."""
    width = width or height
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    weights = _bilinear_weights if height > h and width > w else _box_weights
    data = image.astype(np.float32)
    out = np.einsum("oh,hwc->owc", weights(h, height), data)
    out = np.einsum("pw,owc->opc", weights(w, width), out)
    if image.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(np.float32)


def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation at pixel centres, edges clamped."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = (source - low).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def _box_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) box filter: the mean of the input pixels whose centres the output
    pixel's footprint covers (Pillow's BOX coefficients)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    last = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    x = np.arange(n_in)
    offset = (x[None] - centre[:, None] + 0.5) / max(scale, 1.0)
    inside = (x[None] >= first[:, None]) & (x[None] < last[:, None])
    weights = (inside & (offset > -0.5) & (offset <= 0.5)).astype(np.float32)
    return weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)


def resize_udp(udp: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w, 4) UDP to (size, size, 4) (pixel centres)."""
    h, w = udp.shape[:2]
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return udp[rows][:, cols].astype(np.float32)


def frame_sheet_image(image: np.ndarray, size: int, name: str = "sheet image") -> np.ndarray:
    """uint8 straight RGBA (H, W, 4) -> uint8 (size, size, 4), RGB premultiplied.

    As the reference: premultiply first, then crop and resize. Feed the result to
    ``CoNR.encode_sheet(..., premultiplied=True)``.
    """
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
        raise AniRenderError(f"{name}: expected 8-bit RGBA, got {image.dtype} {image.shape}.")
    crop = square_crop_around(image[..., 3] > 0)
    if crop is None:
        raise AniRenderError(f"{name} is fully transparent; there is no character to read.")
    return resize_image(crop_square(premultiply_official(image), crop), size)


def frame_udp(udp: np.ndarray, size: int) -> tuple[np.ndarray, SquareCrop | None]:
    """(H, W, 4) UDP -> ((size, size, 4) UDP, crop); crop is None when V is empty."""
    visible = (udp[..., 3] * 255).clip(0, 255).astype(np.uint8) > 0
    crop = square_crop_around(visible)
    if crop is None:
        return np.zeros((size, size, 4), np.float32), None
    return resize_udp(crop_square(udp.astype(np.float32), crop), size), crop


def paste_back(
    rgba: np.ndarray, crop: SquareCrop | None, height: int, width: int, resize=resize_image
) -> np.ndarray:
    """Working-size premultiplied RGBA -> (height, width, 4) in the original frame.

    ``resize``: ``resize_image_numpy`` where torch and Pillow are absent (Blender)."""
    out = np.zeros((height, width, rgba.shape[2]), dtype=np.float32)
    if crop is None:
        return out
    square = resize(rgba.astype(np.float32), crop.side)
    t0, l0 = max(crop.top, 0), max(crop.left, 0)
    t1, l1 = min(crop.top + crop.side, height), min(crop.left + crop.side, width)
    out[t0:t1, l0:l1] = square[t0 - crop.top : t1 - crop.top, l0 - crop.left : l1 - crop.left]
    return out


def shade_in_frame(shade, udp: np.ndarray, size: int, resize=resize_image_numpy) -> np.ndarray:
    """One (H, W, 4) UDP frame shaded the reference way: crop the centred square around the
    character (V > 0), resize it to ``size`` (nearest), ``shade`` it ((1, size, size, 4)
    UDP -> premultiplied RGBA of that shape) and paste the answer back into an (H, W, 4)
    frame. A frame without the character is transparent and never sent to the shader."""
    height, width = udp.shape[:2]
    framed, crop = frame_udp(udp, size)
    if crop is None:
        return np.zeros((height, width, 4), np.float32)
    rgba = np.asarray(shade(framed[None]))[0]
    return paste_back(rgba, crop, height, width, resize=resize)


def frame_sample(image: np.ndarray, udp: np.ndarray, size: int):
    """Crop a sample to the centred square around the character and resize it, as the
    official inference frames sheets and poses (so training sees what shading sees)."""

    crop = square_crop_around((image[..., 3] > 0) | (udp[..., 3] > 0))
    if crop is None:
        return image, udp
    image = resize_image(crop_square(image, crop), size)
    return image, resize_udp(crop_square(udp, crop), size)
