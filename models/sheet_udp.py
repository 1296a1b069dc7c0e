"""A sheet view's UDP on disk, and the CoNR parser's estimate of it for drawn views.

A view ``<stem>.png`` (uint8 straight RGBA) carries its UDP beside it as
``<stem>.udp.npz``: the layout the pass renderer writes (``numpy.load(f)["i"]`` is the
H x W x 4 float32 XYZV array, the official CoNR ``.npz``), the same size as the image
and the same framing, pixel for pixel. A UDP guessed by the parser rather than rendered
adds two keys, ``estimated`` (a 0-d bool, True) and ``source`` (which weights guessed
it); readers of the official layout ignore them.

The estimate (``conr.parser``: the UDP-detector half of CoNR, loaded alone) frames the
image the official way (the centred square around alpha > 0, RGB premultiplied, resized
to the parser's working size), runs the parser and pastes the UDP back into the image's
frame (nearest). Occupancy V comes from the cut-out (alpha > 127) when the image has
transparency, else from the parser's own V > 0.5. ``read_sheet_folder`` reads a folder
of such pairs (the CLI's and the service's road to a sheet with UDPs).
numpy here; torch is imported only to run the parser.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import AniRenderError
from .framing import (
    crop_square,
    frame_sheet_image,
    frame_udp,
    paste_back,
    resize_udp,
    square_crop_around,
)
from .image_files import SHEET_SUFFIXES, read_sheet_image, read_udp
from .weights import SHIPPED_CONR, resolve_weights

UDP_SUFFIX = ".udp.npz"
#: the parser's working side for the weights shipped with AniRender (trained at 128)
SHIPPED_PARSER_SIZE = 128
#: the parser's working side for the released weights (trained at 256)
OFFICIAL_PARSER_SIZE = 256


def udp_path_for(image_path) -> Path:
    """``front.png`` -> ``front.udp.npz`` in the same folder."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + UDP_SUFFIX)


def write_udp_file(path, udp: np.ndarray, source: str | None = None) -> Path:
    """Write a view's UDP (H, W, 4) atomically; ``source`` marks it as estimated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"i": np.asarray(udp, dtype=np.float32)}
    if source is not None:
        arrays["estimated"] = np.array(True)
        arrays["source"] = np.array(str(source))
    beside = path.with_name(f".{path.name}.partial")
    with open(beside, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(beside, path)
    return path


def read_udp_file(path) -> tuple[np.ndarray, bool]:
    """(checked float32 (H, W, 4) UDP, whether it was estimated) from a ``.npz``/EXR."""
    path = Path(path)
    udp = read_udp(path)
    estimated = False
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            estimated = bool(data["estimated"]) if "estimated" in data else False
    return udp, estimated


def check_udp_fits(udp: np.ndarray, image: np.ndarray, label: str) -> None:
    """A view's UDP must have its image's size and show a character somewhere."""
    if udp.shape[:2] != image.shape[:2]:
        raise AniRenderError(
            f'The UDP of sheet view "{label}" is {udp.shape[1]}x{udp.shape[0]} but its image '
            f"is {image.shape[1]}x{image.shape[0]}. A view's UDP must come from the same "
            "render (same size and framing); render the view again or estimate its UDP."
        )
    if not (udp[..., 3] > 0.5).any():
        raise AniRenderError(
            f'The UDP of sheet view "{label}" has no occupied pixel (V is 0 everywhere); it '
            "does not show the character. Render the view again or estimate its UDP."
        )


def frame_sheet_udp(image: np.ndarray, udp: np.ndarray, size: int) -> np.ndarray:
    """A view's UDP framed as its image is (the centred square around the image's
    alpha > 0, as ``framing.frame_sheet_image`` crops it), resized nearest to ``size``."""
    crop = square_crop_around(np.asarray(image)[..., 3] > 0)
    if crop is None:
        raise AniRenderError("The sheet view is fully transparent; there is no character.")
    return resize_udp(crop_square(np.asarray(udp, dtype=np.float32), crop), size)


# ------------------------------------------------------------------------ estimating


def parser_size(weights_path) -> int:
    """The working side the parser of these weights was trained at."""
    shipped = Path(weights_path).resolve() == SHIPPED_CONR.resolve()
    return SHIPPED_PARSER_SIZE if shipped else OFFICIAL_PARSER_SIZE


def estimate_udp(model, image: np.ndarray, size: int, label: str = "image") -> np.ndarray:
    """The parser's UDP of one uint8 RGBA (or RGB) image, float32 (H, W, 4) in its frame."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise AniRenderError(f"{label}: expected 8-bit RGB(A), got {image.dtype} {image.shape}.")
    if image.shape[2] == 3:
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], 2)
    framed, crop = frame_for_parser(image, size, label)
    guess = model.detect_udp(framed[None, ..., :3])[0]
    height, width = image.shape[:2]
    udp = paste_back(guess, crop, height, width, resize=lambda u, side: resize_udp(u, side))
    cut_out = (image[..., 3] < 255).any()
    occupied = image[..., 3] > 127 if cut_out else udp[..., 3] > 0.5
    udp[..., :3] = np.where(occupied[..., None], np.clip(udp[..., :3], 0.0, 1.0), 0.0)
    udp[..., 3] = occupied
    return udp.astype(np.float32)


