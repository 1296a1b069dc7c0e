"""CoNR: the neural shader that paints a character from its sheet into a UDP pose.

``config`` (constants, ``CoNRConfig``), ``encoders`` (the ResNet U-Nets), ``cinn`` (the
shader and RGBA decoder), ``model`` (``CoNR``: loading, the numpy API, the training
forward), ``parser`` (the UDP-detector half alone) and ``checkpoints`` (the released
``.pth`` files, this project's safetensors).

``CoNR``, ``SheetEncoding`` and ``randomize_weights`` are loaded on first use, so
reading ``config`` (as ``models.weights`` does, inside Blender) never imports torch.
"""

from .config import CoNRConfig

__all__ = ["CoNR", "CoNRConfig", "SheetEncoding", "randomize_weights"]


def __getattr__(name):
    if name in {"CoNR", "SheetEncoding", "randomize_weights"}:
        from . import model  # torch: only when the network itself is asked for

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
