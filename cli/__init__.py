"""The ``anirender`` command: one module of this package per subcommand.

Each command module exposes ``add_parser(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code). Command modules only
parse and print; the work is done by ``addon`` (Blender) or ``models``/``service``
(torch). ``bpy`` is imported inside handlers, since it can be loaded only once per
process and slows ``anirender --help``.
"""

import argparse
import importlib
import logging
import sys

from ..errors import AniRenderError

# subcommand modules, in the order ``--help`` lists them
_COMMANDS = (
    "demo",
    "passes",
    "render",
    "sheet",
    "shade",
    "weights",
    "portrait",
    "dataset",
    "train",
    "eval",
    "anr",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anirender", description="Anime-style neural rendering for Blender."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _show_execution_choices() -> None:
    """The shaders log how they chose to run (models.execution); a command shows it."""
    log = logging.getLogger("anirender.execution")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_execution_choices()
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
