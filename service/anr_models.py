"""Uploaded ANR models, loaded once by content id, for the service and the in-process
client (torch: this module loads it)."""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from ..models.anr import ANR, check_passes, read_anr
from .store import LruStore


class AnrLibrary:
    """Loaded ANR models by content id (least recently used dropped first); one model
    call at a time. Used by the service and by the in-process client."""

    def __init__(self, device: str = "cpu", max_models: int = 8, max_bytes: int = 1 << 30):
        self.device = device
        self.max_models = max_models
        self._models: LruStore[ANR] = LruStore(
            max_models,
            max_bytes,  # weights in memory, all models together
            size_of=lambda model: sum(
                t.nelement() * t.element_size() for t in model.state_dict().values()
            ),
        )
        self._lock = threading.Lock()  # one model call at a time

    @staticmethod
    def model_id(weights: bytes) -> str:
        return hashlib.sha256(bytes(weights)).hexdigest()[:24]

    def add(self, weights: bytes) -> tuple[str, ANR, bool]:
        """(model id, model, was cached) for safetensors bytes."""
        key = self.model_id(weights)
        cached = self._models.get(key)
        if cached is not None:
            return key, cached, True
        model = read_anr(bytes(weights), self.device)
        self._models.put(key, model)
        return key, model, False

    def get(self, model_id: str) -> ANR:
        model = self._models.get(model_id)
        if model is None:
            raise KeyError(model_id)
        return model

    def describe(self, model_id: str) -> dict:
        model = self.get(model_id)
        return {"model_id": model_id, "identities": model.config.names()}

    def ids(self) -> list[str]:
        return self._models.keys()

    def render(self, model_id: str, identity: int, uv, normal) -> np.ndarray:
        uv, normal = check_passes(np.asarray(uv), np.asarray(normal))
        model = self.get(model_id)
        with self._lock:
            return model.render(uv, normal, int(identity)).astype(np.float32)
