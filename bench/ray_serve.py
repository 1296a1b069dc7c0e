"""The shader service on Ray Serve against the plain uvicorn service, in one run.

Services, one after the other on this machine (never two at once), each started by the
real command and asked through the add-on's ``HttpClient``:

- ``plain``: ``anirender serve`` (uvicorn, one process), torch's default CPU threads and
  one thread (``OMP_NUM_THREADS=1``, what Ray gives a replica that reserves one CPU);
- ``ray xN``: ``anirender serve --ray --replicas N`` on a local Ray cluster that this
  script starts once (``ray.init(num_cpus=2)`` on 127.0.0.1);
- ``plain`` with one thread again at the end, to show how much the shared machine drifted.

Each row says the torch threads its service (or each replica) reported in ``/v1/info``.

For each: the *per-frame overhead* (one client, one frame per request, one after the
other: request time minus the model seconds the service reports in
``X-AniRender-Shading-Seconds``; median) and *frames per second* with ``--clients``
threads each sending one frame per request (as the render operator's workers do).

    .venv/bin/python bench/ray_serve.py [--size 256] [--views 4] [--frames 24] [--clients 4]
    [--weights NAME|PATH]   (default: the shipped CoNR)
    [--tiny]                (the tests' tiny seeded CoNR: model time ~0, the overhead shows)
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from service_support import (  # noqa: E402
    make_tiny_weights,
    running_service,
    sheet_images,
    udp_frames,
)

from anirender.addon.shading.clients import HttpClient  # noqa: E402
from anirender.models.weights import resolve_weights  # noqa: E402


def measure(url: str, images, udp, overhead_frames: int, clients: int) -> dict:
    client = HttpClient(url)
    threads = client.info()["torch_threads"]
    sheet_id = client.upload_sheet(images)
    for i in range(2 * clients):  # warm-up: every replica encodes the sheet, torch warms
        client.shade(sheet_id, udp[i % len(udp) : i % len(udp) + 1])
    overheads = []
    for i in range(overhead_frames):
        start = time.perf_counter()
        client.shade(sheet_id, udp[i : i + 1])
        overheads.append(time.perf_counter() - start - client.last_shading_seconds)

    def worker(frames):
        own = HttpClient(url)
        own._sheets[sheet_id] = images  # uploaded above; known again after a 404
        for i in frames:
            own.shade(sheet_id, udp[i : i + 1])

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [range(c, len(udp), clients) for c in range(clients)]))
    wall = time.perf_counter() - start
    return {
        "fps": len(udp) / wall,
        "overhead_ms": 1000 * statistics.median(overheads),
        "load": os.getloadavg()[0],
        "threads": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24, help="frames of the fps run")
    parser.add_argument("--overhead-frames", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny seeded CoNR")
    args = parser.parse_args()

    import tempfile

    import ray

    if args.tiny:
        folder = tempfile.mkdtemp(prefix="anirender-bench-")
        args.weights = make_tiny_weights(Path(folder) / "tiny-conr.safetensors")
    weights = resolve_weights(args.weights)
    images = sheet_images(args.views, args.size, seed=1)
    udp = udp_frames(max(args.frames, args.overhead_frames), args.size, seed=2)
    common = ("--weights", str(weights), "--max-request-mb", "64")
    rows = []

    def run(name, *extra, timeout=120, env=None):
        with running_service(weights, *common, *extra, timeout=timeout, env=env) as service:
            result = measure(service.url, images, udp, args.overhead_frames, args.clients)
        rows.append((name, result))
        print(name, result, flush=True)

    one_thread = {"OMP_NUM_THREADS": "1"}
    run("plain (uvicorn)")
    run("plain (uvicorn), 1 thread", env=one_thread)
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        address = ray.get_runtime_context().gcs_address
        for replicas in (1, 2):
            extra = ("--ray", "--address", address, "--replicas", str(replicas))
            run(f"Ray Serve x{replicas}", *extra, timeout=600)
    finally:
        ray.shutdown()
    run("plain, 1 thread, again", env=one_thread)

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "?"
    )
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {model}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, ray {ray.__version__}; weights {weights.name}, "
        f"{args.size} px, {args.views} views, {args.frames} frames, {args.clients} clients"
    )
    base = rows[1][1]  # plain with one thread: the replicas' own setting
    print("| service | torch threads | fps | vs plain | per-frame overhead | load avg |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['threads']} | {r['fps']:.2f} | {r['fps'] / base['fps']:.2f}x | "
            f"{r['overhead_ms']:.1f} ms | {r['load']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
