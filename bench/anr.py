"""ANR speed on the CPU: training steps per second and inference frames per second.

The default model (8-channel 256-texel texture pyramid of 4 levels, U-Nets of width 16
and depth 3, two identities) on 256 x 256 frames. Passes are synthetic (a character-sized
ellipse of UVs and normals over an empty background): the networks' cost does not depend
on what the passes show. A training step is one step of ``models.train.anr.train_step``
under each schedule (``joint``: texture and renderer every step; ``split``: texture-only
and renderer-only steps alternate, both timed); inference is ``ANR.render``.

Then the renderer's execution choices against its plain fp32 default, one frame per
call (``bench/execution_rows.py``).

    .venv/bin/python bench/anr.py [--size 256] [--batch 2] [--threads 1 2] [--steps 6]
"""

import argparse
import platform
import time

import numpy as np
import torch
from execution_rows import HEADER, compare

from anirender.models.anr import ANR
from anirender.models.train.anr import (
    SCHEDULES,
    IdentityFrames,
    Optimisers,
    TrainingSet,
    TrainSettings,
    train_step,
)


def synthetic_frames(count: int, size: int, seed: int = 0) -> IdentityFrames:
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size
    uv = np.zeros((count, size, size, 4), np.float32)
    normal = np.zeros_like(uv)
    target = np.zeros_like(uv)
    for i in range(count):
        cx = 0.5 + 0.05 * rng.standard_normal()
        inside = ((xx - cx) / 0.18) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1
        uv[i, ..., 0], uv[i, ..., 1], uv[i, ..., 3] = xx * inside, (1 - yy) * inside, inside
        nx = (xx - cx) / 0.18
        normal[i, ..., 0] = nx * inside
        normal[i, ..., 2] = np.sqrt(np.clip(1 - nx**2, 0, 1)) * inside
        normal[i, ..., 3] = inside
        target[i, ..., :3] = rng.random(3) * inside[..., None]
        target[i, ..., 3] = inside
    return IdentityFrames(f"synthetic{seed}", list(range(count)), uv, normal, target)


def bench(size: int, batch: int, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    identities = [synthetic_frames(8, size, seed) for seed in (0, 1)]
    data = TrainingSet(identities)
    out = {}
    for schedule in SCHEDULES:
        settings = TrainSettings(data=[], out=".", batch=batch, steps=10_000, schedule=schedule)
        model = ANR(settings.model_config([i.name for i in identities])).train()
        optimisers = Optimisers(model, settings)
        train_step(model, optimisers, data, settings, 0)  # warm-up (allocations)
        train_step(model, optimisers, data, settings, 1)
        start = time.perf_counter()
        for step in range(2, 2 + steps):
            train_step(model, optimisers, data, settings, step)
        out[f"{schedule}_steps_per_s"] = steps / (time.perf_counter() - start)
    model.eval()
    uv, normal = identities[0].uv, identities[0].normal
    for frames in (1, 4):
        model.render(uv[:frames], normal[:frames])
        repeats = max(2, steps // frames)
        start = time.perf_counter()
        for _ in range(repeats):
            model.render(uv[:frames], normal[:frames])
        out[f"inference_fps_batch{frames}"] = repeats * frames / (time.perf_counter() - start)
    out["parameters"] = sum(p.numel() for p in model.parameters())
    state = model.state_dict()

    def make(request):
        shader = ANR(model.config).eval()
        shader.load_state_dict(state)
        shader.request = request
        return shader

    out["executions"] = compare(make, lambda s: s.render(uv[:4], normal[:4]), 4, rounds=3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2, help="frames per training step")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.size} x {args.size}, training batch {args.batch}")  # fmt: skip
    for threads in args.threads:
        r = bench(args.size, args.batch, threads, args.steps)
        trained = ", ".join(f"{s} {r[s + '_steps_per_s']:.2f}" for s in SCHEDULES)
        print(
            f"threads {threads}: train steps/s {trained}, inference "
            f"{r['inference_fps_batch1']:.2f} fps (batch 1), "
            f"{r['inference_fps_batch4']:.2f} fps (batch 4); {r['parameters']:,} parameters"
        )
        print(f"execution choices, inference of 4 frames per call, {threads} threads:")
        print("\n".join(HEADER + r["executions"]))


if __name__ == "__main__":
    main()
