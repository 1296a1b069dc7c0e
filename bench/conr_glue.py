"""Where a CoNR frame's time goes between the shader's blocks: torch glue against the C
loops (the ``native`` execution choice, ``models/conr/level_step.c`` and
``last_level.c``), alternated in one process.

For each way, the time from the end of block k to the start of block k + 1 (k = 0..4),
the time after block 5 (the last level and the RGBA decoder) and the whole frame; best of
``--rounds``. The torch figures leave out the concatenation, conversion and transpose of
the next block's inputs, which run inside that block's call; the C loops write those
inputs themselves. Same seeded full-size network and inputs as ``bench/conr.py``.

    .venv/bin/python bench/conr_glue.py [--precision bf16] [--size 256] [--views 4] [--rounds 5]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conr import cpu_model, sheet_images, udp_frames  # noqa: E402

from anirender.models.conr import cinn  # noqa: E402
from anirender.models.conr.model import CoNR, native_built, randomize_weights  # noqa: E402
from anirender.models.execution import Execution  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not native_built():
        sys.exit("The C loops are not built on this machine (no C compiler?): nothing to compare.")
    model = randomize_weights(CoNR(), seed=0, gain=0.85).prepare("cpu")
    sheet = model.encode_sheet(sheet_images(args.views, args.size))
    udp = udp_frames(1, args.size)
    marks = []
    forward = cinn.ShaderBlock.forward

    def timed(self, *a, **k):  # the blocks' calls, timed from outside
        marks.append(("start", time.perf_counter()))
        out = forward(self, *a, **k)
        marks.append(("end", time.perf_counter()))
        return out

    cinn.ShaderBlock.forward = timed
    ways = {
        name: Execution(precision=args.precision, native=on)
        for name, on in (("torch", False), ("C loops", True))
    }
    best = {name: [float("inf")] * 7 for name in ways}
    for round_ in range(args.rounds + 1):  # the first round warms up
        for name, execution in ways.items():
            model.set_execution(execution)
            marks.clear()
            start = time.perf_counter()
            model.render(sheet, udp)
            stop = time.perf_counter()
            ends = [t for kind, t in marks if kind == "end"]
            starts = [t for kind, t in marks if kind == "start"]
            glue = [starts[i + 1] - ends[i] for i in range(5)] + [stop - ends[5], stop - start]
            if round_:
                best[name] = [min(a, b) for a, b in zip(best[name], glue)]
    print(
        f"# CoNR glue, {args.size} px, {args.views} views, {args.precision}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
        f"{torch.get_num_threads()} threads, best of {args.rounds}"
    )
    print("| way | after block 0 | 1 | 2 | 3 | 4 | after block 5 + decoder | frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name, times in best.items():
        print(f"| {name} | " + " | ".join(f"{t * 1e3:.1f} ms" for t in times) + " |")


if __name__ == "__main__":
    main()
