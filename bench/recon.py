"""Portrait import cost vs a bare marching-cubes call on the same EG3D-style volume.

    .venv/bin/python bench/recon.py [--sizes 256 512]

For each size an EG3D ``.mrc`` of the test head (raw sigma, flipped in x, -1000 border) is
written once, then each contender runs in its own fresh process so peak RSS is its own:
- baseline: ``skimage.measure.marching_cubes(level=10)`` alone, on the volume already in
            memory as native float32 (timed: the call; memory: the array + the call)
- import:   ``models.recon.prepare_portrait`` from the file (read, finite/memory checks,
            marching cubes, largest piece, Blender frame, 25 cm sizing)
Reported: wall seconds, peak RSS above the interpreter's start, tracemalloc peak, and the
ratios import / baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def write_volume(path: Path, n: int):
    """The test head as an EG3D .mrc, written slice by slice (no n^3 float64 temporaries)."""
    import mrcfile
    from recon_head import head_sdf

    box = 1.0
    axis = np.linspace(-box / 2, box / 2, n)
    voxel = box / (n - 1)
    pad = int(30 * n / 256)
    yy, zz = np.meshgrid(axis, axis, indexing="ij")
    with mrcfile.new_mmap(path, shape=(n, n, n), mrc_mode=2, overwrite=True) as mrc:
        for i in range(n):
            x = axis[n - 1 - i]  # stored flipped along axis 0
            points = np.stack([np.full(yy.size, x), yy.ravel(), zz.ravel()], 1)
            sigma = 10 + np.clip(-head_sdf(points, box)[0] / voxel, -3, 3) * 10
            plane = sigma.reshape(n, n).astype(np.float32)
            if i < pad or i >= n - pad:
                plane[:] = -1000
            plane[:pad] = plane[-pad:] = -1000
            plane[:, :pad] = plane[:, -pad:] = -1000
            mrc.data[i] = plane


_CHILD = r"""
import json, sys, time, tracemalloc
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
path, kind = sys.argv[1], sys.argv[2]
import numpy, mrcfile, skimage.measure, scipy.ndimage, scipy.sparse.csgraph  # untimed imports
from anirender.models.recon import PortraitImportOptions, prepare_portrait
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) so imports do not count
start_rss = status("VmRSS:")
tracemalloc.start()
if kind == "baseline":
    with mrcfile.mmap(path, mode="r") as mrc:  # untimed: the array is already in memory
        volume = numpy.array(mrc.data, dtype=numpy.float32)
    t = time.perf_counter()
    verts, faces, _, _ = skimage.measure.marching_cubes(volume, level=10.0)
else:
    t = time.perf_counter()
    _, mesh = prepare_portrait(path, PortraitImportOptions(head_width_cm=25))
    verts, faces = mesh.verts, mesh.faces
seconds = time.perf_counter() - t
traced = tracemalloc.get_traced_memory()[1]
peak = status("VmHWM:")
print(json.dumps({"seconds": seconds, "rss_mb": peak - start_rss,
                  "traced_mb": traced / 2**20, "faces": int(len(faces))}))
"""


def measure(path: Path, kind: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), kind],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"head{n}.mrc"
            write_volume(path, n)
            base = measure(path, "baseline")
            full = measure(path, "import")
            rows.append((n, base, full))
            print(
                f"{n}^3: baseline {base['seconds']:.2f} s, {base['rss_mb']:.0f} MB RSS, "
                f"{base['traced_mb']:.0f} MB traced, {base['faces']} faces | import "
                f"{full['seconds']:.2f} s, {full['rss_mb']:.0f} MB RSS, "
                f"{full['traced_mb']:.0f} MB traced, {full['faces']} faces | ratio time "
                f"{full['seconds'] / base['seconds']:.2f}x, RSS "
                f"{full['rss_mb'] / max(base['rss_mb'], 1):.2f}x",
                flush=True,
            )
            path.unlink()
    return rows


if __name__ == "__main__":
    main()
