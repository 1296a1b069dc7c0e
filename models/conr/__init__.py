"""CoNR: the neural shader that paints a character from its sheet into a UDP pose.

``config`` (constants, ``CoNRConfig``), ``encoders`` (the ResNet U-Nets), ``cinn`` (the
shader and RGBA decoder), ``model`` (``CoNR``: loading, the numpy API, the training
forward) and ``checkpoints`` (the released ``.pth`` files, this project's safetensors).

The networks are imported on first use (``models.conr.CoNR``), so ``models.conr.config``
(what Blender-side code reads) loads where torch is absent.
"""

from .config import CoNRConfig

__all__ = ["CoNR", "CoNRConfig", "SheetEncoding", "randomize_weights"]


def __getattr__(name):
    if name in {"CoNR", "SheetEncoding", "randomize_weights"}:
        from . import model  # torch: only when a network is asked for

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
