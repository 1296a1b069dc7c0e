"""Per-portrait tuning against the generic model, on held-out poses of unseen characters.

    .venv/bin/python bench/reenact_tuning.py --data out/data/mh_b [--characters 6]
        [--steps 100,300] [--batch 4] [--threads 2]

For each of the first ``--characters`` val characters of a ``dataset celeb --makehuman``
folder (characters the shipped model never saw): its frontal neutral render is the
portrait; ``PortraitTuner`` tunes the shipped model to it (the portrait alone, nothing
else of the character); every posed render of that character is a held-out pose.
Scores (L1 on [0, 1], PSNR, eyes / mouth crop L1 over the pairs where they move):

- ``generic``: the shipped model, one pass;
- ``generic_mirror``: the shipped model, mirror-averaged (two passes: the teacher);
- ``tuned_<steps>``: the tuned model, one pass, after each of ``--steps``;
- ``tuned_mirror``: the last tuned model, mirror-averaged.

Prints one JSON line per character, then the means over characters.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--characters", type=int, default=6)
    parser.add_argument("--steps", default="100,300", help="comma list of checkpoints")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO.parent))
    import torch
    from PIL import Image

    from anirender.models.reenact import load_reenact, mirror_averaged
    from anirender.models.train.reenact import PortraitTuner, evaluate, load_pairs, read_splits

    torch.set_num_threads(args.threads)
    checkpoints = sorted(int(s) for s in args.steps.split(","))

    class MirrorAveraged(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.cfg = model, model.cfg

        def forward(self, source, pose):
            image = mirror_averaged(self.model, source, pose)
            return {"fake_image": image, "warp_image": image}

    def scores(model, pairs):
        full = evaluate(model, pairs)["full"]
        return {"l1": full["l1"], "psnr": full["psnr"],
                "eyes": full["eyes"]["l1"], "mouth": full["mouth"]["l1"]}  # fmt: skip

    held_out = sorted(k for k, v in read_splits(args.data).items() if v == "val")
    rows = []
    print(json.dumps({"cpu": platform.processor() or platform.machine(),
                      "threads": args.threads, "batch": args.batch}))  # fmt: skip
    for name in held_out[: args.characters]:
        pairs, _, _ = load_pairs([args.data], 256, 0, 0.0, use_splits=False, only={name})
        with Image.open(args.data / name / "frontal_toon" / "00000.png") as image:
            portrait = np.asarray(image.convert("RGBA"))
        generic = load_reenact()
        row = {"character": name, "pairs": len(pairs), "generic": scores(generic, pairs),
               "generic_mirror": scores(MirrorAveraged(generic), pairs)}  # fmt: skip
        tuner = PortraitTuner(load_reenact(), portrait, batch=args.batch)
        started = time.perf_counter()
        for steps in checkpoints:
            while tuner.steps < steps:
                tuner.step()
            row[f"tuned_{steps}"] = scores(tuner.model, pairs)
            row[f"seconds_{steps}"] = round(time.perf_counter() - started, 1)
        row["tuned_mirror"] = scores(MirrorAveraged(tuner.model), pairs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    means = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in rows[0][k]} for k in keys}
    print(json.dumps({"characters": len(rows), "mean": means}, indent=1))


if __name__ == "__main__":
    main()
