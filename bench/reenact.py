"""Slider to image: reenactment preview latency vs a Cycles render of the same pose.

    .venv/bin/python bench/reenact.py [--poses 12] [--size 256] [--threads 1]

On the toy character (cached test character) with its pose sliders set up, each timed
step is what the live preview does for one slider change: set the 20 sliders
(``apply_pose``), read them back, reenact a ``--size`` x ``--size`` portrait (the
character's own neutral head render) and write the result into a Blender image.

Contenders, interleaved pose by pose so they share the machine's load:

- ``small``: the earlier shipped 64 px model ``assets/reenact_small.safetensors`` (works
  at its own size, 64 x 64; resize in and out included);
- ``shipped``: the shipped 256 px model ``assets/reenact_256.safetensors`` (warping net
  on a 64 px copy of the source, light editing net at full size);
- ``mirrored``: the shipped model with Mirror Average (two passes, the face and its
  mirror image averaged);
- ``full``: a 256 x 256 generator of the original architecture at width 32 (seeded
  weights: the same work as a trained one);
- baseline ``cycles``: render the same pose with Cycles as the dataset export stages it
  (16 samples, ``--size`` px, toon style).

Reports the median seconds per slider change and the ratio baseline / contender.

``--network-only`` (implied by ``--device cuda``: the GPU machine has no Blender) times
the network call alone, portrait array in and RGBA array out, transfers included, on a
seeded synthetic portrait; no Cycles baseline then, the CPU run of the same command is
the comparison:

    python3 bench/reenact.py --device cuda    # bench/gpu.sh
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "reenact.json")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--network-only", action="store_true", help="no Blender: the net alone")
    args = parser.parse_args()
    if args.network_only or args.device == "cuda":
        return network_only(args)

    import bpy
    import torch
    from PIL import Image

    from anirender.addon.characters.cache import load_character
    from anirender.addon.characters.finding import find_character
    from anirender.addon.datasets.celeb import render_pose_image
    from anirender.addon.pose import sliders as morphs
    from anirender.addon.pose.preview import show_rgba
    from anirender.models.reenact import (
        LEGACY_64_WEIGHTS,
        FaceGenerator,
        ReenactConfig,
        Reenactor,
        load_reenact,
    )

    torch.set_num_threads(args.threads)
    armature = load_character("toy")
    character = find_character(armature)
    bindings = morphs.setup_morph_rig(character)
    scratch = Path(tempfile.mkdtemp(prefix="anirender-bench-"))
    portrait_path = render_pose_image(
        bpy.context, character, [0.0] * 20, scratch / "portrait.png", "TOON", args.size
    )
    portrait = np.asarray(Image.open(portrait_path).convert("RGBA"))

    small = Reenactor(LEGACY_64_WEIGHTS)
    shipped = Reenactor()
    mirrored = Reenactor(model=shipped.model, mirror_average=True)
    torch.manual_seed(0)
    full = Reenactor(model=FaceGenerator(ReenactConfig(image_size=args.size, base=32)))
    full_params = sum(p.numel() for p in full.model.parameters())
    small_cfg = load_reenact(LEGACY_64_WEIGHTS).cfg
    shipped_cfg = shipped.model.cfg
    shipped_params = sum(p.numel() for p in shipped.model.parameters())

    def preview(reenactor, pose):
        morphs.apply_pose(armature, pose)
        values = morphs.get_pose(armature)
        show_rgba(reenactor.reenact(portrait, values))

    def cycles(pose, index):
        render_pose_image(
            bpy.context, character, pose, scratch / f"{index}.png", "TOON", args.size, samples=16
        )

    poses = [morphs.random_pose(bindings, seed=i) for i in range(args.poses + 1)]
    preview(small, poses[0])  # warm-up: first calls allocate
    preview(shipped, poses[0])
    preview(mirrored, poses[0])
    preview(full, poses[0])
    times = {"small": [], "shipped": [], "mirrored": [], "full": [], "cycles": []}
    for i, pose in enumerate(poses[1:]):
        for name, run in (
            ("small", lambda pose=pose: preview(small, pose)),
            ("shipped", lambda pose=pose: preview(shipped, pose)),
            ("mirrored", lambda pose=pose: preview(mirrored, pose)),
            ("full", lambda pose=pose: preview(full, pose)),
            ("cycles", lambda pose=pose, i=i: cycles(pose, i)),
        ):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        print(f"pose {i + 1}/{args.poses}", {k: round(v[-1], 3) for k, v in times.items()})

    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, Python {sys.version.split()[0]}, torch {torch.__version__}",
        "size": args.size,
        "poses": args.poses,
        "small_config": small_cfg.to_json(),
        "shipped_config": shipped_cfg.to_json(),
        "shipped_params": shipped_params,
        "full_params": full_params,
        "median_s": median,
        "cycles_over": {
            k: median["cycles"] / median[k] for k in ("small", "shipped", "mirrored", "full")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def network_only(args) -> None:
    """Median seconds per ``Reenactor.reenact`` call (one slider change) on ``args.device``."""
    import torch

    from anirender.models.reenact import (
        LEGACY_64_WEIGHTS,
        POSE_SIZE,
        FaceGenerator,
        ReenactConfig,
        Reenactor,
    )

    torch.set_num_threads(args.threads)
    size = args.size
    yy, xx = np.mgrid[:size, :size] / size
    portrait = np.zeros((size, size, 4), np.uint8)
    face = (yy - 0.55) ** 2 + (xx - 0.5) ** 2 < 0.35**2
    portrait[..., 0] = (255 * xx).astype(np.uint8)
    portrait[..., 1] = (255 * yy).astype(np.uint8)
    portrait[..., 2] = 200
    portrait[..., 3] = np.where(face, 255, 0)
    shipped = Reenactor(device=args.device)
    torch.manual_seed(0)
    full_net = FaceGenerator(ReenactConfig(image_size=size, base=32))
    contenders = {
        "small": Reenactor(LEGACY_64_WEIGHTS, device=args.device),
        "shipped": shipped,
        "mirrored": Reenactor(model=shipped.model, device=args.device, mirror_average=True),
        "full": Reenactor(model=full_net, device=args.device),
    }
    rng = np.random.default_rng(0)
    poses = rng.uniform(0, 1, (args.poses + 1, POSE_SIZE)).astype(np.float32)
    poses[:, 17:] = rng.uniform(-0.5, 0.5, (args.poses + 1, 3))
    for reenactor in contenders.values():  # warm-up: first calls allocate
        reenactor.reenact(portrait, poses[0])
    times = {name: [] for name in contenders}
    for pose in poses[1:]:
        for name, reenactor in contenders.items():
            start = time.perf_counter()
            reenactor.reenact(portrait, pose)
            times[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    where = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{where}, torch {torch.__version__}",
        "device": args.device,
        "size": size,
        "poses": args.poses,
        "what": "network only: Reenactor.reenact, portrait array in, RGBA array out",
        "median_s": median,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
