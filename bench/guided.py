"""Shading speed on CPU: the UDP-guided shader beside the image-only CoNR, same frames.

A real character: the first character of a dataset from ``anirender dataset conr``
(``--data``; its first ``--views`` samples the sheet, the next ``--frames`` the targets),
at the working size. Contenders, interleaved, fastest of ``--repeats`` runs kept:

- ``guided``: the shipped guided shader (``assets/guided.safetensors``), frames batched;
  the time covers the correspondence search and the network, not the sheet's index
  (built once per sheet, reported apart);
- ``conr``: the shipped image-only CoNR (``assets/conr_toon.safetensors``), the road taken
  when the sheet has no UDPs, ``CoNR.render`` with the sheet encoded beforehand.

    .venv/bin/python bench/guided.py --data DIR [--size 256] [--views 4] [--frames 8]
    python3 bench/guided.py --synthetic --device cuda   # bench/gpu.sh (speed only)

Then the guided shader's execution choices against its plain fp32 default, one frame
per call (``bench/execution_rows.py``).

``--synthetic``: no dataset; seeded blob sheets and UDPs of the size asked for (speed
only: the pictures mean nothing, the work per pixel is the same).
"""

import argparse
import platform
import subprocess
import time
from pathlib import Path

import torch
from execution_rows import HEADER, compare

from anirender.models.guided import load_guided
from anirender.models.train.conr_data import load_split
from anirender.models.weights import SHIPPED_CONR, load_conr


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synthetic_inputs(views: int, frames: int, size: int):
    """Seeded sheet views (an ellipse body with striped colours) with their UDPs, and
    target UDPs of the same body shifted and turned a little."""
    import numpy as np

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size] / (size - 1)

    def body(dx, turn):
        inside = ((xx - 0.5 - dx) / 0.22) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1
        udp = np.zeros((size, size, 4), np.float32)
        udp[..., 0] = np.clip(0.5 + (xx - 0.5 - dx) * np.cos(turn), 0, 1)
        udp[..., 1] = yy
        udp[..., 2] = np.clip(0.5 + (xx - 0.5 - dx) * np.sin(turn), 0, 1)
        udp[..., 3] = 1
        udp[~inside] = 0
        return udp, inside

    images, udps = [], []
    for v in range(views):
        udp, inside = body(0.0, v * 2 * np.pi / views)
        rgb = (
            np.stack([np.sin(9 * udp[..., 0]), np.cos(7 * udp[..., 1]), udp[..., 2]], -1) + 1
        ) / 2
        rgba = np.concatenate([rgb, inside[..., None]], -1)
        rgba[..., :3] += 0.03 * rng.standard_normal((size, size, 3))
        images.append((np.clip(rgba, 0, 1) * 255).astype(np.uint8))
        udps.append(udp)
    targets = [body(0.02 * f, 0.3 * f)[0] for f in range(frames)]
    return np.stack(images), np.stack(udps), np.stack(targets)


def best(repeats, paths):
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a dataset from anirender dataset conr")
    parser.add_argument("--synthetic", action="store_true", help="seeded inputs, no dataset")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.synthetic:
        images, udps, targets = synthetic_inputs(args.views, args.frames, args.size)
    elif args.data is None:
        parser.error("give --data DIR (a dataset from anirender dataset conr) or --synthetic")
    else:
        characters = load_split(args.data, "val", args.size)
        character = next(c for c in characters if len(c.images) >= args.views + args.frames)
        images, udps = character.images[: args.views], character.udps[: args.views]
        targets = character.udps[args.views : args.views + args.frames]

    guided = load_guided(device=args.device)
    start = time.perf_counter()
    sheet = guided.encode_sheet(images, udps)
    index_seconds = time.perf_counter() - start
    conr = load_conr(str(SHIPPED_CONR), device=args.device)
    encoding = conr.encode_sheet(images)
    step = conr.frames_per_chunk(encoding)

    def run_conr():
        for i in range(0, len(targets), step):
            conr.render(encoding, targets[i : i + step])

    paths = {"guided": lambda: guided.render(sheet, targets), "conr": run_conr}
    for fn in paths.values():  # warm-up
        fn()
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = best(args.repeats, paths)
    where = torch.cuda.get_device_name() if args.device == "cuda" else cpu_model()
    print(
        f"# guided vs CoNR, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {where}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, "
        f"{args.views} views, {len(targets)} frames per call, best of {args.repeats}"
    )
    print("| shader | frames/s | s/frame | vs CoNR |")
    print("|---|---|---|---|")
    for name in ("guided", "conr"):
        fps = len(targets) / seconds[name]
        ratio = seconds["conr"] / seconds[name]
        print(f"| {name} | {fps:.2f} | {seconds[name] / len(targets):.3f} | {ratio:.2f}x |")
    print(f"sheet index (once per sheet, guided): {index_seconds:.3f} s")
    print(f"\n## guided shader execution choices ({len(targets)} frames per call)")
    print("\n".join(HEADER))

    def make(request):
        shader = load_guided(device=args.device)
        shader.request = request
        return shader

    rows = compare(make, lambda s: s.render(sheet, targets), len(targets), args.repeats)
    print("\n".join(rows))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"load average during the run: {' '.join(load)}")


if __name__ == "__main__":
    main()
