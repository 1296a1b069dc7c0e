"""``anirender eval shade|reenact``: score a model against its baselines on a dataset.

    anirender eval reenact --data DIR [--weights NAME] [--split val] --json

prints ``{"model": {...}, "warp_only": {...}, "identity": {...}}``, each with ``l1``,
``psnr`` and ``eyes`` / ``mouth`` (``l1``, ``psnr`` on each target's eye and mouth boxes
from ``crops.json``, over the ``pairs`` whose box moves): the reenactment model, its warping stage alone, and the neutral
source unchanged, on the dataset's held-out characters (``--split val``).

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
    reenact = sub.add_parser(
        "reenact",
        help="a reenactment model vs its warp stage and the unchanged source "
        "(`anirender dataset celeb` data)",
    )
    reenact.add_argument("--data", type=Path, required=True, action="append",
                         help="dataset folder with combined_pose.csv (repeatable)")  # fmt: skip
    reenact.add_argument(
        "--weights", default=None, help="a .safetensors file, or 'shipped' (default)"
    )
    reenact.add_argument("--split", default="val", choices=("val", "all"),
                         help="the held-out characters of characters.json, or every pair")  # fmt: skip
    reenact.add_argument("--threads", type=int, default=1, help="torch threads")
    reenact.add_argument("--json", action="store_true", help="print one JSON object")
    reenact.set_defaults(func=run_eval_reenact)


def run_eval_reenact(args) -> int:
    # torch: loaded when the command runs, not for --help
    import torch

    from ..models.reenact import load_reenact  # torch
    from ..models.train.reenact import evaluate_reenact  # torch

    torch.set_num_threads(max(1, args.threads))
    weights = None if args.weights in (None, "shipped") else Path(args.weights)
    result = evaluate_reenact(load_reenact(weights), args.data, args.split)
    if args.json:
        print(json.dumps(result))
        return 0
    for name, m in result.items():
        parts = [f"{name:>9}: L1 {m['l1']:.4f}  PSNR {m['psnr']:.2f} dB"]
        for region in ("eyes", "mouth"):
            if m[region]["pairs"]:
                parts.append(f"{region} L1 {m[region]['l1']:.4f} {m[region]['psnr']:.2f} dB")
            else:
                parts.append(f"{region}: no pair moves them")
        print(" | ".join(parts))
    return 0


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
