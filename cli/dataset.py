"""``anirender dataset <kind>``: render training data in Blender.

    anirender dataset conr --out DIR [--characters N --poses P --size S --seed S]
    anirender dataset celeb [SCENE.blend] --out DIR --poses N      AnimeCeleb-style export
    anirender dataset anr --out DIR --blend shot.blend [--armature NAME] [--frames 1-48]
    anirender dataset anr --out DIR --character makehuman --outfit 0 --size 128
    anirender dataset anr --out DIR --blend shot.blend --images drawn/   (pair drawn frames)

ANR targets are Cycles renders of the character's own materials (or the drawn frames);
the passes are the coarse meshes' (``--coarse``, default: the largest mesh). Handlers
import ``bpy`` when they run.
"""

from pathlib import Path

from ..errors import AniRenderError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="render a training dataset in Blender")
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    _add_conr(sub)
    _add_celeb(sub)
    _add_anr(sub)


def _add_conr(sub) -> None:
    parser = sub.add_parser(
        "conr",
        help="CoNR training samples: toon-shaded RGBA images with their UDP passes",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--characters", type=int, default=12, help="number of characters")
    parser.add_argument("--poses", type=int, default=40, help="samples per character")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation", type=float, default=0.25, help="fraction of characters held out"
    )
    parser.add_argument(
        "--turnaround",
        type=float,
        default=0.25,
        help="share of samples in the rest pose from the front, a side or the back "
        "(0 for datasets made before this option)",
    )
    parser.set_defaults(func=_run_conr)


def _run_conr(args) -> int:
    # bpy: loaded when the command runs, not for --help
    from ..addon.datasets.conr import DatasetSpec, generate_conr_dataset

    spec = DatasetSpec(
        out_dir=args.out,
        characters=args.characters,
        poses=args.poses,
        size=args.size,
        seed=args.seed,
        validation=args.validation,
        turnaround=args.turnaround,
    )
    manifest = generate_conr_dataset(spec, show_progress=True)
    counts = {
        s: sum(1 for c in manifest["characters"] if c["split"] == s) for s in ("train", "val")
    }
    print(f"wrote {args.out}: {counts['train']} training and {counts['val']} validation characters")
    return 0


def _add_anr(subparsers) -> None:
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
    parser.set_defaults(func=_run_anr)


def _run_anr(args) -> int:
    import bpy
    from tqdm import tqdm

    # bpy: loaded when the command runs, not for --help
    from ..addon.anr.capture import CaptureRequest, capture_training_frames, pair_image_sequence
    from ..addon.characters.finding import scene_character
    from ..addon.passes.request import parse_frames

    if args.blend is not None:
        if not args.blend.is_file():
            raise AniRenderError(f"No .blend file at {args.blend}.")
        bpy.ops.wm.open_mainfile(filepath=str(args.blend), load_ui=False)
        scene = bpy.context.scene
        armature = scene_character(scene, args.armature or None).armature
    else:
        # bpy: loaded when the command runs, not for --help
        from ..addon.characters.cache import load_character

        armature = load_character(args.character)
        scene = bpy.context.scene
    if armature is None:
        raise AniRenderError("The character has no armature; ANR captures rigged characters.")
    if args.outfit is not None:
        # bpy: loaded when the command runs, not for --help
        from ..addon.characters.looks import dress_character

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


def _add_celeb(subparsers) -> None:
    parser = subparsers.add_parser(
        "celeb",
        help="AnimeCeleb-style head images of each character with combined_pose.csv",
        description="Render sampled pose-vector poses of every character in a .blend "
        "(or of a built-in cast of toy characters) as RGBA head images.",
    )
    parser.add_argument("blend", type=Path, nargs="?", help="the .blend with the characters")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument(
        "--poses", type=int, help="sampled poses per character (20; 5 with --makehuman)"
    )
    parser.add_argument("--styles", default="shaded", help="comma list of shaded,toon,flat")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--samples", type=int, help="Cycles samples (16; 4 with --makehuman)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--framing", type=float, default=2.4, help="width in head lengths")
    parser.add_argument(
        "--frame-centre", type=float, default=0.25, help="image centre along the head bone"
    )
    parser.add_argument("--characters", default=None, help="comma list of armature names")
    parser.add_argument(
        "--toy-cast", type=int, default=0, help="render N recoloured toys instead of a .blend"
    )
    parser.add_argument(
        "--makehuman",
        type=int,
        default=0,
        help="render N MakeHuman characters (random face shapes, toon looks, eyes, lines; "
        "crops.json and a train/val split by character) instead of a .blend",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="--makehuman: characters held out"
    )
    parser.add_argument("--threads", type=int, default=1, help="--makehuman: Cycles threads")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=_run_celeb)


def _run_celeb(args) -> int:
    import bpy

    if args.makehuman:
        return _run_makehuman_celeb(args)
    args.poses = 20 if args.poses is None else args.poses
    args.samples = 16 if args.samples is None else args.samples

    # bpy: loaded when the command runs, not for --help
    from ..addon.core.guard import SceneGuard
    from ..addon.datasets.celeb import build_toy_cast, export_celeb_dataset, scene_characters

    if args.toy_cast:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        build_toy_cast(bpy.context.scene, args.toy_cast, seed=args.seed)
    elif args.blend is None or not args.blend.is_file():
        raise AniRenderError(f"No .blend file at {args.blend}; give one or use --toy-cast N.")
    else:
        bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()), load_ui=False)
    scene = bpy.context.scene
    characters = scene_characters(scene)
    if args.characters:
        wanted = [n.strip() for n in args.characters.split(",") if n.strip()]
        characters = [c for c in characters if c.name in wanted]
        if not characters:
            raise AniRenderError(f"None of the armatures {wanted} is in the scene.")
    styles = [s.strip().upper() for s in args.styles.split(",") if s.strip()]
    with SceneGuard(bpy.context):
        job = export_celeb_dataset(
            bpy.context,
            args.out,
            args.poses,
            characters=characters,
            styles=styles,
            seed=args.seed,
            resolution=args.size,
            framing=args.framing,
            frame_centre=args.frame_centre,
            samples=args.samples,
            overwrite=args.overwrite,
        )
        _run_with_progress(job)
    return 0


def _run_with_progress(job) -> None:
    """Run an export job to its end with a progress bar, then print its summary."""
    from tqdm import tqdm

    with tqdm(total=job.total, unit="img") as bar:

        def progress(job):
            bar.n = job.done
            bar.refresh()

        job.run_to_end(progress)
    print(job.summary)


def _run_makehuman_celeb(args) -> int:
    # bpy: loaded when the command runs, not for --help
    from ..addon.datasets.faces import export_makehuman_celeb

    job = export_makehuman_celeb(
        args.out,
        args.makehuman,
        poses=5 if args.poses is None else args.poses,
        size=args.size,
        seed=args.seed,
        samples=4 if args.samples is None else args.samples,
        val_fraction=args.val_fraction,
        threads=args.threads,
        overwrite=args.overwrite,
    )
    _run_with_progress(job)
    return 0
