"""``anirender dataset celeb [SCENE.blend] --out DIR --poses N``: AnimeCeleb-style export."""

from pathlib import Path


def add_dataset_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "celeb",
        help="AnimeCeleb-style head images of each character with combined_pose.csv",
        description="Render sampled pose-vector poses of every character in a .blend "
        "(or of a built-in cast of toy characters) as RGBA head images.",
    )
    parser.add_argument("blend", type=Path, nargs="?", help="the .blend with the characters")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--poses", type=int, default=20, help="sampled poses per character")
    parser.add_argument("--styles", default="shaded", help="comma list of shaded,toon,flat")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--framing", type=float, default=2.4, help="width in head lengths")
    parser.add_argument(
        "--frame-centre", type=float, default=0.25, help="image centre along the head bone"
    )
    parser.add_argument("--characters", default=None, help="comma list of armature names")
    parser.add_argument(
        "--toy-cast", type=int, default=0, help="render N recoloured toys instead of a .blend"
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run_celeb)


def run_celeb(args) -> int:
    import bpy
    from tqdm import tqdm

    from ..errors import AniRenderError
    from .celeb_dataset import build_toy_cast, export_celeb_dataset, scene_characters
    from .scene import SceneGuard

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
        with tqdm(total=job.total, unit="img") as bar:

            def progress(job):
                bar.n = job.done
                bar.refresh()

            job.run_to_end(progress)
    print(job.summary)
    return 0
