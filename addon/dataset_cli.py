"""``anirender dataset <kind>``: render training data in Blender.

The CoNR generator's parser is defined here; other kinds live in the modules listed in
``GENERATORS``, each exposing ``add_dataset_cli(subparsers)`` that adds its parser with
``set_defaults(func=handler)``. Handlers import ``bpy`` lazily.
"""

import importlib
from pathlib import Path

GENERATORS: tuple[str, ...] = (
    "anirender.addon.celeb_dataset_cli",
    "anirender.addon.anr_capture_cli",
)


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="render a training dataset in Blender")
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    _add_conr(sub)
    for name in GENERATORS:
        importlib.import_module(name).add_dataset_cli(sub)


def _add_conr(sub) -> None:
    parser = sub.add_parser(
        "conr",
        help="CoNR training samples: toon-shaded RGBA images with their UDP passes",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--characters", type=int, default=12, help="number of characters")
    parser.add_argument("--poses", type=int, default=40, help="samples per character")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation", type=float, default=0.25, help="fraction of characters held out"
    )
    parser.add_argument(
        "--turnaround",
        type=float,
        default=0.25,
        help="share of samples in the rest pose from the front, a side or the back "
        "(0 for datasets made before this option)",
    )
    parser.set_defaults(func=_run_conr)


def _run_conr(args) -> int:
    from .conr_dataset import DatasetSpec, generate_conr_dataset

    spec = DatasetSpec(
        out_dir=args.out,
        characters=args.characters,
        poses=args.poses,
        size=args.size,
        seed=args.seed,
        validation=args.validation,
        turnaround=args.turnaround,
    )
    manifest = generate_conr_dataset(spec, show_progress=True)
    counts = {
        s: sum(1 for c in manifest["characters"] if c["split"] == s) for s in ("train", "val")
    }
    print(f"wrote {args.out}: {counts['train']} training and {counts['val']} validation characters")
    return 0
