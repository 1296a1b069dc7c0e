"""``anirender shade``: paint a folder of UDP frames from a character sheet.

One road, two shaders: when every sheet image has its UDP beside it (``<stem>.udp.npz``,
key ``i``, or ``<stem>.udp.exr``), the guided shader paints (``models.guided``); else
the image-only CoNR. ``--shader`` forces one; the command says which it used.

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
from ..models.execution import parse_request
from ..models.image_files import SHEET_SUFFIXES, UDP_SUFFIXES, read_sheet_image, read_udp
from ..models.sheet_udp import estimate_pose_udp, parser_size, read_pose_image
from ..models.weights import load_conr, resolve_weights
from ..words import counted


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "shade", help="render UDP frames from a character sheet (guided shader or CoNR)"
    )
    p.add_argument("--sheet", required=True, type=Path, help="folder of RGBA sheet images")
    poses = p.add_mutually_exclusive_group(required=True)
    poses.add_argument("--udp", type=Path, help="folder of UDP frames (.npz or .exr)")
    poses.add_argument(
        "--pose-images",
        type=Path,
        help="folder of pictures (PNG) whose poses to take; their UDP comes from the parser",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the rendered PNGs")
    p.add_argument(
        "--weights", default=None, help="CoNR weights: store name, .safetensors or .pth folder"
    )
    p.add_argument(
        "--shader",
        default="auto",
        choices=("auto", "guided", "conr"),
        help="auto: guided when every sheet image has its <stem>.udp.npz, else CoNR",
    )
    p.add_argument("--guided-weights", default=None, help="guided shader .safetensors")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="working size")
    p.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "fast", "bf16", "fp16", "tf32"),
        help="fp32 (default, exact); fast: bf16 on CPUs that have it natively, TF32 or fp16 "
        "on a GPU, where that times faster; or force bf16 / fp16 / tf32",
    )
    p.add_argument(
        "--batch", type=int, default=None, help="frames per network call (default: timed)"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
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


def sheet_udp_path(image_path: Path) -> Path | None:
    """The UDP saved beside a sheet image (``<stem>.udp.npz`` or ``.udp.exr``), if any."""
    for suffix in UDP_SUFFIXES:
        candidate = image_path.with_name(f"{image_path.stem}.udp{suffix}")
        if candidate.is_file():
            return candidate
    return None


def choose_shader(wanted: str, image_paths: list[Path]) -> tuple[str, str, list]:
    """("guided" | "conr", why, the views' UDP paths)."""
    udps = [sheet_udp_path(p) for p in image_paths]
    missing = [p.name for p, u in zip(image_paths, udps) if u is None]
    if wanted == "conr":
        return "conr", "asked for with --shader conr", udps
    if not missing:
        return "guided", "every sheet view has its UDP", udps
    if wanted == "guided":
        raise AniRenderError(
            f"--shader guided needs each sheet image's UDP beside it (<stem>.udp.npz); "
            f"missing for {', '.join(missing)}."
        )
    why = (
        "no sheet view has a UDP"
        if len(missing) == len(udps)
        else (f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no UDP")
    )
    return "conr", why, udps


def run_shade(args) -> int:
    from tqdm import tqdm

    size = args.size
    image_paths = [
        p for p in _files(args.sheet, SHEET_SUFFIXES, "sheet image") if not p.stem.endswith(".udp")
    ]
    shader, why, udp_paths = choose_shader(args.shader, image_paths)
    sheet, sheet_udps = [], []
    for path, udp_path in zip(image_paths, udp_paths):
        image = read_sheet_image(path)
        if image[..., 3].mean() / 255.0 >= OPAQUE_MEAN_ALPHA:
            raise AniRenderError(
                f"Sheet image {path.name} has no transparent background; cut the character out."
            )
        if shader == "guided":
            # torch: loaded only when the guided shader is used
            from ..models.guided import frame_sheet_view

            view, view_udp = frame_sheet_view(
                image, read_udp(udp_path), size, name=f"Sheet view {path.name}"
            )
            sheet.append(view)
            sheet_udps.append(view_udp)
        else:
            sheet.append(framing.frame_sheet_image(image, size, name=f"Sheet image {path.name}"))
    if shader == "guided":
        # torch: loaded only when the guided shader is used
        from ..models.guided import check_sheet

        check_sheet(np.stack(sheet), np.stack(sheet_udps))
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

    print(f"shader: {shader} ({why})")
    request = parse_request(args.precision, args.batch, args.threads)
    conr = None
    if shader == "conr" or args.pose_images is not None:
        conr = load_conr(args.weights, device=args.device)
    if args.pose_images is not None:
        side = parser_size(resolve_weights(args.weights))
        frames = [
            estimate_pose_udp(conr, image, size, f"Pose image {path.name}", parser_side=side)
            for image, path in zip(pictures, udp_files, strict=True)
        ]
    if shader == "guided":
        # torch: loaded only when the guided shader is used
        from ..models.guided import load_guided

        model = load_guided(args.guided_weights, device=args.device)
        model.request = request
        encoding = model.encode_sheet(np.stack(sheet), np.stack(sheet_udps))
    else:
        model = conr
        model.request = request
        encoding = model.encode_sheet(np.stack(sheet), premultiplied=True)
    # the network batches frames as its execution choice says; this only bounds memory
    step = 8

    args.out.mkdir(parents=True, exist_ok=True)
    height, width = first[1][:2]
    with tempfile.TemporaryDirectory(prefix=".shade-", dir=args.out) as tmp:
        written = []
        with tqdm(total=len(frames), unit="frame", desc=f"shade ({shader})") as bar:
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
    print(f"wrote {counted(len(written), 'frame')} to {args.out} with the {shader} shader")
    return 0


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels, mode="RGBA").save(path)
