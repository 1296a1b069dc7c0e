"""``anirender render SCENE.blend --frames 1-48 [--out PATH]``: what a farm worker's
``blender -b SCENE.blend -a`` does, with the AniRender engine and a progress bar;
``--chunk N`` renders in chunks of N frames, and ``--ray`` runs the chunks as Ray tasks
(each a worker process with Blender) on a local or existing Ray cluster."""

from __future__ import annotations

from pathlib import Path

from ..errors import AniRenderError
from ..service.render_chunks import crash_for_test, frames_text, parse_frames, split_chunks
from ..words import counted

RAY_INSTALL = 'pip install "anirender[ray]"  (or: pip install "ray[serve]==2.60.0")'


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
    parser.add_argument(
        "--chunk", type=int, default=None, help="render in chunks of this many frames"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep frames already written and render the rest, including placeholders an "
        "interrupted render left (for one render per output folder)",
    )
    parser.add_argument(
        "--movie",
        type=Path,
        default=None,
        help="at the end, encode the frames as an H.264 MP4 at this path",
    )
    ray = parser.add_argument_group('Ray (optional extra: pip install "anirender[ray]")')
    ray.add_argument(
        "--ray",
        action="store_true",
        help="run the chunks as Ray tasks, each a worker process with Blender (implies "
        "--resume; a chunk whose worker dies is run again)",
    )
    ray.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (HOST:6379, ray://HOST:10001, or 'auto'); default: "
        "$RAY_ADDRESS, else a new local cluster",
    )
    ray.add_argument(
        "--gpus-per-chunk",
        type=float,
        default=0.0,
        help="GPUs Ray reserves for each chunk's worker, which then sees only those (default 0)",
    )
    ray.add_argument(
        "--retries", type=int, default=3, help="times a failed chunk is run again (default 3)"
    )
    parser.set_defaults(func=run_render)


def run_render(args) -> int:
    if args.ray:
        return _render_with_ray(args)
    if args.address or args.gpus_per_chunk:
        raise AniRenderError("--address and --gpus-per-chunk go with --ray.")
    from tqdm import tqdm

    # bpy: loaded when the command runs, not for --help (farm imports it)
    from ..addon.shading.farm import (
        enable_addon,
        frames_visited,
        open_scene,
        render_frames,
        write_movie,
    )

    scene = open_scene(args.blend, args.scene)
    enable_addon()  # after opening: reading a file resets the add-ons to the preferences'
    if args.frames:
        frames = parse_frames(args.frames)
    else:
        frames = list(range(scene.frame_start, scene.frame_end + 1))
    visited = frames_visited(scene, frames)
    chunks = split_chunks(frames, args.chunk or len(frames))
    rendered: list[int] = []
    with tqdm(total=len(visited), unit="frame", desc="render") as bar:

        def frame_done(frame: int) -> None:
            bar.set_postfix_str(f"frame {frame}")
            bar.update(1)
            crash_for_test(frame)

        for chunk in chunks:
            done, pattern = render_frames(scene, chunk, args.out, frame_done, args.resume)
            rendered += done
    _report(rendered, len(visited), pattern)
    if args.movie:
        print(f"movie: {write_movie(scene, visited, args.out, args.movie)}")
    return 0


def _report(rendered: list[int], asked: int, where: str) -> None:
    skipped = asked - len(rendered)
    print(
        f"rendered {counted(len(rendered), 'frame')} ({', '.join(map(str, rendered)) or 'none'})"
        f" to {where}" + (f"; {skipped} on disk or claimed by another render" if skipped else "")
    )


def _render_with_ray(args) -> int:
    from tqdm import tqdm

    if not args.frames:
        raise AniRenderError("--ray needs the frames to render: add --frames, e.g. 1-2000.")
    if not args.blend.is_file():
        raise AniRenderError(f"No .blend file at {args.blend}.")
    try:
        # Ray: optional, loaded only for --ray
        import ray

        from ..service.ray_render import connect, render_chunks_on_ray  # imports Ray
    except ImportError as exc:
        if not (exc.name or "").startswith("ray"):
            raise
        raise AniRenderError(
            f"--ray needs Ray, which this Python lacks. Install it with {RAY_INSTALL}, "
            "or leave out --ray to render the chunks in this process."
        ) from None
    frames = parse_frames(args.frames)
    chunks = split_chunks(frames, args.chunk or 24)
    out = args.out  # the same path on every node: absolute (shared storage on a cluster)
    if out:
        out = str(Path(out).resolve()) + ("/" if out.endswith(("/", "\\")) else "")
    started = connect(args.address)
    try:
        with tqdm(total=len(frames), unit="frame", desc="render") as bar:

            def chunk_done(chunk: list[int], rendered: list[int]) -> None:
                bar.set_postfix_str(f"frames {frames_text(chunk)}")
                bar.update(len(chunk))

            rendered = render_chunks_on_ray(
                args.blend,
                chunks,
                out,
                args.scene,
                chunk_done,
                retries=args.retries,
                gpus=args.gpus_per_chunk,
            )
    finally:
        if started:
            ray.shutdown()
    print(f"{counted(len(chunks), 'chunk')} on Ray")
    _report(rendered, len(frames), out)
    if args.movie:
        # bpy: this process renders nothing, it only encodes the frames the tasks wrote
        from ..addon.shading.farm import frames_visited, open_scene, write_movie

        scene = open_scene(args.blend, args.scene)
        visited = frames_visited(scene, frames)
        print(f"movie: {write_movie(scene, visited, out, args.movie)}")
    return 0
