"""Where the shader runtime lives and whether it is ready.

Installed as an extension, the runtime is in the extension's user folder
(``bpy.utils.extension_path_user``), which survives extension updates and is removed
with the extension's user data. Run from a source checkout (scripts, tests) it is in
Blender's user scripts folder instead. Layout::

    <folder>/runtime/            the finished environment (a venv)
    <folder>/runtime/anirender-runtime.json   what was installed, from which source
    <folder>/runtime.partial/    an environment being built; never used
    <folder>/runtime-setup.log   pip's output of the last setup
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bpy

# "anirender" from source, "bl_ext.<repo>.anirender" when installed as an extension
ADDON_ID = __package__.rsplit(".", 2)[0]
MARKER = "anirender-runtime.json"


def user_folder() -> Path:
    if ADDON_ID.startswith("bl_ext."):
        return Path(bpy.utils.extension_path_user(ADDON_ID, create=True))
    return Path(bpy.utils.user_resource("SCRIPTS", path="anirender_user", create=True))


def runtime_dir() -> Path:
    return user_folder() / "runtime"


def log_path() -> Path:
    return user_folder() / "runtime-setup.log"


def python_in(env: Path) -> Path:
    if sys.platform == "win32":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def runtime_info() -> dict | None:
    """What the finished runtime holds, or None when there is none."""
    marker = runtime_dir() / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info if python_in(runtime_dir()).is_file() else None


def runtime_python() -> str:
    """The runtime's interpreter, or "" when no finished runtime exists."""
    return str(python_in(runtime_dir())) if runtime_info() is not None else ""


def service_python(chosen: str) -> str:
    """The interpreter the Local Service starts: the one chosen by hand, else the
    runtime's, else Blender's own (which has no torch: the service then says so)."""
    chosen = (chosen or "").strip()
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    return runtime_python() or sys.executable
