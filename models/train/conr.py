"""``anirender train conr``: train a CoNR-architecture model with the paper's recipe.

Losses (CoNR section 4.1), all on the frames of one batch:

- photometric L1 between the rendered and the true premultiplied RGBA (weight 1),
- BCE between the rendered and the true alpha (weight 1),
- UDP L1 on the parser's XYZ estimate of each sheet image where the character is, plus
  BCE on its occupancy (weight 1),
- consistency: the spread (standard deviation) of the parser's UDP estimates for ``k``
  colour-jittered copies of the sheet images (weight 1, k = 2).

The paper's perceptual term (LPIPS, weight 0.05) needs a pretrained feature network
that cannot be downloaded here, so it is left out (weight 0).

Two guiding terms are ours, not the paper's. Our sheets come from rigs, so their true
UDPs say where each target pixel's surface point lies in every sheet view
(``conr_data.sheet_correspondence``). ``flow`` is the L1 distance, in fractions of the
image, between each shader level's sheet flow and that answer, where the view shows the
point; ``visibility`` is the BCE between each level's view weight and whether the view
shows it. They teach the warp directly instead of through flat toon colours, which a
few CPU-hours of photometric loss alone did not manage; set their weights to 0 for the
paper's recipe. With ``teach_steps`` the shader is also teacher-forced early on: it
warps by the true flows (``true_flow_steering``), less and less often. None of this
changes the architecture or inference. Optimiser: AdamW with
weight decay 1e-4. Checkpoints are safetensors (the model, the optimiser moments, and a
JSON record of the step and losses), written atomically; ``--resume`` continues exactly
where a run stopped, since every batch is drawn from a generator seeded by
(seed, step).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AniRenderError
from ..conr.config import CoNRConfig
from ..conr.model import CoNR, randomize_weights
from .conr_data import draw_batch, image_metrics, load_split, nearest_udp_baseline

MODEL_FILE = "conr.safetensors"
OPTIMISER_FILE = "optimiser.safetensors"
STATE_FILE = "state.json"
LOG_FILE = "loss_log.jsonl"


@dataclass
class TrainSettings:
    data: Path
    out: Path
    size: int = 128
    views: int = 4
    frames: int = 2  # examples per batch
    steps: int = 2000
    lr: float = 3e-4
    weight_decay: float = 1e-4
    width: float = 0.125
    shader_channels: int = 32
    flow_groups: int = 8
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; on a busy machine more threads only spin
    checkpoint_every: int = 100
    val_every: int = 500
    val_examples: int = 16
    weights: dict = field(
        default_factory=lambda: {
            "photo": 1.0,
            "mask": 1.0,
            "udp": 1.0,
            "consistency": 1.0,
            "perceptual": 0.0,
            "flow": 1.0,
            "visibility": 0.1,
        }
    )
    #: start from this model's weights (its shape wins over width/channels/groups)
    init: Path | None = None
    #: teacher forcing (our addition): steps over which the chance that the shader warps
    #: by the true flows falls from 1 to 0 (0: never)
    teach_steps: int = 0

    def model_config(self) -> CoNRConfig:
        return CoNRConfig(
            width=self.width, shader_channels=self.shader_channels, flow_groups=self.flow_groups
        )


def _bce(p, target):
    return F.binary_cross_entropy(p.clamp(1e-4, 1 - 1e-4), target)


def _jitter(sheet: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Colour-jittered copy of (N, 4, H, W) sheet images (premultiplied RGB stays inside A)."""
    n = sheet.shape[0]
    gain = 1.0 + (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.4
    rgb = (sheet[:, :3] * gain).clamp(0, 1) * (sheet[:, 3:4] > 0)
    return torch.cat([rgb, sheet[:, 3:4]], 1)


def compute_losses(
    model: CoNR, batch, settings: TrainSettings, generator, teach: bool = False
) -> dict:
    """The weighted losses of one batch; ``teach``: the shader warps by the true flows."""
    device = model.device
    sheet = batch.sheet.to(device)
    steer = true_flow_steering(batch, device) if teach else None
    out = model(sheet, batch.target_udp.to(device), steer_flow=steer)
    target = batch.target.to(device)
    rgba = out["rgba"]
    losses = {
        "photo": F.l1_loss(rgba, target),
        "mask": _bce(rgba[:, 3], target[:, 3]),
    }
    true_udp = batch.sheet_udp.to(device).flatten(0, 1)
    guess = out["sheet_udp"].flatten(0, 1)
    inside = true_udp[:, 3:4]
    xyz = (torch.abs(guess[:, :3] - true_udp[:, :3]) * inside).sum() / (inside.sum() * 3 + 1e-6)
    losses["udp"] = xyz + _bce(guess[:, 3], true_udp[:, 3])
    # consistency on the first view of each example (one extra parser pass per example)
    first = sheet[:, 0]
    _, jittered = model.parse_sheet(_jitter(first, generator).to(device)[:, :3], with_udp=True)
    losses["consistency"] = torch.stack([out["sheet_udp"][:, 0], jittered]).std(dim=0).mean()
    if settings.weights.get("flow", 0) or settings.weights.get("visibility", 0):
        losses["flow"], losses["visibility"] = warp_losses(out, batch, device)
    losses["total"] = sum(
        settings.weights[k] * v for k, v in losses.items() if k in settings.weights
    )
    return losses


def _level_flow(true_flow, seen, size: int):
    """True flow and seen fraction pooled to a shader level of ``size`` pixels."""
    factor = true_flow.shape[-1] // size
    seen_sum = F.avg_pool2d(seen, factor)
    flow = F.avg_pool2d(true_flow * seen, factor) / seen_sum.clamp(min=1e-6) / factor
    return flow, seen_sum


def true_flow_steering(batch, device):
    """Teacher forcing: each level hands on the true flow wherever the view shows the
    point (its own elsewhere), so the later levels and the decoder learn to paint from
    well-warped sheets long before the flows are learned."""
    true_flow = batch.flow.to(device).flatten(0, 1)
    seen = batch.seen.to(device).flatten(0, 1)

    def steer(level, flow):
        level_flow, seen_sum = _level_flow(true_flow, seen, flow.shape[-1])
        shown = (seen_sum > 0).float()
        return shown * level_flow + (1 - shown) * flow

    return steer


def teaching_probability(settings: TrainSettings, step: int) -> float:
    """Chance that a step is teacher-forced: 1 at the start, down to 0 at ``teach_steps``."""
    if settings.teach_steps <= 0:
        return 0.0
    return max(0.0, 1.0 - step / settings.teach_steps)


def warp_losses(out: dict, batch, device):
    """(flow, visibility) losses summed over the shader levels; see the module docstring."""
    true_flow = batch.flow.to(device).flatten(0, 1)
    seen = batch.seen.to(device).flatten(0, 1)
    views = batch.flow.shape[1]
    occupied = batch.target[:, 3:4].to(device).repeat_interleave(views, 0)
    full = true_flow.shape[-1]
    flow_loss = visibility_loss = 0.0
    for flow, logits in zip(out["flows"], out["mask_logits"], strict=True):
        size = flow.shape[-1]
        factor = full // size
        level_flow, seen_sum = _level_flow(true_flow, seen, size)
        level_seen = (seen_sum >= 0.5).float()
        error = (flow - level_flow).abs().sum(1, keepdim=True) / size
        flow_loss = flow_loss + (error * level_seen).sum() / (level_seen.sum() + 1.0)
        inside = (F.avg_pool2d(occupied, factor) > 0.5).float()
        bce = F.binary_cross_entropy_with_logits(logits, seen_sum, reduction="none")
        visibility_loss = visibility_loss + (bce * inside).sum() / (inside.sum() + 1.0)
    return flow_loss, visibility_loss


# ------------------------------------------------------------------------ checkpoints


def _optimiser_tensors(optimiser, model) -> dict:
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {}
    for group in optimiser.param_groups:
        for p in group["params"]:
            state = optimiser.state.get(p)
            if not state:
                continue
            name = names[id(p)]
            for key, value in state.items():
                tensors[f"{name}::{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors


def _load_optimiser(optimiser, model, tensors: dict) -> None:
    by_name = dict(model.named_parameters())
    for key, value in tensors.items():
        name, slot = key.split("::")
        if name not in by_name:
            raise AniRenderError(f"Optimiser checkpoint names an unknown parameter {name!r}.")
        param = by_name[name]
        optimiser.state[param][slot] = value.to(param.device) if slot != "step" else value


def save_checkpoint(out: Path, model, optimiser, state: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tmp_model, tmp_opt = out / (MODEL_FILE + ".tmp"), out / (OPTIMISER_FILE + ".tmp")
    model.save_safetensors(tmp_model, metadata={"step": str(state["step"])})
    save_file(_optimiser_tensors(optimiser, model), str(tmp_opt))
    tmp_state = out / (STATE_FILE + ".tmp")
    tmp_state.write_text(json.dumps(state, indent=1))
    os.replace(tmp_model, out / MODEL_FILE)
    os.replace(tmp_opt, out / OPTIMISER_FILE)
    os.replace(tmp_state, out / STATE_FILE)


def load_checkpoint(out: Path, settings: TrainSettings):
    from safetensors.torch import load_file

    state = json.loads((out / STATE_FILE).read_text())
    model = CoNR.from_safetensors(out / MODEL_FILE, device=settings.device)
    optimiser = make_optimiser(model, settings)
    _load_optimiser(optimiser, model, load_file(str(out / OPTIMISER_FILE)))
    return model, optimiser, state


def make_optimiser(model, settings: TrainSettings):
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def new_model(settings: TrainSettings) -> CoNR:
    if settings.init is not None:
        model = CoNR.from_safetensors(settings.init, device=settings.device)
        config = model.config
        settings.width, settings.shader_channels = config.width, config.shader_channels
        settings.flow_groups = config.flow_groups
        return model
    torch.manual_seed(settings.seed)
    model = CoNR(settings.model_config())
    randomize_weights(model, seed=settings.seed)
    return model.prepare(settings.device)


def learning_rate(settings: TrainSettings, step: int) -> float:
    """Short warm-up, then cosine decay to a tenth over ``steps``."""
    warm = min(1.0, (step + 1) / 50)
    progress = min(step / max(settings.steps, 1), 1.0)
    return settings.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------- training


def train(
    settings: TrainSettings,
    resume: bool = False,
    show_progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Run (or resume) training; returns the final state record.

    ``stop_after`` ends this run after that many steps (a checkpoint is written), as an
    interruption would; ``resume`` picks it up again.
    """
    settings.out = Path(settings.out)
    if settings.device == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    train_set = load_split(settings.data, "train", settings.size)
    val_set = load_split(settings.data, "val", settings.size)
    if resume and (settings.out / STATE_FILE).is_file():
        model, optimiser, state = load_checkpoint(settings.out, settings)
    else:
        model = new_model(settings)
        optimiser = make_optimiser(model, settings)
        state = {"step": 0, "settings": _settings_record(settings), "seconds": 0.0}
    model.train()
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, initial=state["step"], unit="step", desc="train conr")
    settings.out.mkdir(parents=True, exist_ok=True)
    log = (settings.out / LOG_FILE).open("a")
    started = time.perf_counter() - state.get("seconds", 0.0)
    try:
        until = (
            settings.steps
            if stop_after is None
            else min(settings.steps, state["step"] + stop_after)
        )
        while state["step"] < until:
            step = state["step"]
            rng = np.random.default_rng([settings.seed, step])
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
            batch = draw_batch(train_set, settings.frames, settings.views, rng)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(settings, step)
            teach = bool(rng.random() < teaching_probability(settings, step))
            losses = compute_losses(model, batch, settings, generator, teach=teach)
            optimiser.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            state["step"] = step + 1
            state["seconds"] = time.perf_counter() - started
            record = {
                "step": step + 1,
                **{k: round(float(v.detach()), 6) for k, v in losses.items()},
            }
            log.write(json.dumps(record) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['total']:.4f}", photo=f"{record['photo']:.4f}")
            done = state["step"] == settings.steps
            if settings.val_every and (state["step"] % settings.val_every == 0 or done):
                state["validation"] = validate(model, val_set, settings)
                log.write(
                    json.dumps({"step": state["step"], "validation": state["validation"]}) + "\n"
                )
                model.train()
            if state["step"] % settings.checkpoint_every == 0 or done or state["step"] == until:
                log.flush()
                save_checkpoint(settings.out, model, optimiser, state)
    finally:
        log.close()
        if bar is not None:
            bar.close()
    return state


def validation_batches(val_set, settings: TrainSettings):
    """The fixed validation draws (same for every run with the same seed)."""
    rng = np.random.default_rng([settings.seed, 999_999])
    return [draw_batch(val_set, 1, settings.views, rng) for _ in range(settings.val_examples)]


def validate(model: CoNR, val_set, settings: TrainSettings) -> dict:
    """Model vs the nearest-UDP baseline on held-out characters (L1, PSNR, SSIM)."""
    model.eval()
    predicted, baseline, truth = [], [], []
    with torch.inference_mode():
        for batch in validation_batches(val_set, settings):
            out = model(batch.sheet.to(model.device), batch.target_udp.to(model.device))
            predicted.append(out["rgba"][0].permute(1, 2, 0).float().cpu().numpy())
            truth.append(batch.target[0].permute(1, 2, 0).numpy())
            sheet_udp = batch.sheet_udp[0].permute(0, 2, 3, 1).numpy()
            target_udp = batch.target_udp[0].permute(1, 2, 0).numpy()
            baseline.append(nearest_udp_baseline(batch.sheet_images[0], sheet_udp, target_udp))
    truth = np.stack(truth)
    return {
        "model": image_metrics(np.stack(predicted), truth),
        "nearest_udp_baseline": image_metrics(np.stack(baseline), truth),
        "examples": len(truth),
    }


def _settings_record(settings: TrainSettings) -> dict:
    record = asdict(settings)
    record["data"], record["out"] = str(settings.data), str(settings.out)
    record["init"] = None if settings.init is None else str(settings.init)
    return record


# --------------------------------------------------------------------------------- CLI
