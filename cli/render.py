"""``anirender render SCENE.blend --frames 1-48 [--out PATH]``: what a farm worker's
``blender -b SCENE.blend -a`` does, with the AniRender engine and a progress bar."""

from __future__ import annotations

from pathlib import Path

from ..words import counted


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render a .blend's frames with the AniRender engine (as a render farm would)",
        description="Render frames of a .blend file through Blender's own animation render "
        "with the AniRender engine: the file's output format, frame step, overwrite and "
        "placeholder settings apply.",
    )
    parser.add_argument("blend", type=Path, help="the .blend file (its engine: AniRender)")
    parser.add_argument("--frames", default=None, help="e.g. 1-48 or 1-10,20 (default: scene)")
    parser.add_argument(
        "--out", default=None, help="output path or folder/ (default: the file's output path)"
    )
    parser.add_argument("--scene", default=None, help="scene name (default: the file's active)")
    parser.set_defaults(func=run_render)


def run_render(args) -> int:
    from tqdm import tqdm

    # bpy: loaded when the command runs, not for --help (farm imports it)
    from ..addon.passes.request import parse_frames
    from ..addon.shading.farm import enable_addon, frames_visited, open_scene, render_frames

    scene = open_scene(args.blend, args.scene)
    enable_addon()  # after opening: reading a file resets the add-ons to the preferences'
    if args.frames:
        frames = parse_frames(args.frames)
    else:
        frames = list(range(scene.frame_start, scene.frame_end + 1))
    visited = frames_visited(scene, frames)
    with tqdm(total=len(visited), unit="frame", desc="render") as bar:

        def frame_done(frame: int) -> None:
            bar.set_postfix_str(f"frame {frame}")
            bar.update(1)

        rendered, pattern = render_frames(scene, frames, args.out, frame_done)
    skipped = len(visited) - len(rendered)
    print(
        f"rendered {counted(len(rendered), 'frame')} ({', '.join(map(str, rendered)) or 'none'})"
        f" to {pattern}" + (f"; {skipped} on disk or claimed by another render" if skipped else "")
    )
    return 0
