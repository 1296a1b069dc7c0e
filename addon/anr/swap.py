"""Swap a UV region of one ANR identity's texture into another from Blender.

The work is ``models.anr.swap_anr_file``, the function behind ``anirender anr swap``.
It needs torch: where this Python has it (the in-process service mode), it runs here;
otherwise it runs as ``anirender anr swap`` under the Local Service's Python, the one
interpreter the preferences name as having AniRender and torch. With neither, the artist
is told what to set.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ...errors import AniRenderError


def swap_anr_texture(
    settings: dict, model, out, target: int, source: int, box=None, mask=None
) -> str:
    """Write ``out``: the ANR ``model`` with ``source``'s texels in ``target``'s texture
    inside ``box`` (u0, v0, u1, v1) or the ``mask`` image. Returns a one-line summary."""
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise AniRenderError(
            f"No ANR model at '{model}'. Choose the anr.safetensors written by "
            "`anirender train anr`."
        )
    if mask and not Path(mask).is_file():
        raise AniRenderError(f"No UV mask image at '{mask}'.")
    if model.resolve() == out.resolve():
        raise AniRenderError("Write the swapped model to a new file; the original stays intact.")
    if importlib.util.find_spec("torch") is not None:
        # torch: where this Python has it (checked above)
        from ...models.anr import swap_anr_file

        return swap_anr_file(model, out, target, source, box=box, mask=mask)
    python = settings.get("python_path") or ""
    if settings.get("mode") != "LOCAL" or not python or not os.path.isfile(python):
        raise AniRenderError(
            f"Swapping ANR textures needs PyTorch, which Blender's Python ({sys.executable}) "
            "lacks. Choose Local Service in the AniRender preferences with a Python that has "
            "anirender and torch, or run `anirender anr swap` in that environment."
        )
    return _swap_with(python, model, out, target, source, box, mask)


def _swap_with(python, model, out, target, source, box, mask) -> str:
    command = [python, "-m", "anirender.cli", "anr", "swap", "--model", str(model)]
    command += ["--out", str(out), "--target", str(target), "--source", str(source)]
    if box is not None:
        command += ["--box", ",".join(f"{float(x):.9g}" for x in box)]
    if mask:
        command += ["--mask", str(mask)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AniRenderError(f"Cannot run `anirender anr swap` with {python}: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise AniRenderError(said[-1] if said else f"`anirender anr swap` failed with {python}.")
    return done.stdout.strip().splitlines()[-1]
