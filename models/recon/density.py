"""Density grids as ``.npy`` / ``.npz`` (with an optional ``<name>.json`` sidecar): the
array, its axis order and flips, its field kind (density, sigma or alpha) and box size
(see ``models.recon.detect`` for the conventions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import (
    LEVEL_ALPHA,
    LEVEL_DENSITY,
    LEVEL_SIGMA,
    PortraitVolume,
    _check_finite_volume,
    _require,
)
from .detect import EG3D_BOX, _read_head
from .memory import _downsampled, check_memory

_FIELD_LEVELS = {"density": LEVEL_DENSITY, "sigma": LEVEL_SIGMA, "alpha": LEVEL_ALPHA}


def read_sidecar(path: Path) -> dict:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise AniRenderError(f"{sidecar.name}: not valid JSON ({exc}).") from None
    _require(isinstance(meta, dict), f"{sidecar.name}: expected a JSON object.")
    return meta


def read_density_grid(path, downsample=1, memory_limit=None) -> PortraitVolume:
    path = Path(path)
    meta = read_sidecar(path)
    colors = None
    try:
        if path.suffix.lower() == ".npz" or _read_head(path, 2) == b"PK":
            with np.load(path, allow_pickle=False) as npz:
                _require("density" in npz.files, f"{path.name}: no 'density' array inside.")
                density = npz["density"]
                colors = npz["colors"] if "colors" in npz.files else None
        else:
            density = np.load(path, mmap_mode="r", allow_pickle=False)
    except AniRenderError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, zlib and format errors all mean "broken"
        raise AniRenderError(f"{path.name}: not a readable numpy grid ({exc}).") from None
    _require(
        density.ndim == 3 and min(density.shape) >= 2,
        f"{path.name}: density has shape {density.shape}; expected a 3-D grid like 256x256x256.",
    )
    _require(
        np.issubdtype(density.dtype, np.number),
        f"{path.name}: density has type {density.dtype}; expected numbers.",
    )
    check_memory(path.name, density.shape, downsample, memory_limit)

    axis_order = str(meta.get("axis_order", "xyz")).lower()
    _require(
        sorted(axis_order) == ["x", "y", "z"],
        f"{path.name}: sidecar axis_order {axis_order!r} must be a permutation of 'xyz'.",
    )
    flips = [str(a).lower() for a in meta.get("flip", [])]
    field_kind = str(meta.get("field", "density")).lower()
    _require(
        field_kind in _FIELD_LEVELS,
        f"{path.name}: sidecar field {field_kind!r}; use one of {sorted(_FIELD_LEVELS)}.",
    )
    level = float(meta.get("level", _FIELD_LEVELS[field_kind]))
    box = float(meta.get("box_size", EG3D_BOX))
    _require(box > 0, f"{path.name}: sidecar box_size must be positive.")

    _require(
        colors is None
        or (colors.ndim == 4 and colors.shape[3] == 3 and colors.shape[:3] == density.shape),
        f"{path.name}: colors has shape {getattr(colors, 'shape', None)}; expected "
        f"{density.shape + (3,)} to match the density grid.",
    )
    original_shape = density.shape
    density = np.array(_downsampled(density, downsample), dtype=np.float32)
    _check_finite_volume(path.name, density)
    perm = [axis_order.index(a) for a in "xyz"]  # world axis w is array axis perm[w]
    density = np.transpose(density, perm)
    if colors is not None:
        colors = np.transpose(_downsampled(colors, downsample), perm + [3]).astype(np.float32)
        colors = np.clip(np.nan_to_num(colors), 0.0, 1.0)
    full_shape = np.array(original_shape)[perm]
    spacing = box / (full_shape - 1) * downsample
    origin = np.full(3, -box / 2)
    for w, name in enumerate("xyz"):
        if name in flips:
            origin[w] = box / 2
            spacing[w] = -spacing[w]
    return PortraitVolume(
        density, origin, spacing, level, "density grid", colors=colors, box=(np.zeros(3), box)
    )
