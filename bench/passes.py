"""Pass rendering speed: the Cycles path vs the fast rasteriser, side by side in one run.

    .venv/bin/python bench/passes.py [--frames 48] [--size 512] [--passes udp]

Renders the UDP pass of the MakeHuman walk (the cached test character) for the same
frames with both renderers, writing float EXR as an artist would, and prints frames per
second and the ratio fast / Cycles (the baseline). Both runs happen in this process, one
after the other, so they share the machine's load. The agreement of the two outputs is
printed too, as a check that the comparison is fair.
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--passes", default="udp")
    parser.add_argument("--character", default="makehuman")
    args = parser.parse_args()

    import bpy

    from anirender.addon import canonical
    from anirender.addon.character_cache import load_character
    from anirender.addon.passes import PassRequest, render_udp_passes
    from anirender.models.exr import read_exr

    armature = load_character(args.character)
    scene = bpy.context.scene
    canonical.set_canonical_pose(armature)
    frames = list(range(scene.frame_start, scene.frame_start + args.frames))
    triangles = sum(len(m.data.polygons) for m in canonical.deformed_meshes(armature))
    passes = tuple(args.passes.split(","))
    results = {}
    with tempfile.TemporaryDirectory(prefix="anirender-bench-") as tmp:
        for name, fast in (("cycles", False), ("fast", True)):
            request = PassRequest(
                out_dir=Path(tmp) / name,
                frames=frames,
                passes=passes,
                formats=("exr",),
                fast=fast,
                size=(args.size, args.size),
                overwrite=True,
            )
            renderer, steps = render_udp_passes(scene, armature, request)
            with renderer:
                renderer.render_and_write(frames[0])  # warm-up: scene setup, imports
                start = time.perf_counter()
                for frame in frames:
                    renderer.render_and_write(frame)
                seconds = time.perf_counter() - start
            steps.close()
            results[name] = seconds
            print(f"{name:>6}: {len(frames)} frames in {seconds:.2f} s = "
                  f"{len(frames) / seconds:.2f} fps")  # fmt: skip
        worst_occupancy, worst_xyz = 1.0, 0.0
        for frame in frames:
            a = read_exr(Path(tmp) / "cycles" / passes[0] / f"{passes[0]}_{frame:04d}.exr")
            b = read_exr(Path(tmp) / "fast" / passes[0] / f"{passes[0]}_{frame:04d}.exr")
            occupancy_a, occupancy_b = a[..., 3] > 0, b[..., 3] > 0
            worst_occupancy = min(worst_occupancy, float((occupancy_a == occupancy_b).mean()))
            both = occupancy_a & occupancy_b
            worst_xyz = max(worst_xyz, float(np.abs(a[both, :3] - b[both, :3]).max()))
    import torch

    print(
        f"fast / cycles speed: {results['cycles'] / results['fast']:.2f}x  "
        f"({args.character}, {triangles} faces, {args.size}x{args.size}, passes {args.passes}, "
        f"{platform.processor() or platform.machine()}, torch threads 1, "
        f"cuda {torch.cuda.is_available()})"
    )
    print(f"agreement: occupancy >= {worst_occupancy:.4f}, max |XYZ| diff {worst_xyz:.2e}")


if __name__ == "__main__":
    main()
