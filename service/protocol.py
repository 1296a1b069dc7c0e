"""The wire format between Blender (``addon.shading``) and the shader service: numpy only.

Version 2, shared by both ends (this module imports numpy and nothing heavy). Version 2
added ``udps`` to a sheet upload; a version 1 client (images only) is answered as before.

- Arrays travel as a NumPy ``.npz`` archive (``numpy.savez``, uncompressed) with the
  content type ``application/x-npz``. Both ends read it with ``allow_pickle=False``, so an
  object array is refused, never unpickled. Before any member is read, the archive's
  directory is checked: only the expected names, each once, stored (not compressed:
  nothing unpacks to more than the body), and each .npy header announces plain numbers
  that fit in their member.
- Everything else (ids, options, progress, errors) is JSON; options go in the URL query.
- Errors are JSON ``{"error": "<message for the artist>"}`` with status 400 (bad array:
  wrong shape, dtype, NaN, out of range), 401 (token), 403 (a foreign ``Host`` or
  ``Origin`` at a loopback service), 404 (unknown sheet or job), 413 (request too
  large), 415 (a POST body that is not ``application/x-npz``), 503 (service stopping).

Arrays (H = W = the working size, a multiple of 128):

==============  ==========================  ==========================================
name            dtype, shape                meaning
==============  ==========================  ==========================================
``images``      uint8 (V, H, W, 4)          character sheet, straight RGBA, V views
``udps``        float32 (V, H, W, 4)        optional: each sheet view's own UDP; with
                                            it the guided shader paints, else CoNR
``udp``         float32 (B, H, W, 4)        target poses: X, Y, Z, V in [0, 1]
``frames``      int64 (B,)                  scene frame numbers of a job's ``udp``
``rgba``        float32 (B, H, W, 4)        shaded frames, premultiplied RGBA in [0, 1]
``index``       int64 (B,)                  positions in the job of returned ``rgba``
``portrait``    uint8 (H, W, 4)             a portrait to reenact, straight RGBA
``poses``       float32 (N, 20)             pose vectors (AnimeCeleb order; angles in
                                            degrees, within +-90; expressions in [0, 1])
``mirror``      bool ()                     optional: average each reenactment with the
                                            mirrored face's (two passes)
==============  ==========================  ==========================================

Portraits need not be square or a multiple of 128 (16 to ``MAX_PORTRAIT_SIDE`` pixels a
side); their reenactments come back as ``rgba`` at the portrait's size, premultiplied.

Endpoints (all under ``/v1``, Bearer token when the service has one):
``GET health``, ``GET info``, ``POST sheets`` (``images`` -> ``{"sheet_id", ...}``),
``GET|DELETE sheets/{id}`` (both answer ``"shader"``: ``"guided"`` when the upload carried
``udps``, else ``"conr"``), ``POST sheets/{id}/shade`` (``udp`` -> ``rgba``, with the
``X-AniRender-Shader`` header naming the shader),
``POST jobs?sheet_id=`` (``udp``, ``frames`` -> ``{"job_id", ...}``), ``GET jobs/{id}``
(progress), ``GET jobs/{id}/results?start=&limit=`` (``index``, ``frames``, ``rgba`` of
the finished frames in that range), ``DELETE jobs/{id}`` (cancel), ``POST portraits``
(``portrait`` -> ``{"portrait_id", ...}``), ``GET|DELETE portraits/{id}``,
``POST portraits/{id}/reenact`` (``poses``, optional ``mirror`` -> ``rgba``). ``shade`` answers carry
``X-AniRender-Shading-Seconds``: the model time spent on the request's frames.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np

from ..errors import AniRenderError
from ..models import pose_vector
from ..models.udp import check_udp as udp_rule

VERSION = 2
NPZ_TYPE = "application/x-npz"
PORT_LINE = "ANIRENDER_SERVICE_PORT="
DEFAULT_PORT = 8765
TOKEN_ENV = "ANIRENDER_SERVICE_TOKEN"
#: request header naming the client (the queue serves clients in turn); optional
CLIENT_HEADER = "X-AniRender-Client"
#: response header of ``shade``: seconds the model spent on the request's frames
SHADING_SECONDS = "X-AniRender-Shading-Seconds"
#: response header of ``shade``: which shader painted the frames (guided or conr)
SHADER = "X-AniRender-Shader"
SIZE_MULTIPLE = 128
MAX_SIZE = 1024
MAX_VIEWS = 16
MIN_PORTRAIT_SIDE = 16
MAX_PORTRAIT_SIDE = 1024
MAX_POSES = 64
#: poses x portrait pixels per reenact request (the answer: 16 bytes a pixel, 256 MiB)
MAX_REENACT_PIXELS = 1 << 24


class WireError(AniRenderError):
    """A request or response that does not follow the wire format (HTTP 400)."""


def pack(**arrays: np.ndarray) -> bytes:
    """Arrays -> ``.npz`` bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


