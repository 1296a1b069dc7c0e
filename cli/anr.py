"""``anirender anr``: edit trained ANR models (torch is imported only when a command runs).

``anirender anr swap --model anr.safetensors --out swapped.safetensors --target 0
--source 1 --box 0.2,0.5,0.6,0.9`` copies identity 1's texels inside the UV rectangle
(u0, v0, u1, v1) into identity 0's texture (or inside a UV mask image with ``--mask``:
white = swap, row 0 at V = 1). ``anirender anr info --model ...`` lists identities.
"""

from __future__ import annotations

from pathlib import Path

from ..models.anr import read_anr, swap_anr_file


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("anr", help="edit trained ANR models (texture swap, info)")
    sub = parser.add_subparsers(dest="anr_command", metavar="ACTION")
    sub.required = True
    swap = sub.add_parser("swap", help="swap a UV region of one identity's texture")
    swap.add_argument("--model", type=Path, required=True, help="anr.safetensors")
    swap.add_argument("--out", type=Path, required=True, help="where to write the result")
    swap.add_argument("--target", type=int, default=0, help="identity whose texture changes")
    swap.add_argument("--source", type=int, default=1, help="identity the texels come from")
    swap.add_argument("--box", default="", help="UV rectangle u0,v0,u1,v1")
    swap.add_argument("--mask", type=Path, help="UV mask image (white = swap)")
    swap.set_defaults(func=_swap)
    info = sub.add_parser("info", help="identities and sizes of an ANR model")
    info.add_argument("--model", type=Path, required=True)
    info.set_defaults(func=_info)


def _swap(args) -> int:
    print(swap_anr_file(args.model, args.out, args.target, args.source, args.box, args.mask))
    return 0


def _info(args) -> int:

    model = read_anr(args.model)
    config = model.config
    print(f"identities: {', '.join(f'{i}: {n}' for i, n in enumerate(config.names()))}")
    print(f"texture: {config.channels} channels, {config.texture_size} texels, "
          f"{config.levels} levels; renderer width {config.width}, depth {config.depth}")  # fmt: skip
    return 0
