"""CoNR: the neural shader that paints a character from its sheet into a UDP pose.

``config`` (constants, ``CoNRConfig``), ``encoders`` (the ResNet U-Nets), ``cinn`` (the
shader and RGBA decoder), ``model`` (``CoNR``: loading, the numpy API, the training
forward) and ``checkpoints`` (the released ``.pth`` files, this project's safetensors).
"""

from .config import CoNRConfig
from .model import CoNR, SheetEncoding, randomize_weights

__all__ = ["CoNR", "CoNRConfig", "SheetEncoding", "randomize_weights"]
