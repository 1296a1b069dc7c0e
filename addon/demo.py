"""``anirender demo``: the main job, end to end on the MakeHuman character."""

from pathlib import Path


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="render the MakeHuman walk end to end")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    import bpy

    from .character_cache import load_character, stage_character

    args.out.mkdir(parents=True, exist_ok=True)
    armature = load_character("makehuman")
    scene = bpy.context.scene
    stage_character(scene, armature, azimuth_deg=25.0, resolution=384)
    scene.frame_set((scene.frame_start + scene.frame_end) // 2)
    scene.render.filepath = str((args.out / "preview.png").resolve())
    bpy.ops.render.render(write_still=True)
    print(f"wrote {scene.render.filepath}")
    return 0
