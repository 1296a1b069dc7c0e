"""The ``anirender`` command: demo, passes, shade, train, import, serve, weights, bench.

Each subcommand lives in the module that owns its logic; that module exposes
``add_cli(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
arguments, returning an exit code). Modules import heavy dependencies (bpy, torch) inside
their handlers so that ``anirender --help`` stays fast.
"""

import argparse
import importlib
import sys

from anirender.errors import AniRenderError

# subcommand modules, in the order ``--help`` lists them
_COMMAND_MODULES = (
    "anirender.addon.demo",
    "anirender.addon.passes_cli",
    "anirender.models.shade_cli",
    "anirender.models.weights",
    "anirender.models.recon_cli",
    "anirender.addon.dataset_cli",
    "anirender.models.train.cli",
    "anirender.models.anr_cli",
    "anirender.service.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anirender", description="Anime-style neural rendering for Blender."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AniRenderError as exc:
        print(f"anirender {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anirender {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
