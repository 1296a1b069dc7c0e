"""``anirender sheet``: character sheets whose views carry their UDP.

    anirender sheet render SCENE.blend --views front,left,back,right --out DIR
        [--size 512] [--frame N] [--engine cycles|workbench] [--samples 16]
        [--character NAME] [--save]
    anirender sheet estimate-udp DIR [--weights NAME] [--size 128|256] [--overwrite]

``render`` writes ``<character>_<view>.png`` (straight alpha) and
``<character>_<view>.udp.npz`` per view (the rest pose, or the pose at ``--frame``);
``--save`` also adds them to the character's sheet and saves the .blend.
``estimate-udp`` gives every image in DIR without a ``<stem>.udp.npz`` the CoNR parser's
guess (imported official weights when present, else the shipped ones), marked as
estimated. Handlers import ``bpy`` / ``torch`` when they run.
"""

from pathlib import Path

from ..errors import AniRenderError
from ..words import counted


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sheet", help="character sheet views with their UDPs: render, estimate"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    render = sub.add_parser(
        "render",
        help="render the character's sheet views (PNG + UDP) from a .blend",
        description="Render the rigged character of a .blend from the named sides, each "
        "view a straight-alpha PNG with its UDP (.udp.npz) beside it.",
    )
    render.add_argument("blend", type=Path, help="the .blend with the character")
    render.add_argument("--out", type=Path, required=True, help="folder for the views")
    render.add_argument(
        "--views",
        default="front,left,back,right",
        help="comma list of front,three_quarters,left,back,right,three_quarters_right",
    )
    render.add_argument("--size", type=int, default=512, help="square side in pixels")
    render.add_argument(
        "--frame", type=int, default=None, help="pose at this frame (default: the rest pose)"
    )
    render.add_argument("--engine", default="cycles", choices=("cycles", "workbench"))
    render.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    render.add_argument("--character", default=None, help="armature name (default: the only one)")
    render.add_argument(
        "--save", action="store_true", help="add the views to the sheet and save the .blend"
    )
    render.set_defaults(func=run_render)

    estimate = sub.add_parser(
        "estimate-udp",
        help="guess the UDP of drawn sheet views with the CoNR parser",
        description="Write <stem>.udp.npz beside every image in DIR that has none.",
    )
    estimate.add_argument("folder", type=Path, help="folder of sheet images (PNG with alpha)")
    estimate.add_argument("--weights", default=None, help="store name, .safetensors or .pth folder")
    estimate.add_argument(
        "--size", type=int, default=None, choices=(128, 256, 512), help="parser working side"
    )
    estimate.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    estimate.add_argument("--overwrite", action="store_true", help="estimate again")
    estimate.set_defaults(func=run_estimate)


def run_render(args) -> int:
    import bpy

    # bpy: loaded when the command runs, not for --help
    from ..addon.characters.finding import scene_character
    from ..addon.shading.sheet_views import SheetViewRequest, check_request, sheet_view_steps
    from ..addon.shading.sheets import add_views_to_sheet

    if not args.blend.is_file():
        raise AniRenderError(f"No .blend file at {args.blend}.")
    bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()), load_ui=False)
    scene = bpy.context.scene
    character = scene_character(scene, args.character)
    request = SheetViewRequest(
        out_dir=args.out.resolve(),
        views=args.views,
        size=args.size,
        pose="REST" if args.frame is None else "FRAME",
        frame=args.frame or 0,
        engine=args.engine.upper(),
        samples=args.samples,
    )
    check_request(scene, character.armature, request)
    for message in sheet_view_steps(bpy.context, character.armature, request):
        print(f"rendered the {message}", flush=True)
    if args.save:
        if not hasattr(bpy.types.Object, "anirender"):
            # the add-on's properties: registered only to store the sheet in the file
            from .. import register

            register()
        add_views_to_sheet(character.owner, request.written)
        bpy.ops.wm.save_mainfile()
    print(
        f"wrote {counted(len(request.written), 'sheet view')} (PNG + UDP) to {request.out_dir}"
        + (f" and added them to the sheet of {character.owner.name}" if args.save else "")
    )
    return 0


def run_estimate(args) -> int:
    # torch: loaded when the command runs, not for --help
    from ..models.sheet_udp import estimate_folder

    written, kept = estimate_folder(
        args.folder, weights=args.weights, size=args.size, device=args.device,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(
        f"estimated {counted(len(written), 'UDP')} in {args.folder}"
        + (f"; {len(kept)} image(s) already had one" if kept else "")
    )
    return 0
