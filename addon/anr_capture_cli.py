"""``anirender dataset anr``: ANR training frames from a .blend or a test character.

    anirender dataset anr --out DIR --blend shot.blend [--armature NAME] [--frames 1-48]
    anirender dataset anr --out DIR --character makehuman --outfit 0 --size 128
    anirender dataset anr --out DIR --blend shot.blend --images drawn/   (pair drawn frames)

Targets are Cycles renders of the character's own materials (or the drawn frames); the
passes are the coarse meshes' (``--coarse``, default: the largest mesh). ``bpy`` is
imported only when the command runs.
"""

from pathlib import Path


def add_dataset_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "anr", help="ANR training frames: the character's look with its coarse mesh's passes"
    )
    parser.add_argument("--out", type=Path, required=True, help="capture folder (one identity)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--blend", type=Path, help="a .blend with the rigged character")
    source.add_argument("--character", choices=("makehuman", "toy"), help="a test character")
    parser.add_argument("--armature", default="", help="the character's armature (in --blend)")
    parser.add_argument("--outfit", type=int, help="dress the character in a seeded toon look")
    parser.add_argument("--frames", default="", help="e.g. 0-40 (default: the scene's range)")
    parser.add_argument("--size", type=int, default=256, help="square frame side")
    parser.add_argument("--coarse", default="", help="comma-separated coarse meshes")
    parser.add_argument("--identity", default="", help="identity name (default: armature)")
    parser.add_argument("--samples", type=int, default=6, help="Cycles samples per pixel")
    parser.add_argument("--images", type=Path, help="pair these drawn frames instead")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    import bpy
    from tqdm import tqdm

    from ..errors import AniRenderError
    from .anr_capture import CaptureRequest, capture_training_frames, pair_image_sequence
    from .passes import parse_frames, scene_character

    if args.blend is not None:
        if not args.blend.is_file():
            raise AniRenderError(f"No .blend file at {args.blend}.")
        bpy.ops.wm.open_mainfile(filepath=str(args.blend), load_ui=False)
        scene = bpy.context.scene
        armature = scene_character(scene, args.armature or None).armature
    else:
        from .character_cache import load_character

        armature = load_character(args.character)
        scene = bpy.context.scene
    if armature is None:
        raise AniRenderError("The character has no armature; ANR captures rigged characters.")
    if args.outfit is not None:
        from .toon_look import dress_character

        dress_character(armature, args.outfit, scene)
    frames = (
        parse_frames(args.frames)
        if args.frames
        else list(range(scene.frame_start, scene.frame_end + 1))
    )
    coarse = [n.strip() for n in args.coarse.split(",") if n.strip()]
    request = CaptureRequest(
        args.out, frames, size=args.size, coarse=coarse, identity=args.identity,
        samples=args.samples,
    )  # fmt: skip
    if args.images is not None:
        total, steps = pair_image_sequence(scene, armature, args.images, request)
    else:
        total, steps = capture_training_frames(scene, armature, request)
    for _ in tqdm(steps, total=total, unit="frame", desc="capture anr"):
        pass
    print(f"wrote {total} ANR training frames of {armature.name} to {args.out}")
    return 0
