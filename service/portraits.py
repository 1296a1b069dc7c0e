"""Portraits for head reenactment: uploaded once, prepared once, reenacted in batches.

A ``PortraitLibrary`` owns one reenactment model (``models.reenact``, the shipped small
weights unless told otherwise), loaded on first use, and one worker thread that runs
every model call, as the ``ShadingQueue`` does for CoNR: HTTP handlers (and the
in-process client) wait on futures and never run torch themselves. Portraits are kept by
content id (``protocol.portrait_id``), least recently used dropped first, each with its
source tensors at the model's size, so a slider drag costs only the pose passes.

Answers are premultiplied float32 RGBA at the portrait's own size, like the shader's.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import AniRenderError
from . import protocol
from .store import LruStore


class UnknownPortrait(AniRenderError):
    """The portrait id is not (or no longer) cached: upload the portrait again."""


@dataclass
class Portrait:
    portrait_id: str
    width: int
    height: int
    source: object  # (rgb, alpha) tensors at the model's size


class PortraitLibrary:
    def __init__(
        self, weights=None, device: str = "cpu", max_portraits: int = 16, max_batch: int = 8
    ):
        self.weights = str(weights) if weights else None
        self.device = device
        self.max_portraits = max_portraits
        self.max_batch = max(1, int(max_batch))
        self._model = None
        self._portraits: LruStore[Portrait] = LruStore(max_portraits)
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="anirender-reenact")
        self.stats = {"portraits_encoded": 0, "poses_reenacted": 0, "batches": 0}

    @property
    def weights_name(self) -> str:
        from pathlib import PurePath

        return PurePath(self.weights).name if self.weights else "reenact_256 (shipped)"

    def load(self):
        """The model (loaded now if it was not yet); AniRenderError when the file is bad."""
        return self._worker.submit(self._loaded_model).result()

    # portraits --------------------------------------------------------------------------
    def portrait(self, portrait_id: str) -> Portrait:
        with self._lock:
            portrait = self._portraits.get(portrait_id)
            if portrait is None:
                raise UnknownPortrait(
                    f"Unknown portrait '{portrait_id}'; the service may have restarted. "
                    "Upload the portrait again."
                )
            return portrait

    def portraits(self) -> list[Portrait]:
        with self._lock:
            return list(self._portraits.values())

    def forget(self, portrait_id: str) -> None:
        with self._lock:
            if self._portraits.pop(portrait_id) is None:
                raise UnknownPortrait(f"Unknown portrait '{portrait_id}'.")

    def add(self, image: np.ndarray) -> Future:
        """Prepare (once) and cache a checked uint8 (H, W, 4) portrait; the future gives
        ``(Portrait, was_cached)``."""
        key = protocol.portrait_id(image)
        cached = self._portraits.get(key)
        if cached is not None:
            future: Future = Future()
            future.set_result((cached, True))
            return future
        return self._worker.submit(self._prepare, key, image)

    def reenact(self, portrait_id: str, poses: np.ndarray, mirror_average: bool = False) -> Future:
        """Checked float32 (N, 20) poses -> future of premultiplied float32 (N, H, W, 4);
        ``mirror_average``: two passes, the face and its mirror image averaged."""
        portrait = self.portrait(portrait_id)
        return self._worker.submit(self._reenact, portrait, poses, mirror_average)

    def stop(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    # the worker thread ------------------------------------------------------------------
    def _loaded_model(self):
        if self._model is None:
            # torch: loaded only when this runs, never at import
            from ..models.reenact import load_reenact

            self._model = load_reenact(self.weights, device=self.device)
        return self._model

    def _prepare(self, key: str, image: np.ndarray):
        # torch: loaded only when this runs, never at import
        from ..models.reenact import rgba_to_tensor

        model = self._loaded_model()
        rgb, alpha = rgba_to_tensor(image, model.cfg.image_size)
        portrait = Portrait(key, image.shape[1], image.shape[0], (rgb, alpha))
        self._portraits.put(key, portrait)
        with self._lock:
            self.stats["portraits_encoded"] += 1
        return portrait, False

    def _reenact(self, portrait: Portrait, poses: np.ndarray, mirror_average=False) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        # torch: loaded only when this runs, never at import
        from ..models.reenact import reenacted

        model = self._loaded_model()
        rgb, alpha = (t.to(self.device) for t in portrait.source)
        size = (portrait.height, portrait.width)
        out = np.empty((len(poses), *size, 4), np.float32)
        with torch.inference_mode():
            for start in range(0, len(poses), self.max_batch):
                pose = torch.from_numpy(poses[start : start + self.max_batch]).to(self.device)
                n = len(pose)
                image, cover = reenacted(model, rgb, alpha, pose, mirror_average)
                colour = (image.clamp(-1, 1) + 1) / 2
                if tuple(colour.shape[-2:]) != size:
                    colour = F.interpolate(colour, size=size, mode="bilinear", align_corners=False)
                    cover = F.interpolate(cover, size=size, mode="bilinear", align_corners=False)
                cover = cover.clamp(0, 1)
                rgba = torch.cat([colour * cover, cover], 1).permute(0, 2, 3, 1)
                out[start : start + n] = rgba.float().cpu().numpy()
        with self._lock:
            self.stats["poses_reenacted"] += len(poses)
            self.stats["batches"] += -(-len(poses) // self.max_batch)
        return out
