"""Writing a weights file: safetensors, written beside its final name and moved into place,
so a crash or a full disk never leaves a half file where a model is looked for."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