def frame_for_parser(image: np.ndarray, size: int, label: str):
    """(framed premultiplied uint8 (size, size, 4), crop) as the official inference."""
    crop = square_crop_around(image[..., 3] > 0)
    if crop is None:
        raise AniRenderError(f"{label} is fully transparent; there is no character to read.")
    return frame_sheet_image(image, size, name=label), crop


def estimate_pose_udp(
    model, image: np.ndarray, size: int, label: str = "pose image", parser_side: int | None = None
):
    """A drawn or rendered frame -> (framed (size, size, 4) target UDP, crop), the way the
    official ``test_pose_use_parser_udp`` takes a pose from a picture of any character.
    The parser reads the picture at ``parser_side`` (default ``size``)."""
    udp = estimate_udp(model, image, parser_side or size, label)
    framed, crop = frame_udp(udp, size)
    if crop is None:
        raise AniRenderError(f"{label}: the parser found no character in it.")
    return framed, crop


def read_pose_image(path) -> np.ndarray:
    """A picture to take a pose from as uint8 RGBA (opaque pictures get alpha 255)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError) as exc:
        raise AniRenderError(f"Cannot read pose image {path}: {exc}") from exc


def read_sheet_folder(folder) -> list[tuple[str, np.ndarray, np.ndarray | None, bool]]:
    """A sheet folder as ``anirender sheet render`` writes it: (image name, uint8
    straight RGBA (H, W, 4), its UDP (H, W, 4) or None, estimated) per image, by name.
    A UDP that does not fit its image (size, no occupied pixel) is refused."""
    views = []
    for path in image_files(folder):
        image = read_sheet_image(path)
        udp, estimated = None, False
        if udp_path_for(path).is_file():
            udp, estimated = read_udp_file(udp_path_for(path))
            check_udp_fits(udp, image, path.name)
        views.append((path.name, image, udp, estimated))
    if not views:
        raise AniRenderError(f"{folder} has no sheet images ({', '.join(SHEET_SUFFIXES)}).")
    return views


def image_files(folder) -> list[Path]:
    """The sheet images of a folder (PNG, WebP, TIFF), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AniRenderError(f"Folder not found: {folder}")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in SHEET_SUFFIXES and not p.name.startswith(".")
    )


def estimate_folder(
    folder, weights=None, size: int | None = None, device: str = "cpu", overwrite: bool = False
) -> tuple[list[Path], list[Path]]:
    """Write ``<stem>.udp.npz`` for every image in ``folder`` that has none.

    Returns (written, kept: images that already had a UDP). Every image is read and
    checked before the parser loads; nothing is written when one is unreadable.
    """
    paths = image_files(folder)
    if not paths:
        raise AniRenderError(
            f"{folder} has no sheet images ({', '.join(SHEET_SUFFIXES)}); nothing to estimate."
        )
    todo = [p for p in paths if overwrite or not udp_path_for(p).is_file()]
    kept = [p for p in paths if p not in todo]
    images = {p: read_sheet_image(p) for p in todo}
    for path, image in images.items():
        if square_crop_around(image[..., 3] > 0) is None:
            raise AniRenderError(f"{path.name} is fully transparent; there is no character.")
    if not todo:
        return [], kept
    resolved = resolve_weights(weights)
    size = size or parser_size(resolved)
    # torch: the parser runs only here
    from .conr.parser import load_udp_parser

    model = load_udp_parser(weights, device=device)
    source = f"CoNR parser, weights {resolved.name}"
    udps = {p: estimate_udp(model, image, size, p.name) for p, image in images.items()}
    return [write_udp_file(udp_path_for(p), u, source=source) for p, u in udps.items()], kept
