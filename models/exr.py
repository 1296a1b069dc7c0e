"""Float OpenEXR read/write for passes outside Blender (CLI, service, tests).

Blender writes EXR itself; this module reads them back through the OpenEXR package and
writes them from numpy (its own ZIP encoder, numpy and zlib), always losslessly.
"""

import struct
import zlib
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
    """Write float32 (H, W, 1|3|4) as a ZIP-compressed scanline EXR.

    Encoded here (numpy and zlib, see ``encode_exr``), not through the OpenEXR binding:
    the same pixels for a third of the CPU time on pass images, which are mostly empty
    background. OpenEXR and Blender read the files."""
    data = encode_exr(pixels)
    with open(path, "wb") as handle:
        handle.write(data)


# ZIP compression in OpenEXR: blocks of 16 scanlines, each the lines one after the other
# and in each line every channel's values (channels sorted by name, little-endian
# float32); the bytes reordered (even-numbered ones first, then the odd ones), each byte
# stored as its difference to the one before plus 128 (modulo 256), then zlib. A block
# that would not shrink is stored raw. (OpenEXR file layout and ImfZip.cpp.)
_LINES_PER_BLOCK = 16
_FLOAT = 2  # OpenEXR pixel type FLOAT (32-bit)
_ZIP = 3  # OpenEXR compression ZIP_COMPRESSION
_ZLIB_LEVEL = 1  # with Z_RLE the level changes nothing but the speed
_empty_blocks: dict[int, bytes] = {}  # raw byte count -> an all-zero block, compressed


def encode_exr(pixels: np.ndarray) -> bytes:
    """The bytes of a ZIP-compressed scanline EXR of float32 (H, W, 1|3|4) ``pixels``
    (channels Y, RGB or RGBA; row 0 at the top). Bands of 16 rows that are all zero,
    the empty background of a pass, are compressed once and reused; zlib runs with its
    run-length strategy (a valid deflate stream that any reader inflates), which is twice
    as fast as the default on these mostly empty images."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise AniRenderError(f"Cannot write an EXR from an array of shape {pixels.shape}.")
    pixels = pixels.astype("<f4", copy=False)
    height, width, count = pixels.shape
    if height == 0 or width == 0:
        raise AniRenderError(f"Cannot write an empty EXR ({width} x {height}).")
    names = {1: "Y", 3: "RGB", 4: "RGBA"}[count]
    header = _header(sorted(names), width, height)  # file order: by name, here reversed
    lines = _LINES_PER_BLOCK
    blocks = -(-height // lines)
    # bit patterns, so that -0.0 counts as data
    rows_used = np.ascontiguousarray(pixels).view(np.uint32).reshape(height, -1).any(axis=1)
    used = np.zeros(blocks * lines, bool)
    used[:height] = rows_used
    used = used.reshape(blocks, lines).any(axis=1)
    packed = {}
    if used.any():
        first, last = np.flatnonzero(used)[[0, -1]]
        last_full = min(last, height // lines - 1)  # the last block may be shorter
        if last_full >= first:
            span = pixels[first * lines : (last_full + 1) * lines]
            packed.update(zip(range(first, last_full + 1), _zip_rows(span, last_full + 1 - first)))
        if last > last_full:
            packed[last] = _zip_rows(pixels[last * lines :], 1)[0]
    chunks = []
    for block in range(blocks):
        top = block * lines
        data = packed.get(block) if used[block] else None
        if data is None:
            size = (min(top + lines, height) - top) * width * count * 4
            data = _empty_blocks.get(size)
            if data is None:
                data = _empty_blocks[size] = _deflate(np.zeros((1, size), np.uint8))[0]
        chunks.append(struct.pack("<ii", top, len(data)) + data)
    offsets = len(header) + 8 * blocks + np.cumsum([0] + [len(c) for c in chunks[:-1]])
    return b"".join([header, offsets.astype("<u8").tobytes(), *chunks])


def _zip_rows(band: np.ndarray, blocks: int) -> list[bytes]:
    """Compress (blocks * 16 or fewer lines, W, C) float32 ``band`` as ``blocks`` blocks."""
    # per line, the channels in file order (R, G, B, A sorted by name: reversed), a copy
    planar = np.ascontiguousarray(band[:, :, ::-1].transpose(0, 2, 1)).reshape(blocks, -1)
    # the low byte of each 16-bit half of a little-endian float sits at an even offset:
    # split the halves' low and high bytes to get the even bytes first, then the odd ones
    halves = planar.view("<u2")
    shuffled = np.empty((blocks, 2, halves.shape[1]), np.uint8)
    np.bitwise_and(halves, 0xFF, out=shuffled[:, 0], casting="unsafe")
    np.right_shift(halves, 8, out=shuffled[:, 1], casting="unsafe")
    return _deflate(shuffled.reshape(blocks, -1))


def _deflate(shuffled: np.ndarray) -> list[bytes]:
    """Predict and deflate each row of (blocks, bytes) reordered uint8 data; a block that
    would not shrink is stored as it was before reordering."""
    count, size = shuffled.shape
    predicted = np.empty_like(shuffled)
    predicted[:, 0] = shuffled[:, 0]
    np.subtract(shuffled[:, 1:], shuffled[:, :-1], out=predicted[:, 1:])
    predicted[:, 1:] += 128  # uint8: modulo 256
    out = []
    for block, row in enumerate(predicted):
        deflate = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
        data = deflate.compress(row) + deflate.flush()
        out.append(data if len(data) < size else _unshuffle(shuffled[block]))
    return out


def _unshuffle(shuffled: np.ndarray) -> bytes:
    raw = np.empty_like(shuffled)
    half = (shuffled.size + 1) // 2
    raw[0::2], raw[1::2] = shuffled[:half], shuffled[half:]
    return raw.tobytes()


def _attribute(name: str, kind: str, value: bytes) -> bytes:
    return b"%s\0%s\0" % (name.encode(), kind.encode()) + struct.pack("<i", len(value)) + value


def _header(channels: list[str], width: int, height: int) -> bytes:
    chlist = b"".join(
        c.encode() + b"\0" + struct.pack("<iB3xii", _FLOAT, 0, 1, 1) for c in channels
    )
    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    return b"".join(
        [
            struct.pack("<ii", 20000630, 2),  # magic number, version 2, single-part scanline
            _attribute("channels", "chlist", chlist + b"\0"),
            _attribute("compression", "compression", bytes([_ZIP])),
            _attribute("dataWindow", "box2i", window),
            _attribute("displayWindow", "box2i", window),
            _attribute("lineOrder", "lineOrder", b"\0"),  # increasing y
            _attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
            _attribute("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0)),
            _attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
            b"\0",
        ]
    )
