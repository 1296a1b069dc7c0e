"""The one exception type that carries a message meant for the artist.

Raise ``AniRenderError`` with what went wrong, with which object or file, and what to do.
Operators report it in Blender's status bar and the CLI prints it without a traceback;
anything else escaping is a bug.
"""


class AniRenderError(Exception):
    """An error the user can fix, worded for them."""
