"""``anirender anr``: edit trained ANR models (torch is imported only when a command runs).

``anirender anr swap --model anr.safetensors --out swapped.safetensors --target 0
--source 1 --box 0.2,0.5,0.6,0.9`` copies identity 1's texels inside the UV rectangle
(u0, v0, u1, v1) into identity 0's texture (or inside a UV mask image with ``--mask``:
white = swap, row 0 at V = 1). ``anirender anr info --model ...`` lists identities.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AniRenderError


def add_cli(subparsers) -> None:
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


def parse_uv_box(text: str) -> tuple[float, float, float, float]:
    """ "u0,v0,u1,v1" -> four floats, with a message for the artist when it is not that."""
    try:
        box = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise AniRenderError(f"Cannot read the UV rectangle {text!r}; write u0,v0,u1,v1.") from None
    if len(box) != 4:
        raise AniRenderError(f"The UV rectangle {text!r} needs four numbers u0,v0,u1,v1.")
    return box


def swap_anr_file(model_path, out, target: int, source: int, box=None, mask=None) -> str:
    """Read an ANR file, swap a UV region of ``source``'s texture into ``target``'s (a box
    "u0,v0,u1,v1" or 4-tuple, or a mask image path: white = swap, row 0 at V = 1), write
    the result to ``out``. Shared by ``anirender anr swap`` and Blender's operator.
    Returns a one-line summary."""
    from .anr import read_anr, save_anr, swap_texture_region

    if isinstance(box, str):
        box = parse_uv_box(box) if box else None
    picked = None
    if mask:
        import numpy as np
        from PIL import Image

        try:
            picked = np.asarray(Image.open(mask).convert("L")) > 127
        except OSError as exc:
            raise AniRenderError(f"Cannot read the UV mask {mask}: {exc}") from None
    model = read_anr(model_path)
    swap_texture_region(model, target, source, box=box, mask=picked)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_anr(model, out, metadata={"swapped": f"{source}->{target}"})
    names = model.config.names()
    return f"{names[target]} now wears {names[source]}'s texels there: {out}"


def _info(args) -> int:
    from .anr import read_anr

    model = read_anr(args.model)
    config = model.config
    print(f"identities: {', '.join(f'{i}: {n}' for i, n in enumerate(config.names()))}")
    print(f"texture: {config.channels} channels, {config.texture_size} texels, "
          f"{config.levels} levels; renderer width {config.width}, depth {config.depth}")  # fmt: skip
    return 0
