"""Float OpenEXR read/write for passes outside Blender (CLI, service, tests).

Blender writes EXR itself; this module reads them back (and writes them from numpy)
through the OpenEXR package, always losslessly (ZIP).
"""

from pathlib import Path

import numpy as np

from ..errors import AniRenderError

_CHANNEL_SETS = ("RGBA", "RGB", "XYZ", "Y")


def read_exr(path) -> np.ndarray:
    """Read an EXR as float32 (H, W, C). RGBA/RGB/single-channel layouts are accepted."""
    import OpenEXR

    path = Path(path)
    if not path.is_file():
        raise AniRenderError(f"EXR file not found: {path}")
    try:
        with OpenEXR.File(str(path), separate_channels=False) as exr:
            channels = exr.channels()
            for name in _CHANNEL_SETS:
                if name in channels:
                    pixels = np.asarray(channels[name].pixels, dtype=np.float32)
                    break
            else:
                names = sorted(channels)
                if not names:
                    raise AniRenderError(f"{path.name} has no image channels.")
                pixels = np.asarray(channels[names[0]].pixels, dtype=np.float32)
    except AniRenderError:
        raise
    except Exception as exc:  # the OpenEXR binding raises bare RuntimeError/OSError
        raise AniRenderError(
            f"Could not read {path.name} as OpenEXR ({exc}). Is the file complete?"
        ) from exc
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels


def write_exr(path, pixels: np.ndarray) -> None:
    """Write float32 (H, W, 1|3|4) as a ZIP-compressed scanline EXR."""
    import OpenEXR

    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise AniRenderError(f"Cannot write an EXR from an array of shape {pixels.shape}.")
    name = {1: "Y", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    data = pixels[:, :, 0] if name == "Y" else pixels
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {name: data}) as exr:
        exr.write(str(path))
