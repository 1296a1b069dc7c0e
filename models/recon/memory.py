"""How much memory a volume costs, and a clear refusal (with the ``--downsample`` factor
that fits) before reading one that would not fit."""

from __future__ import annotations

import math
import os

from ...errors import AniRenderError


def estimate_volume_bytes(shape, downsample=1) -> int:
    """Peak memory to mesh a float volume: the float32 grid, the marching-cubes work and
    the surface it returns (measured in bench/recon.py: about 1.5x the grid)."""
    voxels = 1
    for n in shape:
        voxels *= max(1, math.ceil(n / downsample))
    return int(voxels * 4 * 2.5)


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_memory(name, shape, downsample, memory_limit=None):
    limit = memory_limit if memory_limit is not None else available_memory_bytes()
    need = estimate_volume_bytes(shape, downsample)
    if need > limit:
        factor = downsample
        while estimate_volume_bytes(shape, factor) > limit and factor < 64:
            factor *= 2
        raise AniRenderError(
            f"{name}: a {'x'.join(map(str, shape))} volume needs about {need / 2**30:.1f} GiB "
            f"to mesh, but only {limit / 2**30:.1f} GiB is free. Set Downsample to {factor} "
            f"(CLI: --downsample {factor}) to mesh every {factor}th voxel."
        )


def _downsampled(volume, factor):
    if factor <= 1:
        return volume
    return volume[::factor, ::factor, ::factor]
