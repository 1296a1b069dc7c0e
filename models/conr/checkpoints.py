"""CoNR weights on disk: the four released ``.pth`` files, and this project's single
safetensors file.

The released files are the only pickle-based files read, through
``torch.load(weights_only=True)``; the safetensors file holds all four sub-networks
(``<part>.<key>``) with the ``CoNRConfig`` in its metadata."""

from __future__ import annotations

from pathlib import Path

from ...errors import AniRenderError, quote_exception
from ..weight_files import read_weights, write_weights
from .config import OFFICIAL_FILES, SAFETENSORS_FORMAT, CoNRConfig


def read_official_checkpoints(folder) -> dict:
    """The four released ``.pth`` state dicts as ``{sub-network: state dict}``."""
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise AniRenderError(f"CoNR checkpoint folder not found: {folder}")
    missing = [f for f in OFFICIAL_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise AniRenderError(
            f"{folder} lacks {', '.join(missing)}; the released CoNR weights are four files: "
            f"{', '.join(OFFICIAL_FILES.values())}."
        )
    parts = {}
    for name, filename in OFFICIAL_FILES.items():
        path = folder / filename
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, not a checkpoint, unsafe pickle content
            raise AniRenderError(
                f"{path} is not a readable PyTorch checkpoint ({quote_exception(exc)}). "
                "Download it again."
            ) from exc
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise AniRenderError(f"{path} does not hold a plain state dict of tensors.")
        if state and all(k.startswith("module.") for k in state):  # saved from DDP
            state = {k[len("module.") :]: v for k, v in state.items()}
        parts[name] = state
    return parts


def read_conr_safetensors(path):
    """(CoNRConfig, {sub-network: state dict}) from a file written by ``save_safetensors``."""
    path = Path(path)
    meta, tensors = read_weights(path)
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise AniRenderError(
            f"{path} is not a CoNR weights file (metadata format={meta.get('format')!r})."
        )
    try:
        config = CoNRConfig.from_json(meta.get("config", "{}"))
    except (TypeError, ValueError) as exc:
        raise AniRenderError(f"{path}: unreadable CoNR config in metadata ({exc}).") from exc
    parts = {name: {} for name in OFFICIAL_FILES}
    for key, tensor in tensors.items():
        name, _, rest = key.partition(".")
        if name not in parts:
            raise AniRenderError(f"{path}: unexpected key '{key}'.")
        parts[name][rest] = tensor
    return config, parts


def write_conr_safetensors(model, path, metadata: dict | None = None) -> None:
    """Write all four sub-networks into one safetensors file (atomically)."""
    tensors = {}
    for name in OFFICIAL_FILES:
        for key, t in getattr(model, name).state_dict().items():
            tensors[f"{name}.{key}"] = t.detach().cpu().contiguous()
    meta = {"format": SAFETENSORS_FORMAT, "config": model.config.to_json()}
    write_weights(tensors, path, {**meta, **(metadata or {})})
