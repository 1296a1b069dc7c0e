"""Weights files (safetensors): read with a clear error, written beside their final name and
moved into place, so a crash or a full disk never leaves a half file where a model is looked for."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import AniRenderError


def write_weights(tensors: dict, path, metadata: dict) -> Path:
    """Save ``tensors`` (name -> CPU tensor) with string ``metadata`` to ``path``, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in metadata.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_weights(path) -> tuple[dict, dict]:
    """(metadata, tensors) of a safetensors file; a clear error when it is missing or not
    a safetensors file at all (which model it must hold is the caller's check)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise AniRenderError(f"Weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise AniRenderError(f"{path} is not a readable safetensors file ({exc}).") from exc
    return meta, tensors
