"""Scene to shaded frame: frames per second in process and over HTTP, time split by stage.

    .venv/bin/python bench/end_to_end.py [--frames 6] [--size 256] [--views 4]
                                         [--width 1.0] [--weights NAME|PATH]

On the MakeHuman walk (the cached test character), each frame goes the way the Neural
Render operators send it: the fast pass renderer draws the UDP at size x size, and the
shader (CoNR with a ``--views`` character sheet) paints it. Two ways, one after the other
in this process so they share the machine's load:

- in process: ``InProcessClient`` (the networks in Blender's Python);
- over HTTP: ``LocalService`` starts ``anirender serve`` on 127.0.0.1 (the add-on's own
  launcher) and ``HttpClient`` talks to it; the service reports the model's seconds for
  each request, the rest of the request's time is transfer (encode, HTTP, decode).

Without ``--weights`` the released architecture (``--width 1.0``) runs with seeded
weights: the same work as the released checkpoints. Sheet views are cut-outs of the
character's own UDP at four frames of the walk, framed as the add-on frames sheets.
Frames are timed one after the other (no pipelining), alternating between the two ways
frame by frame; fps is 1 / (median pass + transfer + shading); the sheet upload and
encoding is timed apart.
"""

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--width", type=float, default=1.0, help="CoNR width for seeded weights")
    parser.add_argument("--weights", default=None, help="weights name or path (default: seeded)")
    parser.add_argument("--character", default="makehuman")
    args = parser.parse_args()

    import bpy
    import torch

    from anirender.addon.characters.cache import load_character
    from anirender.addon.passes import canonical
    from anirender.addon.passes.renderer import PassRenderer
    from anirender.addon.passes.request import PassRequest
    from anirender.addon.shading import sheets
    from anirender.addon.shading.clients import InProcessClient
    from anirender.addon.shading.local_service import LocalService
    from anirender.models.conr.config import CoNRConfig
    from anirender.models.conr.model import CoNR

    armature = load_character(args.character)
    scene = bpy.context.scene
    canonical.set_canonical_pose(armature)
    size = args.size
    first = scene.frame_start
    frames = list(range(first, first + args.frames))
    span = max(scene.frame_end - first, args.views)
    sheet_frames = [first + i * span // args.views for i in range(args.views)]

    with tempfile.TemporaryDirectory(prefix="anirender-bench-") as tmp:
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = str(Path(tmp) / "seeded-conr.safetensors")
            CoNR(CoNRConfig(width=args.width)).save_safetensors(weights, {"seed": 0})
        request = PassRequest(
            Path(tmp) / "udp", sorted(set(frames + sheet_frames)), ("udp",), ("npz",), True,
            (size, size), overwrite=True,
        )  # fmt: skip
        with PassRenderer(scene, armature, request) as renderer:
            views = []
            for frame in sheet_frames:
                udp = renderer.render_frame(frame)["udp"]
                cut_out = np.rint(np.clip(udp, 0, 1) * 255).astype(np.uint8)
                views.append(sheets.frame_view(cut_out, size, f"view at frame {frame}"))
            images = np.stack(views)
            renderer.render_frame(frames[0])  # warm-up

            in_process = InProcessClient(weights, device="cpu")
            in_process.info()  # loads the model
            service = LocalService(sys.executable, 0, weights).start()
            try:
                results = run(
                    renderer,
                    frames,
                    {"in process": in_process, "over HTTP": service.client()},
                    images,
                )
            finally:
                service.stop()

    print(
        f"\n{args.character} walk, {len(frames)} frames at {size}x{size}, {args.views} views, "
        f"CoNR width {args.width} ({'seeded' if args.weights is None else args.weights}), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}"
    )
    print(f"{'':>11} {'fps':>7} {'pass s':>8} {'transfer s':>11} {'shading s':>10} {'sheet s':>8}")
    for name, r in results.items():
        print(
            f"{name:>11} {r['fps']:7.3f} {r['pass']:8.3f} {r['transfer']:11.3f} "
            f"{r['shading']:10.3f} {r['sheet']:8.2f}"
        )
    ratio = results["over HTTP"]["fps"] / results["in process"]["fps"]
    print(f"HTTP / in-process fps: {ratio:.3f}")


def run(renderer, frames, clients: dict, images) -> dict:
    """Shade ``frames`` with every client in turn, frame by frame (so they share the
    machine's load alike); median seconds per stage and frames per second."""
    sheet_ids, times = {}, {}
    for name, client in clients.items():
        start = time.perf_counter()
        sheet_ids[name] = client.upload_sheet(images)
        times[name] = {
            "sheet": time.perf_counter() - start,
            "pass": [],
            "transfer": [],
            "shading": [],
        }
        client.shade(sheet_ids[name], renderer.render_frame(frames[0])["udp"][None])  # warm-up
    for frame in frames:
        for name, client in clients.items():
            t0 = time.perf_counter()
            udp = renderer.render_frame(frame)["udp"]
            t1 = time.perf_counter()
            client.shade(sheet_ids[name], udp[None])
            t2 = time.perf_counter()
            shading = getattr(client, "last_shading_seconds", None)
            shading = t2 - t1 if shading is None else shading
            times[name]["pass"].append(t1 - t0)
            times[name]["shading"].append(shading)
            times[name]["transfer"].append(t2 - t1 - shading)
    results = {}
    for name, t in times.items():
        per_frame = {k: statistics.median(t[k]) for k in ("pass", "transfer", "shading")}
        results[name] = {**per_frame, "sheet": t["sheet"], "fps": 1.0 / sum(per_frame.values())}
    return results


if __name__ == "__main__":
    main()
