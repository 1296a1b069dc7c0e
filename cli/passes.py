"""``anirender passes SCENE.blend --out DIR``: render UDP and deferred-shading passes."""

from pathlib import Path

from ..errors import AniRenderError
from ..words import counted


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "passes",
        help="render UDP / UV / normal / depth / occupancy passes of a rigged character",
        description="Render the passes of the character in a .blend file, frame by frame.",
    )
    parser.add_argument("blend", type=Path, help="the .blend file with the character")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--frames", default=None, help="e.g. 1-48 or 1-10,20 (default: scene)")
    parser.add_argument(
        "--passes", default="udp", help="comma list of udp,uv,normal,depth,occupancy"
    )
    parser.add_argument("--formats", default="exr,npz,png", help="comma list of exr,npz,png")
    parser.add_argument("--fast", action="store_true", help="rasterise instead of Cycles")
    parser.add_argument("--size", default=None, help="square side or WIDTHxHEIGHT override")
    parser.add_argument("--character", default=None, help="armature name (default: the only one)")
    parser.add_argument("--scene", default=None, help="scene name (default: the file's active)")
    parser.add_argument("--overwrite", action="store_true", help="redo frames already on disk")
    parser.set_defaults(func=run_passes)


def parse_size(text):

    if text is None:
        return None
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise AniRenderError(f"Cannot read the size {text!r}; write 256 or 640x360.") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise AniRenderError(f"Cannot read the size {text!r}; write 256 or 640x360.")
    return parts[0], parts[1]


def run_passes(args) -> int:
    import bpy
    from tqdm import tqdm

    # bpy: loaded when the command runs, not for --help
    from ..addon.characters.finding import scene_character
    from ..addon.passes.renderer import render_udp_passes
    from ..addon.passes.request import PassRequest, parse_frames

    if not args.blend.is_file():
        raise AniRenderError(f"No .blend file at {args.blend}.")
    bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()))
    scene = bpy.context.scene
    if args.scene:
        scene = bpy.data.scenes.get(args.scene)
        if scene is None:
            raise AniRenderError(f'{args.blend.name} has no scene named "{args.scene}".')
    if args.frames:
        frames = parse_frames(args.frames)
    else:
        frames = list(range(scene.frame_start, scene.frame_end + 1))
    character = scene_character(scene, args.character)
    request = PassRequest(
        out_dir=args.out,
        frames=frames,
        passes=args.passes,
        formats=args.formats,
        fast=args.fast,
        size=parse_size(args.size),
        overwrite=args.overwrite,
    )
    renderer, steps = render_udp_passes(scene, character.armature, request)
    skipped = len(frames) - len(renderer.todo)
    with tqdm(total=len(renderer.todo), unit="frame", desc="passes") as bar:
        for message in steps:
            bar.set_postfix_str(message)
            bar.update(1)
    print(
        f"{counted(len(renderer.todo), 'frame')} of {', '.join(request.passes)} written to {request.out_dir}"
        + (f"; {skipped} were already there" if skipped else "")
    )
    return 0
