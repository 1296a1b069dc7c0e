"""CoNR's constants and the shape of a network (``CoNRConfig``).

The released checkpoint layout (four files, one sub-network each), the input
normalisation of the reference, and the size rule: square sides that are a multiple of
128 (the shader halves the H/32 level twice); the weights were trained at 256."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ...errors import AniRenderError

#: the four released checkpoint files and the sub-network each one holds
OFFICIAL_FILES = {
    "udpparsernet": "udpparsernet.pth",
    "target_pose_encoder": "target_pose_encoder.pth",
    "shader": "shader.pth",
    "rgbadecodernet": "rgbadecodernet.pth",
}


#: normalisation of sheet images and UDPs before the encoders (official)
INPUT_MEAN = 0.6


INPUT_STD = 0.2970


#: sheet images whose mean alpha reaches this have no usable transparency (official)
OPAQUE_MEAN_ALPHA = 0.95


#: sides must be a multiple of this (the shader halves the H/32 level twice)
SIZE_MULTIPLE = 128


SAFETENSORS_FORMAT = "anirender-conr"


@dataclass(frozen=True)
class CoNRConfig:
    """Shape of a CoNR network. The default is the released model.

    ``width`` scales every encoder/decoder channel count (messages follow the parser
    features), ``shader_channels`` is the hidden width of each CINN block and
    ``flow_groups`` the number of flows that warp each message (2 channels per flow).
    """

    width: float = 1.0
    shader_channels: int = 224
    flow_groups: int = 16

    def channels(self, n: int) -> int:
        return max(1, int(round(n * self.width)))

    @property
    def resnet_planes(self) -> tuple[int, int, int, int]:
        return tuple(self.channels(n) for n in (64, 128, 256, 512))

    @property
    def decoder_filters(self) -> tuple[int, ...]:
        return tuple(self.channels(n) for n in (512, 384, 256, 128, 32))

    @property
    def parser_features(self) -> list[int]:
        """Parser feature channels, deepest (H/32) first."""
        p = self.resnet_planes
        return [4 * p[3], 4 * p[2], 4 * p[1], 4 * p[0], p[0]]

    @property
    def pose_features(self) -> list[int]:
        p = self.resnet_planes
        return [p[3], p[2], p[1], p[0], p[0]]

    @property
    def messages(self) -> list[int]:
        return [*self.parser_features, self.resnet_planes[0]]

    @property
    def local_messages(self) -> list[int]:
        return [*self.parser_features, 0]

    def validate(self) -> None:
        if self.width <= 0 or self.shader_channels < 1 or self.flow_groups < 1:
            raise AniRenderError(f"Invalid CoNR configuration {self}.")
        for n in self.messages:
            if n % self.flow_groups:
                raise AniRenderError(
                    f"CoNR configuration {self}: message width {n} is not divisible by "
                    f"flow_groups={self.flow_groups}; choose a width or flow_groups that divide."
                )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CoNRConfig:
        return cls(**json.loads(text))
