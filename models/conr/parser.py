"""The UDP-detector half of CoNR alone: ``udpparsernet`` without the shader.

Guessing the UDP of a drawn sheet view (or of a picture whose pose to take) needs only
the parser: this loads its weights, and nothing else, from the same files CoNR reads
(``udpparsernet.*`` of an AniRender CoNR safetensors file, or ``udpparsernet.pth`` of the
released folder), so the released model costs its 57 M parser parameters, not all 180 M.
``UDPParser.detect_udp`` answers what ``CoNR.detect_udp`` answers for the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import AniRenderError
from ..weights import resolve_weights
from .config import INPUT_MEAN, INPUT_STD, OFFICIAL_FILES, SAFETENSORS_FORMAT, CoNRConfig
from .encoders import udp_parser_net
from .model import pose_image_batch

PART = "udpparsernet"


class UDPParser(nn.Module):
    def __init__(self, config: CoNRConfig | None = None):
        super().__init__()
        self.config = config or CoNRConfig()
        self.udpparsernet = udp_parser_net(self.config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def load_part(self, state: dict, source: str) -> UDPParser:
        try:
            self.udpparsernet.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise AniRenderError(
                f"{source}: the UDP parser's weights do not fit ({first[:200]}); the file "
                "belongs to another model or width."
            ) from None
        return self

    def detect_udp(self, images: np.ndarray) -> np.ndarray:
        """UDP estimate (B, H, W, 4) from uint8 RGB or RGBA images (B, H, W, 3|4)."""
        x = pose_image_batch(images)
        with torch.inference_mode():
            x = ((x.to(self.device) - INPUT_MEAN) / INPUT_STD).contiguous(
                memory_format=torch.channels_last
            )
            net = self.udpparsernet
            udp = net.decode(net.features(x)).float().clamp(0, 1)
        return udp.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def load_udp_parser(name_or_path=None, device: str = "cpu", store=None) -> UDPParser:
    """The parser of the CoNR weights ``name_or_path`` names (as ``weights.load_conr``:
    none given, the imported official weights when present, else the shipped ones)."""
    path = resolve_weights(name_or_path, store=store)
    if path.is_dir():
        parser = UDPParser().load_part(_official_part(path), str(path))
    else:
        config, state = _safetensors_part(path)
        parser = UDPParser(config).load_part(state, str(path))
    try:
        # channels-last, as ``CoNR.prepare`` lays the convolutions out (the same sums)
        return parser.to(torch.device(device), memory_format=torch.channels_last).eval()
    except (RuntimeError, AssertionError) as exc:
        raise AniRenderError(f"Cannot use device '{device}': {exc}. Try --device cpu.") from None


def _official_part(folder: Path) -> dict:
    path = folder / OFFICIAL_FILES[PART]
    if not path.is_file():
        raise AniRenderError(f"{folder} lacks {path.name}, the released CoNR UDP parser.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a checkpoint, unsafe pickle content
        raise AniRenderError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}). Download it "
            "again."
        ) from exc
    if not isinstance(state, dict):
        raise AniRenderError(f"{path} does not hold a plain state dict of tensors.")
    if state and all(k.startswith("module.") for k in state):  # saved from DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _safetensors_part(path: Path):
    from safetensors import SafetensorError, safe_open

    prefix = f"{PART}."
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != SAFETENSORS_FORMAT:
                raise AniRenderError(
                    f"{path} is not a CoNR weights file (metadata format={meta.get('format')!r})."
                )
            state = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise AniRenderError(f"{path} is not a readable safetensors file ({exc}).") from exc
    try:
        config = CoNRConfig.from_json(meta.get("config", "{}"))
    except (TypeError, ValueError) as exc:
        raise AniRenderError(f"{path}: unreadable CoNR config in metadata ({exc}).") from exc
    return config, state