#: dtype kinds that travel: bool, signed and unsigned integers, floats
WIRE_KINDS = "biuf"
MAX_NDIM = 8


def unpack(
    data: bytes, names: tuple[str, ...], limit: int, optional: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """``.npz`` bytes -> the named arrays (and those of ``optional`` that are present);
    anything else is a ``WireError``.

    Members must be stored, not compressed (``numpy.savez``), so nothing unpacks to more
    than the body's own size; each name appears once (``udp`` and ``udp.npy`` together
    are refused); each .npy header is checked (plain numbers, a shape whose bytes fit in
    the member) before its array is read, and the member checked is the member read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise WireError(f"The body is not an .npz archive ({exc}).") from exc
    found: dict[str, zipfile.ZipInfo] = {}
    for member in members:
        name = member.filename.removesuffix(".npy")
        if name in found:
            raise WireError(
                f"The .npz archive holds '{name}' more than once ({found[name].filename}, "
                f"{member.filename}); send each array once."
            )
        found[name] = member
    missing = [n for n in names if n not in found]
    if missing:
        raise WireError(f"The .npz archive lacks {', '.join(missing)} (it has {sorted(found)}).")
    names = tuple(names) + tuple(n for n in optional if n in found)
    extra = sorted(set(found) - set(names))
    if extra:
        raise WireError(f"Unexpected arrays in the .npz archive: {', '.join(extra)}.")
    for member in members:
        if member.compress_type != zipfile.ZIP_STORED or member.compress_size != member.file_size:
            raise WireError(
                f"Array '{member.filename}' is compressed; the wire takes stored members only "
                "(numpy.savez, not savez_compressed)."
            )
    if sum(m.file_size for m in members) > min(limit, len(data)):
        raise WireError(f"The .npz archive unpacks to more than {min(limit, len(data))} bytes.")
    out = {}
    for name in names:
        try:
            with archive.open(found[name]) as stream:
                shape, fortran, dtype = _read_header(stream, found[name], name)
                out[name] = _read_array(stream, shape, fortran, dtype)
        except WireError:
            raise
        except Exception as exc:  # numpy and zipfile raise many kinds on damaged members
            raise WireError(f"Cannot read array '{name}' from the .npz archive: {exc}") from exc
    return out


def _read_header(stream, member: zipfile.ZipInfo, name: str):
    """(shape, fortran order, dtype) of an .npy member whose data fits in the member."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {version} is not used on the wire")
    except Exception as exc:
        raise WireError(f"Array '{name}' has no valid .npy header ({exc}).") from exc
    if dtype.hasobject:
        raise WireError(f"Array '{name}' holds Python objects; only plain numbers travel.")
    if dtype.kind not in WIRE_KINDS or dtype.itemsize == 0 or dtype.fields is not None:
        raise WireError(f"Array '{name}' is {dtype}; only plain numbers travel.")
    if len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise WireError(f"Array '{name}' announces an impossible shape.")
    count = 1
    for dim in shape:  # Python integers: no overflow, however large the header's numbers
        count *= dim
    if count * dtype.itemsize > member.file_size:
        raise WireError(f"Array '{name}' announces more data than it holds.")
    return shape, fortran, dtype


