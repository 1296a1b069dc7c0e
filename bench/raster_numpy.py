"""The engine's passes without torch: the numpy rasteriser vs torch's, side by side.

    .venv/bin/python bench/raster_numpy.py [--frames 24] [--size 512] [--character makehuman]

A Blender whose Python has no torch (an artist's, a farm worker's) draws the AniRender
engine's passes with ``models.raster_numpy``. This renders the UDP, normal, depth and UV
passes of the cached test character's animation with both rasterisers (torch's on one
CPU thread, the baseline, as the engine runs it), interleaved frame by frame in one
process so both see the same load, and prints milliseconds per frame (wall and CPU) and
the ratio numpy / torch, with the share of pixels on which the two agree.
"""

import argparse
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--character", default="makehuman")
    args = parser.parse_args()

    import bpy

    from anirender.addon.characters.cache import load_character
    from anirender.addon.passes import canonical, fast
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.models import raster, raster_numpy

    armature = load_character(args.character)
    scene = bpy.context.scene
    canonical.set_canonical_pose(armature, scene=scene)
    first = scene.frame_start
    frames = list(range(first, first + args.frames))
    passes = ("udp", "normal", "depth", "uv")
    request = PassRequest("/tmp", frames, passes, ("npz",), True, (args.size, args.size))
    times = {"torch": [0.0, 0.0], "numpy": [0.0, 0.0]}
    agree = []
    with PassRenderer(scene, armature, request) as renderer:
        backends = {
            "torch": fast.FastBackend(renderer, raster=raster),
            "numpy": fast.FastBackend(renderer, raster=raster_numpy),
        }
        for backend in backends.values():  # warm up (first-call costs, caches)
            backend.render(frames[0])
        for frame in frames:
            images = {}
            for name, backend in backends.items():
                wall, cpu = time.perf_counter(), time.process_time()
                images[name] = backend.render(frame)
                times[name][0] += time.perf_counter() - wall
                times[name][1] += time.process_time() - cpu
            agree.append(
                np.mean([
                    (images["torch"][p][..., 3] == images["numpy"][p][..., 3]).mean()
                    for p in passes
                ])
            )  # fmt: skip
    count = len(frames)
    torch_wall, torch_cpu = (t / count * 1000 for t in times["torch"])
    numpy_wall, numpy_cpu = (t / count * 1000 for t in times["numpy"])
    print(f"{platform.processor() or platform.machine()}, bpy {bpy.app.version_string}")
    print(f"{args.character}, {count} frames, {args.size} x {args.size}, passes {passes}")
    print(f"torch (1 thread): {torch_wall:.0f} ms wall, {torch_cpu:.0f} ms CPU per frame")
    print(f"numpy:            {numpy_wall:.0f} ms wall, {numpy_cpu:.0f} ms CPU per frame")
    print(f"numpy / torch: {numpy_wall / torch_wall:.2f}x wall, {numpy_cpu / torch_cpu:.2f}x CPU")
    print(f"pixels where the two agree (coverage): {np.mean(agree):.5f}")


if __name__ == "__main__":
    main()
