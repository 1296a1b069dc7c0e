"""``anirender eval shade``: a shader against the non-neural baselines on held-out data.

On a dataset from ``anirender dataset conr``, each character's first ``views`` samples are
its sheet (images with their true UDPs) and every other sample is a target: its UDP goes
in, its image is the truth. The shader, the copy baseline (each pixel takes the sheet
pixel of nearest UDP) and the median-of-8 blend are scored on the same examples: L1, PSNR
and SSIM over white (``models.metrics``).
"""

from __future__ import annotations

import numpy as np

from ..errors import AniRenderError
from .alpha import premultiplied
from .metrics import image_metrics
from .shade_baselines import median_udp_baseline, nearest_udp_baseline

SHADERS = ("guided", "conr")


def sheet_and_targets(character, views: int):
    """(sheet images, sheet UDPs, target images, target UDPs) of one character."""
    count = len(character.images)
    if count < views + 1:
        raise AniRenderError(
            f"Character {character.id} has {count} samples; a sheet of {views} views and at "
            f"least one target need {views + 1}."
        )
    return (
        character.images[:views],
        character.udps[:views],
        character.images[views:],
        character.udps[views:],
    )


def evaluate_shading(characters, shade_character, views: int = 4) -> dict:
    """Score ``shade_character(sheet_images, sheet_udps, target_udps) -> premultiplied
    (T, H, W, 4)`` and the baselines on every character's targets.

    Answers ``{"shader": metrics, "copy": metrics, "median8": metrics, "examples": N}``.
    """
    shaded, copied, median, truth = [], [], [], []
    for character in characters:
        images, udps, target_images, target_udps = sheet_and_targets(character, views)
        shaded.append(np.asarray(shade_character(images, udps, target_udps), np.float32))
        copied.extend(nearest_udp_baseline(images, udps, t) for t in target_udps)
        median.extend(median_udp_baseline(images, udps, t) for t in target_udps)
        truth.append(premultiplied(target_images))
    shaded, truth = np.concatenate(shaded), np.concatenate(truth)
    return {
        "shader": image_metrics(shaded, truth),
        "copy": image_metrics(np.stack(copied), truth),
        "median8": image_metrics(np.stack(median), truth),
        "examples": len(truth),
    }


def guided_shade_character(shader, batch: int = 4):
    """``shade_character`` for ``evaluate_shading`` with a ``GuidedShader``."""

    def shade(images, udps, target_udps):
        sheet = shader.encode_sheet(images, udps)
        return np.concatenate(
            [
                shader.render(sheet, target_udps[i : i + batch])
                for i in range(0, len(target_udps), batch)
            ]
        )

    return shade


def conr_shade_character(model):
    """``shade_character`` for ``evaluate_shading`` with image-only CoNR (sheet UDPs unused)."""

    def shade(images, udps, target_udps):
        encoding = model.encode_sheet(images)
        step = model.frames_per_chunk(encoding)
        return np.concatenate(
            [
                model.render(encoding, target_udps[i : i + step])
                for i in range(0, len(target_udps), step)
            ]
        )

    return shade
