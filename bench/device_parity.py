"""fp32 parity on a GPU: which of the four runs of one CoNR frame stand apart?

The official-size network with the bench's seeded weights, ``--size`` px, ``--views``
views, two frames. Four exact-fp32 runs (TF32 off): the reference-style loop and the
project's batched path, each on the CPU and on the GPU; plus both on the GPU with TF32
allowed (torch's default for fp32 convolutions, the project's ``tf32``). Prints max and mean |difference| of every pair, so a gap can be placed: in
the network's numerics on the device (all GPU runs apart from all CPU runs) or in one
implementation.

    python3 bench/device_parity.py [--size 256] [--views 4]     # bench/gpu.sh
"""

import argparse
import copy
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conr import sheet_images, udp_frames  # noqa: E402
from conr_reference import ReferenceCoNR  # noqa: E402

from anirender.models.conr.config import OFFICIAL_FILES  # noqa: E402
from anirender.models.conr.model import CoNR, randomize_weights  # noqa: E402
from anirender.models.execution import Execution  # noqa: E402


def tf32(on: bool) -> None:
    """For the reference loop; the project's calls set TF32 themselves (gpu_numerics)."""
    torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    sheet = sheet_images(args.views, args.size)
    udp = udp_frames(2, args.size)
    cpu_model = randomize_weights(CoNR(), seed=0, gain=0.85).prepare("cpu")
    cpu_model.set_execution(Execution(device="cpu", batch=2))
    gpu_model = copy.deepcopy(cpu_model).prepare("cuda")
    gpu_model.set_execution(Execution(device="cuda", batch=2))
    parts = {n: getattr(cpu_model, n).state_dict() for n in OFFICIAL_FILES}
    runs = {}
    tf32(False)
    for device, model in (("cpu", cpu_model), ("cuda", gpu_model)):
        reference = ReferenceCoNR(
            {n: {k: v.to(device) for k, v in p.items()} for n, p in parts.items()}, device=device
        )
        reference.set_sheet(sheet)
        runs[f"reference {device}"] = np.stack([reference.render_frame(u) for u in udp])
        runs[f"project {device}"] = model.render(model.encode_sheet(sheet), udp)
    tf32(True)
    gpu_model.set_execution(Execution(device="cuda", batch=2, precision="tf32"))
    runs["project cuda, TF32"] = gpu_model.render(gpu_model.encode_sheet(sheet), udp)
    reference.set_sheet(sheet)  # the GPU one, its sheet now in TF32 too
    runs["reference cuda, TF32"] = np.stack([reference.render_frame(u) for u in udp])
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size} px, "
          f"{args.views} views, 2 frames, exact fp32 unless TF32 is named")  # fmt: skip
    print("| run | against | max diff | mean diff |")
    print("|---|---|---|---|")
    for a, b in itertools.combinations(runs, 2):
        gap = np.abs(runs[a] - runs[b])
        print(f"| {a} | {b} | {gap.max():.1e} | {gap.mean():.1e} |")


if __name__ == "__main__":
    main()
