"""``anirender train <model>``: one parser, one module per trainable model.

Each listed module exposes ``add_train_cli(subparsers)``, adding its own parser with
``set_defaults(func=handler)``.
"""

import importlib

TRAINERS = (
    "anirender.models.train.conr",
    "anirender.models.train.reenact",
    "anirender.models.train.anr",
)


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a network (conr, reenact, anr)")
    sub = parser.add_subparsers(dest="model", metavar="MODEL")
    sub.required = True
    for name in TRAINERS:
        importlib.import_module(name).add_train_cli(sub)
