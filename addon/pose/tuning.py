"""Tune the reenactment model to one portrait, then preview with the tuned weights.

``portrait_tuning_job`` wraps ``models.train.reenact.PortraitTuner`` (self-supervised
pairs made from the portrait alone) in a ``Job`` of one optimiser step per main-thread
step, so the Tune operator runs modally (progress, Esc cancels). Nothing in the scene
changes until the last step: the weights are written to the add-on's cache
(``<cache>/tuned/<portrait hash>.safetensors``) and the character's
``MorphSettings.tuned_weights`` then points at them; the preview (live or Reenact Now)
and Render Pose Animation use them, in Blender's own Python, until the field is cleared.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import bpy
import numpy as np

from ...errors import AniRenderError
from ..characters.cache import cache_root
from ..core.jobs import Job
from ..core.settings import morph_settings
from .preview import restart_if_live

DEFAULT_STEPS = 150


def tuned_path(portrait: np.ndarray) -> Path:
    digest = hashlib.sha256(np.ascontiguousarray(portrait).tobytes()).hexdigest()[:16]
    return cache_root() / "tuned" / f"reenact-{digest}.safetensors"


def _torch_or_error():
    if importlib.util.find_spec("torch") is None:
        raise AniRenderError(
            "Tuning the reenactment model needs PyTorch in Blender's Python "
            "(or run `anirender train reenact --portrait IMAGE --out DIR` in a terminal)."
        )


def portrait_tuning_job(
    owner_name: str, portrait: np.ndarray, steps: int = DEFAULT_STEPS, out=None, seed: int = 0
) -> Job:
    """A Job tuning the shipped model to ``portrait``; its last step switches the preview."""
    _torch_or_error()
    # torch: loaded only when tuning is asked for
    from ...models.reenact import load_reenact, save_reenact
    from ...models.train.reenact import PortraitTuner

    if steps < 1:
        raise AniRenderError("Tune for at least one step.")
    out = Path(out) if out else tuned_path(portrait)
    tuner = PortraitTuner(load_reenact(), portrait, seed=seed)

    def run(job):
        before = tuner.objective()
        for i in range(steps):
            loss = tuner.step()
            yield f"step {i + 1}/{steps}, loss {loss:.4f}"
        after = tuner.objective()
        owner = bpy.data.objects.get(owner_name)
        if owner is None:
            raise AniRenderError(f'The character "{owner_name}" was deleted while tuning.')
        save_reenact(tuner.model.eval(), out, extra={"tuned_steps": steps})
        settings = morph_settings(owner)
        settings.tuned_weights = str(out)
        restart_if_live(owner)
        job.summary = (
            f"Tuned to the portrait in {steps} steps (objective {before:.4f} -> {after:.4f}); "
            f"the preview now uses {out.name}"
        )
        job.result = {"before": before, "after": after, "weights": str(out)}

    return Job("Tune Reenactment", run, steps)
