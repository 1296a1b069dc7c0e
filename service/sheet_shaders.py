"""One shading road for every sheet: the guided shader when each view carries its UDP,
else the image-only CoNR.

``SheetShaders`` is the model the ``ShadingQueue`` drives: ``encode_sheet(images)`` (CoNR)
or ``encode_sheet(images, udps)`` (guided) answers a ``ShaderSheet`` that remembers which
shader encoded it, and ``render`` sends the frames to that one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ShaderSheet:
    shader: str  # "guided" or "conr"
    encoding: object


class SheetShaders:
    def __init__(self, conr, guided=None, load_guided=None):
        """``guided``: a ``GuidedShader``, or ``load_guided()`` makes one on first use."""
        self.conr = conr
        self._guided = guided
        self._load_guided = load_guided

    @property
    def guided(self):
        if self._guided is None:
            if self._load_guided is None:
                # torch: the guided shader is loaded with the first sheet that needs it
                from ..models.guided import load_guided

                self._load_guided = load_guided
            self._guided = self._load_guided()
        return self._guided

    def encode_sheet(self, images: np.ndarray, udps: np.ndarray | None = None) -> ShaderSheet:
        if udps is None:
            return ShaderSheet("conr", self.conr.encode_sheet(images))
        return ShaderSheet("guided", self.guided.encode_sheet(images, udps))

    def render(self, sheet: ShaderSheet, udp: np.ndarray) -> np.ndarray:
        model = self.guided if sheet.shader == "guided" else self.conr
        return model.render(sheet.encoding, udp)
