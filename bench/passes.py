"""Pass rendering speed: the Cycles path vs the fast rasteriser, side by side in one run.

    .venv/bin/python bench/passes.py [--frames 48] [--size 512] [--passes udp]

Renders the UDP pass of the MakeHuman walk (the cached test character) for the same
frames with both renderers, writing float EXR as an artist would, and prints frames per
second and the ratio fast / Cycles (the baseline), wall-clock and CPU time. Both run in
this process, interleaved in blocks of frames (each block timed until its files are on
disk), so they share the machine's load. The agreement of the two outputs is
printed too, as a check that the comparison is fair.

``--stages`` then renders the frames once more with the fast path alone and prints where
its CPU time goes per frame (each stage's thread CPU time, the file writes on their
worker thread included): the frame change (depsgraph evaluation), reading the evaluated
meshes, rasterising, the rest of the backend (camera, projection, interpolation, the
pass images) and writing the files.
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
    parser.add_argument("--block", type=int, default=8, help="frames per interleaved block")
    parser.add_argument("--stages", action="store_true", help="then time the fast path's stages")
    args = parser.parse_args()

    import bpy

    from anirender.addon.characters.cache import load_character
    from anirender.addon.passes import canonical
    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest
    from anirender.models.exr import read_exr

    armature = load_character(args.character)
    scene = bpy.context.scene
    canonical.set_canonical_pose(armature)
    frames = list(range(scene.frame_start, scene.frame_start + args.frames))
    triangles = sum(len(m.data.polygons) for m in canonical.deformed_meshes(armature))
    passes = tuple(args.passes.split(","))
    wall = {"cycles": 0.0, "fast": 0.0}
    cpu = {"cycles": 0.0, "fast": 0.0}
    with tempfile.TemporaryDirectory(prefix="anirender-bench-") as tmp:
        renderers = {}
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
            renderers[name] = render_udp_passes(scene, armature, request)[0].__enter__()
        try:
            for renderer in renderers.values():
                renderer.render_and_write(frames[0])  # warm-up: imports, first sync
                renderer.flush()
            # interleaved in blocks of frames, so both see the same load on shared cores;
            # a block's time ends when its files are on disk (the fast path writes them
            # on a worker thread while the next frame renders)
            for first in range(0, len(frames), args.block):
                block = frames[first : first + args.block]
                for name, renderer in renderers.items():
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    for frame in block:
                        renderer.render_and_write(frame)
                    renderer.flush()
                    wall[name] += time.perf_counter() - start_wall
                    cpu[name] += time.process_time() - start_cpu
        finally:
            for renderer in renderers.values():
                renderer.close()
        for name in wall:
            print(f"{name:>6}: {len(frames)} frames in {wall[name]:.2f} s = "
                  f"{len(frames) / wall[name]:.2f} fps; "
                  f"{1000 * cpu[name] / len(frames):.0f} ms CPU per frame")  # fmt: skip
        worst_occupancy, worst_xyz, close = 1.0, 0.0, []
        for frame in frames:
            a = read_exr(Path(tmp) / "cycles" / passes[0] / f"{passes[0]}_{frame:04d}.exr")
            b = read_exr(Path(tmp) / "fast" / passes[0] / f"{passes[0]}_{frame:04d}.exr")
            occupancy_a, occupancy_b = a[..., 3] > 0, b[..., 3] > 0
            worst_occupancy = min(worst_occupancy, float((occupancy_a == occupancy_b).mean()))
            both = occupancy_a & occupancy_b
            diff = np.abs(a[both, :3] - b[both, :3]).max(axis=1)
            worst_xyz = max(worst_xyz, float(diff.max()))
            close.append(float((diff < 1e-3).mean()))
    if args.stages:
        _stages(scene, armature, frames, passes, args.size)
    import torch

    print(
        f"fast / cycles speed: {wall['cycles'] / wall['fast']:.2f}x wall, "
        f"{cpu['cycles'] / cpu['fast']:.2f}x CPU  "
        f"({args.character}, {triangles} faces, {args.size}x{args.size}, passes {args.passes}, "
        f"{platform.processor() or platform.machine()}, torch threads 1, "
        f"cuda {torch.cuda.is_available()})"
    )
    print(
        f"agreement: occupancy >= {worst_occupancy:.4f}; XYZ within 1e-3 on >= "
        f"{100 * min(close):.3f}% of shared pixels per frame (max diff {worst_xyz:.2e})"
    )


def _stages(scene, armature, frames, passes, size) -> None:
    """CPU time per frame of each stage of the fast path, measured with thread CPU clocks
    around the functions that do them (the writes run on the writer thread)."""
    import threading

    from anirender.addon.passes import fast, files
    from anirender.addon.passes.renderer import render_udp_passes
    from anirender.addon.passes.request import PassRequest

    spent, lock = {}, threading.Lock()

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    spent[name] = spent.get(name, 0.0) + time.thread_time() - start

        return wrapper

    originals = {"gather": (fast, "_gather"), "write": (files, "write_exr")}
    saved = {name: getattr(module, attr) for name, (module, attr) in originals.items()}
    with tempfile.TemporaryDirectory(prefix="anirender-bench-") as tmp:
        request = PassRequest(out_dir=Path(tmp), frames=frames, passes=passes,
                              formats=("exr",), fast=True, size=(size, size), overwrite=True)  # fmt: skip
        renderer = render_udp_passes(scene, armature, request)[0].__enter__()
        try:
            renderer.render_and_write(frames[0])
            renderer.flush()
            for name, (module, attr) in originals.items():
                setattr(module, attr, timed(name, saved[name]))
            backend = renderer._backend
            renderer.set_frame = timed("frame change", renderer.set_frame)
            backend.render = timed("backend total", backend.render)
            raster = backend.raster
            rasterise = raster.rasterise
            raster.rasterise = timed("rasterise", rasterise)
            try:
                start = time.process_time()
                for frame in frames:
                    renderer.render_and_write(frame)
                renderer.flush()
                total = time.process_time() - start
            finally:
                raster.rasterise = rasterise
                for name, (module, attr) in originals.items():
                    setattr(module, attr, saved[name])
        finally:
            renderer.close()
    inner = ("frame change", "gather", "rasterise")
    spent["rest of the backend"] = spent.pop("backend total") - sum(spent[k] for k in inner)
    spent["other (process)"] = total - sum(spent.values())
    print(f"fast path stages, CPU ms per frame ({len(frames)} frames, {size} px):")
    for name in (*inner, "rest of the backend", "write", "other (process)"):
        print(f"  {name:>20}: {1000 * spent[name] / len(frames):6.1f}")
    print(f"  {'total':>20}: {1000 * total / len(frames):6.1f}")


if __name__ == "__main__":
    main()
