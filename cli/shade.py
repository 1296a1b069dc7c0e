"""``anirender shade``: paint a folder of UDP frames with CoNR from a character sheet.

``--pose-images DIR`` instead of ``--udp``: drawn or rendered frames of any character;
the CoNR parser reads each one's UDP (the official ``test_pose_use_parser_udp``) and the
sheet's character is shaded in those poses, each frame the size of its picture.

Everything is read and checked before the weights load; frames are rendered into a
temporary folder and moved into ``--out`` only when all of them succeeded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import AniRenderError
from ..models import alpha, framing
from ..models.conr.config import OPAQUE_MEAN_ALPHA
from ..models.image_files import SHEET_SUFFIXES, UDP_SUFFIXES, read_sheet_image, read_udp
from ..models.sheet_udp import estimate_pose_udp, parser_size, read_pose_image
from ..models.weights import load_conr, resolve_weights
from ..words import counted


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("shade", help="render UDP frames with CoNR from a character sheet")
    p.add_argument("--sheet", required=True, type=Path, help="folder of RGBA sheet images")
    poses = p.add_mutually_exclusive_group(required=True)
    poses.add_argument("--udp", type=Path, help="folder of UDP frames (.npz or .exr)")
    poses.add_argument(
        "--pose-images",
        type=Path,
        help="folder of pictures (PNG) whose poses to take; their UDP comes from the parser",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the rendered PNGs")
    p.add_argument("--weights", default=None, help="store name, .safetensors or .pth folder")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="working size")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument(
        "--premultiplied", action="store_true", help="write premultiplied instead of straight alpha"
    )
    p.set_defaults(func=run_shade)


def _files(folder: Path, suffixes, what: str) -> list[Path]:
    if not folder.is_dir():
        raise AniRenderError(f"{what} folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise AniRenderError(f"{folder} has no {what} files ({', '.join(suffixes)}).")
    return files


def run_shade(args) -> int:
    from tqdm import tqdm

    size = args.size
    sheet = []
    for path in _files(args.sheet, SHEET_SUFFIXES, "sheet image"):
        image = read_sheet_image(path)
        if image[..., 3].mean() / 255.0 >= OPAQUE_MEAN_ALPHA:
            raise AniRenderError(
                f"Sheet image {path.name} has no transparent background; cut the character out."
            )
        sheet.append(framing.frame_sheet_image(image, size, name=f"Sheet image {path.name}"))
    what = "UDP" if args.pose_images is None else "Pose image"
    if args.pose_images is not None:
        udp_files = _files(args.pose_images, SHEET_SUFFIXES, "pose image")
        pictures = [read_pose_image(p) for p in udp_files]
        for path, picture in zip(udp_files, pictures, strict=True):
            if not picture[..., 3].any():
                raise AniRenderError(f"Pose image {path.name} is fully transparent.")
    else:
        udp_files = _files(args.udp, UDP_SUFFIXES, "UDP")
    frames, first = [], None
    for i, path in enumerate(udp_files):
        udp = pictures[i] if args.pose_images is not None else read_udp(path)
        if first is None:
            first = (path.name, udp.shape)
        elif udp.shape[:2] != first[1][:2]:
            raise AniRenderError(
                f"{what} {path.name} is {udp.shape[1]}x{udp.shape[0]} but {first[0]} is "
                f"{first[1][1]}x{first[1][0]}; all frames of a sequence must have one size."
            )
        if args.pose_images is None:
            frames.append(framing.frame_udp(udp, size))
    stems = [p.stem for p in udp_files]
    if len(set(stems)) != len(stems):
        folder = args.udp or args.pose_images
        raise AniRenderError(f"{folder} has two {what} files with the same name; keep one.")

    model = load_conr(args.weights, device=args.device)
    if args.pose_images is not None:
        side = parser_size(resolve_weights(args.weights))
        frames = [
            estimate_pose_udp(model, image, size, f"Pose image {path.name}", parser_side=side)
            for image, path in zip(pictures, udp_files, strict=True)
        ]
    if args.precision != "fp32":
        model.set_precision(args.precision)
    encoding = model.encode_sheet(np.stack(sheet), premultiplied=True)

    args.out.mkdir(parents=True, exist_ok=True)
    height, width = first[1][:2]
    step = model.frames_per_chunk(encoding)
    with tempfile.TemporaryDirectory(prefix=".shade-", dir=args.out) as tmp:
        written = []
        with tqdm(total=len(frames), unit="frame", desc="shade") as bar:
            for start in range(0, len(frames), step):
                batch = frames[start : start + step]
                rgba = model.render(encoding, np.stack([f[0] for f in batch]))
                for i, ((_, crop), out) in enumerate(zip(batch, rgba, strict=True)):
                    full = framing.paste_back(out, crop, height, width)
                    pixels = (
                        alpha.to_premultiplied_uint8(full)
                        if args.premultiplied
                        else alpha.to_straight_uint8(full)
                    )
                    name = stems[start + i] + ".png"
                    _save_png(pixels, Path(tmp) / name)
                    written.append(name)
                bar.update(len(batch))
        for name in written:
            os.replace(Path(tmp) / name, args.out / name)
    print(f"wrote {counted(len(written), 'frame')} to {args.out}")
    return 0


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels, mode="RGBA").save(path)
