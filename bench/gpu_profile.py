"""Where a CoNR frame's time goes on a GPU, and what the cuDNN switches do to it.

For the official-size network (seeded weights) at ``--size`` px with ``--views`` sheet
views, two frames per call:

- the network alone (``_shade_frames_eager`` on tensors already on the GPU, CUDA events)
  and the whole ``CoNR.render`` call (numpy in, numpy out), for exact fp32, TF32 (torch's
  default for fp32 convolutions, which the project's fp32 turns off), fp16 and bf16, each
  with ``cudnn.benchmark`` off and on;
- max |difference| of each to the reference-style loop in exact fp32;
- the profiler's top kernels for the fp32 network;
- ``--guided``: the guided shader's render under cProfile (its correspondence search
  runs on the CPU).

    python3 bench/gpu_profile.py [--size 256] [--views 4] [--guided]   # bench/gpu.sh
"""

import argparse
import copy
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conr import sheet_images, udp_frames  # noqa: E402
from conr_reference import ReferenceCoNR  # noqa: E402

from anirender.models.conr.cinn import upsample2  # noqa: E402
from anirender.models.conr.config import OFFICIAL_FILES  # noqa: E402
from anirender.models.conr.model import CoNR, randomize_weights  # noqa: E402
from anirender.models.execution import Execution, gpu_numerics  # noqa: E402


def cuda_ms(fn, repeats=10):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def wall_ms(fn, repeats=10):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1000)
    return best


def set_switches(tf32: bool, benchmark: bool) -> None:
    """Outside the project's calls (which set TF32 themselves: ``gpu_numerics``)."""
    torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
    torch.backends.cudnn.benchmark = benchmark


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--guided", action="store_true")
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size} px, "
          f"{args.views} views, 2 frames per call")  # fmt: skip

    model = randomize_weights(CoNR(), seed=0, gain=0.85).prepare("cuda")
    parts = {n: getattr(model, n).state_dict() for n in OFFICIAL_FILES}
    set_switches(tf32=False, benchmark=False)
    reference = ReferenceCoNR(parts, device="cuda")
    sheet = sheet_images(args.views, args.size)
    udp = udp_frames(2, args.size)
    reference.set_sheet(sheet)
    exact = np.stack([reference.render_frame(u) for u in udp])
    # how close can two exact-fp32 runs of the same loop on two devices be?
    on_cpu = ReferenceCoNR({n: {k: v.cpu() for k, v in p.items()} for n, p in parts.items()})
    on_cpu.set_sheet(sheet)
    cpu_frames = np.stack([on_cpu.render_frame(u) for u in udp])
    gap = np.abs(cpu_frames - exact)
    print(
        f"reference loop, GPU (TF32 off) vs CPU: max diff {gap.max():.1e}, mean {gap.mean():.1e}, "
        f"{(gap > 1e-4).mean() * 100:.2f}% of values over 1e-4"
    )
    x = torch.randn(8, 64, 32, 32, device="cuda")
    plain = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear")
    print(f"upsample2 (channels-last kernel) vs NCHW kernel: max diff "
          f"{(upsample2(x) - plain).abs().max().item():.1e}")  # fmt: skip

    models = {"fp32": model}
    for precision in ("tf32", "fp16", "bf16"):
        models[precision] = copy.deepcopy(model)
    print("| precision | cudnn.benchmark | network ms | render ms per call | max diff |")
    print("|---|---|---|---|---|")
    for precision, net in models.items():
        execution = Execution(device="cuda", precision=precision, batch=2)
        net.set_execution(execution)
        encoding = net.encode_sheet(sheet)
        frames = torch.from_numpy(udp).permute(0, 3, 1, 2).cuda()
        for benchmark in (False, True):
            torch.backends.cudnn.benchmark = benchmark
            with torch.inference_mode(), gpu_numerics(execution):
                network = cuda_ms(lambda: net._shade_frames_eager(encoding, frames))  # noqa: B023
            got = net.render(encoding, udp)
            whole = wall_ms(lambda: net.render(encoding, udp))  # noqa: B023
            diff = np.abs(got - exact)
            print(
                f"| {precision} | {benchmark} | {network:.2f} | {whole:.2f} | "
                f"{diff.max():.1e} (mean {diff.mean():.1e}) |",
                flush=True,
            )

    torch.backends.cudnn.benchmark = True
    encoding = model.encode_sheet(sheet)
    frames = torch.from_numpy(udp).permute(0, 3, 1, 2).cuda()
    with torch.inference_mode(), gpu_numerics(model.execution):
        model._shade_frames_eager(encoding, frames)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            model._shade_frames_eager(encoding, frames)
            torch.cuda.synchronize()
    print("\n## top CUDA kernels, exact fp32 network (cudnn.benchmark on)")
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
    )

    if args.guided:
        from guided import synthetic_inputs

        from anirender.models.guided import load_guided

        images, udps, targets = synthetic_inputs(args.views, 8, args.size)
        guided = load_guided(device="cuda")
        index = guided.encode_sheet(images, udps)
        guided.render(index, targets)
        profile = cProfile.Profile()
        profile.enable()
        guided.render(index, targets)
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(18)
        print("\n## guided render, 8 frames, cProfile (cumulative)")
        print(text.getvalue())


if __name__ == "__main__":
    main()
