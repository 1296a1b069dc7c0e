"""``anirender eval shade``: score a shader against the copy baseline on a dataset.

    anirender eval shade --data DIR [--split val] [--shader guided|conr] [--weights W]
                         [--views 4] [--size 256] --json

Each character's first ``--views`` samples are its sheet, every other sample a target
(``models.evaluation``). Prints ``{"shader": {...}, "copy": {...}, "examples": N}`` (plus
the median-of-8 blend and what was run) with L1, PSNR and SSIM over white.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AniRenderError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a shader on a dataset")
    sub = parser.add_subparsers(dest="what", metavar="WHAT")
    sub.required = True
    shade = sub.add_parser(
        "shade", help="a shader against the copy baseline on `anirender dataset conr` data"
    )
    shade.add_argument("--data", type=Path, required=True, help="dataset folder")
    shade.add_argument("--split", default="val", choices=("train", "val", "all"))
    shade.add_argument("--shader", default="guided", choices=("guided", "conr"))
    shade.add_argument("--weights", default=None, help="store name or .safetensors file")
    shade.add_argument("--views", type=int, default=4, help="sheet views per character")
    shade.add_argument("--size", type=int, default=256, choices=(256, 512), help="working size")
    shade.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    shade.add_argument("--json", action="store_true", help="print one JSON object")
    shade.set_defaults(func=run_eval_shade)


def run_eval_shade(args) -> int:
    # torch: loaded when the command runs, not for --help
    from ..models import evaluation
    from ..models.train.conr_data import load_split

    if args.views < 1:
        raise AniRenderError("--views must be at least 1.")
    splits = ("train", "val") if args.split == "all" else (args.split,)
    characters = []
    for split in splits:
        try:
            characters.extend(load_split(args.data, split, args.size))
        except AniRenderError:
            if args.split != "all":
                raise
    if not characters:
        raise AniRenderError(f"The dataset in {args.data} has no characters.")
    if args.shader == "guided":
        # torch: loaded when the command runs
        from ..models.guided import load_guided

        shade = evaluation.guided_shade_character(load_guided(args.weights, device=args.device))
    else:
        # torch: loaded when the command runs
        from ..models.weights import load_conr

        shade = evaluation.conr_shade_character(load_conr(args.weights, device=args.device))
    result = evaluation.evaluate_shading(characters, shade, args.views)
    result["shader_name"] = args.shader
    result["split"] = args.split
    result["views"] = args.views
    result["size"] = args.size
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name in ("shader", "copy", "median8"):
            m = result[name]
            label = args.shader if name == "shader" else name
            print(f"{label:>8}: PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  L1 {m['l1']:.4f}")
        print(f"{result['examples']} examples ({args.split}, {args.views} sheet views)")
    return 0
