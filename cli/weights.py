"""``anirender weights``: import the released CoNR checkpoints into the store, list it.

    anirender weights import-conr FOLDER [--name conr]
    anirender weights list

The store's logic is ``models.weights``; this module only parses and prints.
"""

from __future__ import annotations

from ..models.weights import DEFAULT_NAME, import_conr, list_weights, user_weights_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="import and list network weights")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser("import-conr", help="convert the four released CoNR .pth files")
    imp.add_argument("folder", help="folder with udpparsernet.pth, shader.pth, ...")
    imp.add_argument("--name", default=DEFAULT_NAME, help="name in the store (default: conr)")
    imp.set_defaults(func=_import_command)
    lst = sub.add_parser("list", help="list imported weights")
    lst.set_defaults(func=_list_command)


def _import_command(args) -> int:
    target = import_conr(args.folder, name=args.name)
    print(f"imported {args.name}: {target}")
    return 0


def _list_command(args) -> int:
    store = user_weights_dir()
    entries = list_weights(store)
    if not entries:
        print(f"no weights in {store}")
        return 0
    for e in entries:
        state = "" if e["present"] else "  (file missing)"
        size = e.get("bytes", 0) / 2**20
        print(
            f"{e['name']:<20} {e.get('model', '?'):<6} {size:8.1f} MiB  {e.get('sha256', '')[:12]}{state}"
        )
    return 0
