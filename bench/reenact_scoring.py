"""Memory and time of reading a dataset's held-out pairs for scoring a reenactment model.

    .venv/bin/python bench/reenact_scoring.py --data out/data/mh_b [--rounds 2]

Contenders, each in a fresh process of its own (peak RSS is per process), alternated:

- ``full read`` (the baseline; how ``anirender eval reenact`` read data until 2026-12-04):
  ``load_pairs`` decodes every character, train and held out, and the train pairs are
  dropped;
- ``held-out only`` (``load_pairs(..., held_out_only=True)``, what scoring does now).

Both must give the same held-out pairs (checked by a digest of the tensors).
"""

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import hashlib, json, resource, sys, time
sys.path.insert(0, {parent!r})
from anirender.models.train.reenact import load_pairs
started = time.perf_counter()
_, pairs, _ = load_pairs([{data!r}], 256, 0, 0.0, held_out_only={held})
seconds = time.perf_counter() - started
digest = hashlib.sha256()
for t in (pairs.sources, pairs.targets, pairs.poses, pairs.source_index, pairs.boxes):
    digest.update(t.contiguous().numpy().tobytes())
print(json.dumps({{"seconds": seconds, "pairs": len(pairs.targets),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "digest": digest.hexdigest()[:16]}}))
"""


def run(data: Path, held: bool) -> dict:
    code = CHILD.format(parent=str(REPO.parent), data=str(data), held=held)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "data": str(args.data)}))
    results = {"full read": [], "held-out only": []}
    for _ in range(args.rounds):
        for name, held in (("full read", False), ("held-out only", True)):
            results[name].append(run(args.data.resolve(), held))
            print(json.dumps({"contender": name, **results[name][-1]}), flush=True)
    digests = {r["digest"] for rows in results.values() for r in rows}
    print("| contender | pairs | peak RSS | seconds | vs full read |")
    print("|---|---|---|---|---|")
    base = min(r["peak_rss_gb"] for r in results["full read"])
    base_s = min(r["seconds"] for r in results["full read"])
    for name, rows in results.items():
        rss, sec = min(r["peak_rss_gb"] for r in rows), min(r["seconds"] for r in rows)
        print(f"| {name} | {rows[0]['pairs']} | {rss:.2f} GB | {sec:.1f} | "
              f"{base / rss:.1f}x less memory, {base_s / sec:.1f}x faster |")  # fmt: skip
    print("same held-out pairs:", len(digests) == 1)


if __name__ == "__main__":
    main()
