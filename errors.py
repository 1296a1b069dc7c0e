"""The one exception type that carries a message meant for the artist.

Raise ``AniRenderError`` with what went wrong, with which object or file, and what to do.
Operators report it in Blender's status bar and the CLI prints it without a traceback;
anything else escaping is a bug.
"""


class AniRenderError(Exception):
    """An error the user can fix, worded for them."""


#: what torch.load(weights_only=True) says before the reason it refused a file
_TORCH_REFUSAL = "WeightsUnpickler error:"
#: said whenever torch's refusal is quoted (its own advice, to load with weights_only=False,
#: is left out: that runs whatever code the file holds)
TORCH_UNSAFE_WARNING = (
    "Loading it with weights_only=False would run any code the file holds; do that only "
    "for files from a source you trust."
)


def quote_exception(exc: BaseException, limit: int = 200) -> str:
    """One line for an artist from a library's exception: its type, and its message's
    first line shortened to ``limit`` characters at a word. An empty message (``EOFError``
    of an empty file) says so; torch's ``weights_only`` refusal is quoted by its reason,
    followed by ``TORCH_UNSAFE_WARNING`` instead of torch's advice."""
    text = str(exc).strip()
    name = type(exc).__name__
    if not text:
        if isinstance(exc, EOFError):
            return f"{name}: the file ends before any data (empty or cut short)"
        return name
    if _TORCH_REFUSAL in text:
        reason = text.split(_TORCH_REFUSAL, 1)[1].split("Check the documentation", 1)[0]
        reason = " ".join(reason.split()) or "no reason given"
        return f"weights_only=True refused it: {_shorten(reason, limit)}. {TORCH_UNSAFE_WARNING}"
    return f"{name}: {_shorten(text.splitlines()[0], limit)}"


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
