"""Train the UDP-guided shader on a dataset from ``anirender dataset conr``.

Each step draws ``characters`` characters; each gets a sheet of ``views`` random samples
(images with their true UDPs) and ``targets`` other samples as targets, cropped to
``crop`` pixels around the character (the network is convolutional; crops make a CPU
step cheap). The loss is L1 of the result composited on white (what the metrics judge)
plus L1 of alpha. Adam, cosine learning rate. Draws are seeded by (seed, step). At the
end the model is scored on the validation characters against the copy and median-of-8
baselines (first ``views`` samples the sheet, the rest targets, full frames).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import AniRenderError
from ..evaluation import evaluate_shading, guided_shade_character
from ..guided import GuidedConfig, GuidedShader, find_candidates, guide_from_parts, index_sheet
from ..weights import sha256_file
from .conr_data import load_split, premultiplied_target

MODEL_FILE = "guided.safetensors"
STATE_FILE = "guided.json"


@dataclass
class TrainSettings:
    data: list  # dataset folders (``anirender dataset conr``)
    out: Path
    size: int = 256
    views: int = 4
    characters: int = 2  # characters per step
    targets: int = 4  # targets per character per step
    crop: int = 96
    steps: int = 600
    lr: float = 3e-3
    seed: int = 0
    threads: int = 0
    minutes: float = 0.0  # stop after this long, the learning rate annealed to it (0: no limit)
    config: dict = field(default_factory=lambda: asdict(GuidedConfig()))


def crop_part(part: dict, top: int, left: int, crop: int, width: int) -> dict:
    """One target's candidates cut to the window (top, left, crop, crop)."""
    ys, xs = np.divmod(part["pixels"], width)
    inside = (ys >= top) & (ys < top + crop) & (xs >= left) & (xs < left + crop)
    return {
        "dense": part["dense"][:, top : top + crop, left : left + crop],
        "pixels": (ys[inside] - top) * crop + (xs[inside] - left),
        "colours": part["colours"][inside],
        "features": part["features"][inside],
    }


def draw_step(characters, settings: TrainSettings, rng: np.random.Generator, k: int):
    parts, truths = [], []
    for _ in range(settings.characters):
        character = characters[rng.integers(len(characters))]
        count = len(character.images)
        need = settings.views + 1
        if count < need:
            raise AniRenderError(f"Character {character.id} has {count} samples; need {need}.")
        picks = rng.permutation(count)
        sheet_ids = picks[: settings.views]
        target_ids = picks[settings.views :][: settings.targets]
        sheet = index_sheet(character.images[sheet_ids], character.udps[sheet_ids])
        for t in target_ids:
            udp = character.udps[t]
            truth = premultiplied_target(character.images[t : t + 1])[0]
            h, w = udp.shape[:2]
            c = min(settings.crop, h)
            # centred on a random character pixel, so crops are rarely empty
            ys, xs = np.nonzero(udp[..., 3] > 0.5)
            pick = rng.integers(len(ys)) if len(ys) else 0
            cy, cx = (ys[pick], xs[pick]) if len(ys) else (h // 2, w // 2)
            top = int(np.clip(cy - c // 2, 0, h - c))
            left = int(np.clip(cx - c // 2, 0, w - c))
            part = find_candidates(sheet, udp, k, window=(top, left, c))
            parts.append(crop_part(part, top, left, c, w))
            truths.append(truth[:, top : top + c, left : left + c])
    plane = parts[0]["dense"].shape[1] * parts[0]["dense"].shape[2]
    return guide_from_parts(parts, plane), torch.stack(truths)


def over_white(rgba: torch.Tensor) -> torch.Tensor:
    return rgba[:, :3] + (1.0 - rgba[:, 3:4])


def train(settings: TrainSettings, log=print) -> dict:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    started = time.time()
    characters = [c for root in settings.data for c in load_split(root, "train", settings.size)]
    config = GuidedConfig(**settings.config)
    model = GuidedShader(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    losses = []
    done = 0
    for step in range(settings.steps):
        # cosine learning rate over the steps, or over the minutes when those end first
        progress = step / settings.steps
        if settings.minutes:
            progress = max(progress, (time.time() - started) / (settings.minutes * 60))
        if progress >= 1.0:
            log(f"stopping at step {step}: {settings.minutes} minutes are up")
            break
        for group in optimiser.param_groups:
            group["lr"] = settings.lr * 0.5 * (1.0 + np.cos(np.pi * progress))
        rng = np.random.default_rng([settings.seed, step])
        guide, truth = draw_step(characters, settings, rng, config.k)
        out = model(guide)
        loss = (over_white(out) - over_white(truth)).abs().mean() + 0.5 * (
            out[:, 3] - truth[:, 3]
        ).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if step % 25 == 0 or step == settings.steps - 1:
            log(f"step {step}: loss {np.mean(losses[-25:]):.4f} ({time.time() - started:.0f} s)")
    seconds = time.time() - started
    model.eval()
    settings.out.mkdir(parents=True, exist_ok=True)
    target = settings.out / MODEL_FILE
    model.save_safetensors(target, metadata={"steps": done, "seed": settings.seed})
    validation = None
    val = []
    for root in settings.data:
        try:
            val.extend(load_split(root, "val", settings.size))
        except AniRenderError:
            pass  # a folder of training characters only
    if val:
        validation = evaluate_shading(val, guided_shade_character(model), settings.views)
    state = {
        "settings": json.loads(json.dumps(asdict(settings), default=str)),
        "steps": done,
        "seconds": round(seconds, 1),
        "final_loss": float(np.mean(losses[-25:])),
        "validation": validation,
        "hardware": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads",
        "file": target.name,
        "sha256": sha256_file(target),
        "bytes": target.stat().st_size,
    }
    (settings.out / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    return state