def _read_array(stream, shape, fortran: bool, dtype: np.dtype) -> np.ndarray:
    size = dtype.itemsize
    for dim in shape:
        size *= dim
    buffer = bytearray(size)
    got = stream.readinto(buffer) if size else 0
    if got != size:
        raise WireError(f"an array of {size} bytes is cut short at {got}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def check_sheet(images: np.ndarray) -> np.ndarray:
    """A character sheet: uint8 (V, H, W, 4), square, side a multiple of 128."""
    if images.dtype != np.uint8:
        raise WireError(f"Sheet images must be uint8 RGBA; got {images.dtype}.")
    if images.ndim != 4 or images.shape[-1] != 4:
        raise WireError(f"A character sheet is (views, H, W, 4) RGBA; got shape {images.shape}.")
    views, h, w = images.shape[:3]
    if not 1 <= views <= MAX_VIEWS:
        raise WireError(f"A character sheet has 1 to {MAX_VIEWS} views; got {views}.")
    _check_side(h, w, "The character sheet")
    return np.ascontiguousarray(images)


def check_sheet_udps(udps: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The sheet views' own UDPs: float32 (V, H, W, 4), one per image, the images' size,
    values checked (``models.udp``), each with at least one character pixel."""
    if udps.dtype != np.float32:
        raise WireError(f"Sheet UDPs must be float32; got {udps.dtype}.")
    if udps.ndim != 4 or udps.shape[-1] != 4:
        raise WireError(f"Sheet UDPs are (views, H, W, 4) XYZV; got shape {udps.shape}.")
    if len(udps) != len(images):
        raise WireError(
            f"The sheet has {len(images)} images but {len(udps)} UDPs; send one UDP per view."
        )
    if udps.shape[1:3] != images.shape[1:3]:
        raise WireError(
            f"The sheet images are {images.shape[2]}x{images.shape[1]} but their UDPs "
            f"{udps.shape[2]}x{udps.shape[1]}; frame each view and its UDP together."
        )
    udps = udp_rule(udps, name="The sheet UDPs", error=WireError)
    empty = [str(i + 1) for i in range(len(udps)) if not (udps[i, ..., 3] > 0.5).any()]
    if empty:
        raise WireError(
            f"Sheet view {', '.join(empty)}: its UDP has no character pixel (V is 0 everywhere)."
        )
    return udps


def check_udp(udp: np.ndarray, size: int | None = None) -> np.ndarray:
    """Target poses on the wire: float32 (B, H, W, 4), a square side the shader takes,
    then the one UDP rule of ``models.udp``."""
    if udp.dtype != np.float32:
        raise WireError(f"UDP frames must be float32; got {udp.dtype}.")
    if udp.ndim != 4 or udp.shape[-1] != 4 or udp.shape[0] < 1:
        raise WireError(f"UDP frames are (frames, H, W, 4) XYZV; got shape {udp.shape}.")
    _check_side(udp.shape[1], udp.shape[2], "The UDP frames")
    return udp_rule(udp, size, name="The UDP frames", error=WireError)


#: Blender's frame numbers lie within +-MAX_FRAME
MAX_FRAME = 1_048_574


def check_frames(frames: np.ndarray, count: int) -> np.ndarray:
    if frames.dtype.kind not in "iu" or frames.shape != (count,):
        raise WireError(
            f"'frames' must be {count} integers, one per UDP frame; got {frames.dtype} "
            f"{frames.shape}."
        )
    if count and (
        frames.max() > MAX_FRAME or (frames.dtype.kind == "i" and frames.min() < -MAX_FRAME)
    ):
        raise WireError(
            f"Frame numbers must lie within +-{MAX_FRAME} (Blender's frame range); got "
            f"{frames.min()} .. {frames.max()}."
        )
    return frames.astype(np.int64)


def check_rgba(rgba: np.ndarray, count: int, size: int) -> np.ndarray:
    """What a client accepts back: float32 (count, size, size, 4)."""
    if rgba.dtype != np.float32 or rgba.shape != (count, size, size, 4):
        raise WireError(
            f"The service answered {rgba.dtype} {rgba.shape}; expected float32 "
            f"({count}, {size}, {size}, 4). Is it an AniRender service of another version?"
        )
    return rgba


def check_portrait(portrait: np.ndarray) -> np.ndarray:
    """A portrait: uint8 (H, W, 4) straight RGBA (or (1, H, W, 4)), 16 to 1024 a side."""
    if portrait.dtype != np.uint8:
        raise WireError(f"A portrait is uint8 RGBA; got {portrait.dtype}.")
    if portrait.ndim == 4 and portrait.shape[0] == 1:
        portrait = portrait[0]
    if portrait.ndim != 3 or portrait.shape[-1] != 4:
        raise WireError(f"A portrait is (H, W, 4) RGBA; got shape {portrait.shape}.")
    h, w = portrait.shape[:2]
    if not (
        MIN_PORTRAIT_SIDE <= h <= MAX_PORTRAIT_SIDE and MIN_PORTRAIT_SIDE <= w <= MAX_PORTRAIT_SIDE
    ):
        raise WireError(
            f"The portrait is {w}x{h}; its sides must be {MIN_PORTRAIT_SIDE} to "
            f"{MAX_PORTRAIT_SIDE} pixels. Scale it first."
        )
    return np.ascontiguousarray(portrait)


def check_poses(poses: np.ndarray, pixels: int | None = None) -> np.ndarray:
    """Pose vectors: float32 (N, 20), finite, expressions in [0, 1], angles within +-90;
    with ``pixels`` (the portrait's), no more than one request's worth of answer."""
    if poses.dtype != np.float32:
        raise WireError(f"Poses must be float32; got {poses.dtype}.")
    if (
        poses.ndim != 2
        or poses.shape[1] != pose_vector.POSE_SIZE
        or not 1 <= poses.shape[0] <= MAX_POSES
    ):
        raise WireError(
            f"Poses are (N, {pose_vector.POSE_SIZE}) with N from 1 to {MAX_POSES}; got shape {poses.shape}."
        )
    if pixels is not None and len(poses) > reenact_batch(pixels):
        raise WireError(
            f"{len(poses)} poses of this portrait make too large an answer; send at most "
            f"{reenact_batch(pixels)} per request."
        )
    if not np.isfinite(poses).all():
        raise WireError("The poses contain NaN or infinite values.")
    expressions = np.delete(poses, np.r_[pose_vector.ANGLES], axis=1)
    if expressions.min() < 0.0 or expressions.max() > 1.0:
        raise WireError(
            f"Expression weights must lie in [0, 1]; found {expressions.min():.4g} .. "
            f"{expressions.max():.4g}."
        )
    angles = np.abs(poses[:, pose_vector.ANGLES]).max()
    if angles > pose_vector.ANGLE_LIMIT:
        raise WireError(
            f"Head angles must lie within +-{pose_vector.ANGLE_LIMIT:g} degrees; found {angles:.4g}."
        )
    return np.ascontiguousarray(poses)


def check_flag(value: np.ndarray | None, name: str) -> bool:
    """An optional yes/no field: absent (False) or one bool or 0/1 integer."""
    if value is None:
        return False
    if value.size != 1 or value.dtype.kind not in "biu" or int(value.reshape(-1)[0]) not in (0, 1):
        raise WireError(f"'{name}' is one bool (or 0 / 1); got {value.dtype} {value.shape}.")
    return bool(value.reshape(-1)[0])


def reenact_batch(pixels: int) -> int:
    """How many poses of a portrait of ``pixels`` pixels one reenact request may carry."""
    return max(1, min(MAX_POSES, MAX_REENACT_PIXELS // max(int(pixels), 1)))


def portrait_id(portrait: np.ndarray) -> str:
    """Content id of a portrait (as ``sheet_id``): the same pixels give the same id."""
    return "p" + sheet_id(portrait)[:23]


def sheet_id(images: np.ndarray, udps: np.ndarray | None = None) -> str:
    """Content id of a sheet: the same images (and UDPs) give the same id (and cached
    encoding); a sheet without UDPs keeps the id it had in version 1."""
    digest = hashlib.sha256(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).data)
    if udps is not None:
        digest.update(b"udps")
        digest.update(np.ascontiguousarray(udps).data)
    return digest.hexdigest()[:24]


def _check_side(h: int, w: int, what: str) -> None:
    if h != w or h % SIZE_MULTIPLE or not 0 < h <= MAX_SIZE:
        raise WireError(
            f"{what}: {w}x{h}; the shader needs square frames whose side is a multiple of "
            f"{SIZE_MULTIPLE}, at most {MAX_SIZE} (256 is what the weights were trained at)."
        )
