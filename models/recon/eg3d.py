"""EG3D's ``.mrc`` shape export: raw sigma, float32, indexed [x, y, z] and flipped along
axis 0, over a cube of side ``box_size`` (not stored in the file); surface at sigma 10."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import LEVEL_SIGMA, PortraitVolume, _check_finite_volume, _require
from .detect import EG3D_BOX, check_mrc_sizes
from .memory import _downsampled, check_memory


def read_eg3d_mrc(path, box_size=None, downsample=1, memory_limit=None) -> PortraitVolume:
    import mrcfile

    path = Path(path)
    check_mrc_sizes(path)
    try:
        with warnings.catch_warnings():  # permissive mode warns; we report below instead
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError, EOFError) as exc:
        raise AniRenderError(f"{path.name}: not a readable MRC volume ({exc}).") from None
    with mrc:
        data = mrc.data
        _require(
            data is not None and data.ndim == 3 and min(data.shape) >= 2,
            f"{path.name}: MRC data has shape {getattr(data, 'shape', None)}; expected a 3-D "
            "volume (the file may be truncated).",
        )
        expected = int(mrc.header.nx) * int(mrc.header.ny) * int(mrc.header.nz)
        _require(data.size == expected, f"{path.name}: MRC data is truncated.")
        check_memory(path.name, data.shape, downsample, memory_limit)
        sigma = np.array(_downsampled(data, downsample), dtype=np.float32)
    _check_finite_volume(path.name, sigma)
    box = EG3D_BOX if not box_size else float(box_size)
    n = np.array(data.shape)
    voxel = box / (n - 1) * downsample
    # axis 0 is stored flipped: index 0 is +box/2
    origin = np.array([box / 2, -box / 2, -box / 2])
    spacing = voxel * np.array([-1.0, 1.0, 1.0])
    return PortraitVolume(sigma, origin, spacing, LEVEL_SIGMA, "EG3D", box=(np.zeros(3), box))
