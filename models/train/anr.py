"""``anirender train anr``: learn a character's neural texture and ANR renderer.

Data: one folder per identity, as ``addon.anr.capture`` writes it: ``anr_data.json``,
``target/target_<frame>.png`` (straight RGBA), ``uv/uv_<frame>.npz`` and
``normal/normal_<frame>.npz`` (the coarse mesh's passes). Several folders train several
identities that share one renderer (one texture each).

Losses per batch: masked L1 on RGB (inside the true mask), L1 of R1's first three
channels where the coarse mesh and the true mask meet, BCE of the mask, total variation
of the premultiplied image and of the mask, and with ``--adversarial`` a small PatchGAN
(least-squares GAN, weight ``--adversarial-weight``). The paper's VGG feature loss needs
pretrained weights that cannot be had here (no torchvision, nothing downloadable that
ships them), so it is left out; ``feature_loss`` stays as the place to add it.

Schedule: by default every step trains the texture and the renderer together on frames
drawn from all training frames (``joint``). ``--schedule split`` is the paper's split
optimisation (ANR, section 3.3): keyframes, chosen greedily by how much new texture their
silhouettes cover, train only the texture; the other frames train only the renderer (the
texture sampled for them is detached); steps alternate. Measured on two outfits of the
MakeHuman walk (BENCHMARKS.md), split needs twice the steps for the same result, and at
the tests' budget it is what made identity 0 wear identity 1's shirt (``train_step``).

Checkpoints: ``anr.safetensors`` (the model, loadable by the service), the optimiser
moments in ``optimiser.safetensors`` and ``state.json``; batches come from generators
seeded by (seed, step), so ``--resume`` continues exactly where a run stopped.
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
from torch import nn

from ...errors import AniRenderError
from ..anr import ANR, ANRConfig, read_anr, save_anr

MODEL_FILE = "anr.safetensors"
OPTIMISER_FILE = "optimiser.safetensors"
STATE_FILE = "state.json"
LOG_FILE = "loss_log.jsonl"
DATA_FILE = "anr_data.json"


@dataclass
class TrainSettings:
    data: list  # one folder per identity
    out: Path
    steps: int = 3000
    batch: int = 2
    crop_width: int = 0  # train on crops this wide around the character (0: whole frame)
    lr_texture: float = 1e-2
    lr_renderer: float = 3e-3
    channels: int = 8
    texture_size: int = 256
    levels: int = 4
    features: int = 16
    width: int = 16
    depth: int = 3
    keyframes: int = 0  # 0: as many as add coverage (at most a quarter of the frames)
    hold_out: list = field(default_factory=list)  # frame numbers never trained on
    tv_weight: float = 0.01
    r1_weight: float = 1.0
    mask_weight: float = 1.0
    adversarial: bool = False
    adversarial_weight: float = 0.01
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    checkpoint_every: int = 100
    stop_at: int = 0  # pause after this step (checkpointed; --resume goes on), 0: run on
    schedule: str = "joint"  # "joint" or "split" (see train_step)

    def model_config(self, names) -> ANRConfig:
        return ANRConfig(
            identities=len(names), channels=self.channels, texture_size=self.texture_size,
            levels=self.levels, features=self.features, width=self.width, depth=self.depth,
            identity_names=tuple(names),
        )  # fmt: skip


# ---------------------------------------------------------------------------- data


@dataclass
class IdentityFrames:
    """All frames of one identity as arrays (N, H, W, C) float32."""

    name: str
    frames: list
    uv: np.ndarray
    normal: np.ndarray
    target: np.ndarray  # straight RGBA in [0, 1]


def read_identity(folder, hold_out=()) -> IdentityFrames:
    """Load an ``anr_capture`` folder (frames listed in ``hold_out`` left out)."""
    from PIL import Image

    folder = Path(folder)
    try:
        record = json.loads((folder / DATA_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise AniRenderError(
            f"{folder} is not ANR training data ({DATA_FILE}: {exc}). Capture it with "
            "Capture ANR Training Frames or Pair Images with Animation."
        ) from None
    frames = [int(f) for f in record["frames"] if int(f) not in set(hold_out)]
    if not frames:
        raise AniRenderError(f"{folder} holds no frames to train on.")
    uv, normal, target = [], [], []
    for frame in frames:
        uv.append(_npz(folder / "uv" / f"uv_{frame:04d}.npz"))
        normal.append(_npz(folder / "normal" / f"normal_{frame:04d}.npz"))
        path = folder / "target" / f"target_{frame:04d}.png"
        try:
            image = np.asarray(Image.open(path).convert("RGBA"), np.float32) / 255.0
        except OSError as exc:
            raise AniRenderError(f"Cannot read the target frame {path}: {exc}") from None
        if image.shape[:2] != uv[-1].shape[:2]:
            raise AniRenderError(
                f"{path} is {image.shape[1]} x {image.shape[0]} but its passes are "
                f"{uv[-1].shape[1]} x {uv[-1].shape[0]}; capture them at one size."
            )
        target.append(image)
    name = str(record.get("identity") or folder.name)
    return IdentityFrames(name, frames, np.stack(uv), np.stack(normal), np.stack(target))


def _npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["i"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise AniRenderError(f"Cannot read the pass {path}: {exc}") from None


def texel_coverage(uv: np.ndarray, texels: int = 64) -> np.ndarray:
    """(N, texels * texels) bool: which texture cells each frame's UV pass sees."""
    covered = np.zeros((len(uv), texels * texels), bool)
    for i, frame in enumerate(uv):
        seen = frame[..., 3] > 0.5
        u = np.clip((frame[..., 0][seen] * texels).astype(int), 0, texels - 1)
        v = np.clip(((1 - frame[..., 1][seen]) * texels).astype(int), 0, texels - 1)
        covered[i, v * texels + u] = True
    return covered


def choose_keyframes(uv: np.ndarray, count: int = 0, min_gain: float = 0.02) -> list[int]:
    """Indices of keyframes, chosen greedily: each adds the most texture not yet seen.

    Stops at ``count`` frames (0: a quarter of the frames, at least one) or when the
    next best frame adds less than ``min_gain`` of all the texture the frames see. Ties
    go to the earlier frame, so the choice is deterministic.
    """
    covered = texel_coverage(uv)
    limit = count or max(1, len(uv) // 4)
    union = covered.any(axis=0).sum()
    seen = np.zeros(covered.shape[1], bool)
    chosen: list[int] = []
    while len(chosen) < min(limit, len(uv)):
        gains = (covered & ~seen).sum(axis=1)
        gains[chosen] = -1
        best = int(np.argmax(gains))  # first maximum: the earliest frame
        if chosen and gains[best] < min_gain * union:
            break
        chosen.append(best)
        seen |= covered[best]
    return chosen


class TrainingSet:
    """Identities' frames as tensors, split into keyframes and renderer frames."""

    def __init__(self, identities: list[IdentityFrames], keyframes: int = 0):
        self.identities = identities
        self.keys, self.others = [], []  # (identity, index) pairs
        for i, ident in enumerate(identities):
            chosen = choose_keyframes(ident.uv, keyframes)
            self.keys += [(i, k) for k in chosen]
            rest = [(i, k) for k in range(len(ident.frames)) if k not in chosen]
            self.others += rest or [(i, k) for k in chosen]
        self.tensors = [
            {
                "uv": torch.from_numpy(ident.uv),
                "normal": torch.from_numpy(ident.normal),
                "target": torch.from_numpy(ident.target).permute(0, 3, 1, 2).contiguous(),
            }
            for ident in identities
        ]

    def keyframe_numbers(self) -> dict:
        out = {ident.name: [] for ident in self.identities}
        for i, k in self.keys:
            out[self.identities[i].name].append(self.identities[i].frames[k])
        return out

    def batch(self, pool, size: int, crop_width: int, rng: np.random.Generator) -> dict:
        picks = [pool[j] for j in rng.integers(0, len(pool), size)]
        parts = {"uv": [], "normal": [], "target": [], "identity": []}
        for i, k in picks:
            data = self.tensors[i]
            uv, normal, target = data["uv"][k], data["normal"][k], data["target"][k]
            if crop_width and crop_width < uv.shape[1]:
                left = _crop_left(self.identities[i].target[k], crop_width, rng)
                uv, normal = uv[:, left : left + crop_width], normal[:, left : left + crop_width]
                target = target[:, :, left : left + crop_width]
            parts["uv"].append(uv)
            parts["normal"].append(normal)
            parts["target"].append(target)
            parts["identity"].append(i)
        batch = {k: torch.stack(v) for k, v in parts.items() if k != "identity"}
        batch["identity"] = torch.tensor(parts["identity"], dtype=torch.long)
        return batch


def _crop_left(target: np.ndarray, width: int, rng) -> int:
    """A crop's first column: around the character's horizontal centre, jittered."""
    columns = np.nonzero(target[..., 3].max(axis=0) > 0.05)[0]
    centre = int(columns.mean()) if len(columns) else target.shape[1] // 2
    left = centre - width // 2 + int(rng.integers(-width // 8, width // 8 + 1))
    return int(np.clip(left, 0, target.shape[1] - width))


# -------------------------------------------------------------------------- losses


class PatchDiscriminator(nn.Module):
    """A small PatchGAN on premultiplied RGBA: one realism score per ~22-pixel patch."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width * 2, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width * 2, 1, 4, 1, 1),
        )

    def forward(self, rgba: torch.Tensor) -> torch.Tensor:
        return self.net(rgba)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (
        image[..., :, 1:] - image[..., :, :-1]
    ).abs().mean()


def feature_loss(predicted: torch.Tensor, target: torch.Tensor):
    """The paper's perceptual term; None here: no pretrained feature network is at hand."""
    return None


def compute_losses(out: dict, target: torch.Tensor, settings: TrainSettings) -> dict:
    """The supervised losses of one forward pass against straight RGBA ``target``."""
    rgb_t, alpha_t = target[:, :3], target[:, 3:4]
    area = alpha_t.sum().clamp(min=1.0)
    losses = {"l1": ((out["rgb"] - rgb_t).abs() * alpha_t).sum() / (3 * area)}
    seen = alpha_t * out["occupancy"]
    losses["r1"] = ((out["r1_rgb"] - rgb_t).abs() * seen).sum() / (3 * seen.sum().clamp(min=1.0))
    losses["mask"] = F.binary_cross_entropy_with_logits(out["mask_logit"], alpha_t)
    mask = torch.sigmoid(out["mask_logit"])
    losses["tv"] = total_variation(out["rgb"] * mask) + total_variation(mask)
    extra = feature_loss(out["rgb"] * mask, rgb_t * alpha_t)
    total = (
        losses["l1"]
        + settings.r1_weight * losses["r1"]
        + settings.mask_weight * losses["mask"]
        + settings.tv_weight * losses["tv"]
    )
    if extra is not None:
        losses["feature"] = extra
        total = total + extra
    losses["total"] = total
    return losses


# ---------------------------------------------------------------------- checkpoints


class Optimisers:
    """Adam for the texture, Adam for the renderer, Adam for the discriminator (if any)."""

    def __init__(self, model: ANR, settings: TrainSettings, discriminator=None):
        self.model, self.discriminator = model, discriminator
        renderer = [p for n, p in model.named_parameters() if not n.startswith("texture.")]
        self.texture = torch.optim.Adam(model.texture.parameters(), lr=settings.lr_texture)
        self.renderer = torch.optim.Adam(renderer, lr=settings.lr_renderer, betas=(0.5, 0.999))
        self.critic = (
            torch.optim.Adam(
                discriminator.parameters(), lr=settings.lr_renderer, betas=(0.5, 0.999)
            )
            if discriminator is not None
            else None
        )

    def _named(self):
        yield "texture", self.texture, dict(self.model.named_parameters())
        yield "renderer", self.renderer, dict(self.model.named_parameters())
        if self.critic is not None:
            yield "critic", self.critic, dict(self.discriminator.named_parameters())

    def tensors(self) -> dict:
        out = {}
        for label, optimiser, params in self._named():
            names = {id(p): n for n, p in params.items()}
            for group in optimiser.param_groups:
                for p in group["params"]:
                    for slot, value in optimiser.state.get(p, {}).items():
                        out[f"{label}/{names[id(p)]}::{slot}"] = (
                            torch.as_tensor(value).detach().cpu().contiguous()
                        )
        if self.discriminator is not None:
            for n, p in self.discriminator.state_dict().items():
                out[f"discriminator/{n}"] = p.detach().cpu().contiguous()
        return out

    def load(self, tensors: dict) -> None:
        optimisers = {label: (opt, params) for label, opt, params in self._named()}
        disc = {}
        for key, value in tensors.items():
            label, rest = key.split("/", 1)
            if label == "discriminator":
                disc[rest] = value
                continue
            if label not in optimisers:
                continue  # e.g. a critic saved by a run with --adversarial
            name, slot = rest.split("::")
            optimiser, params = optimisers[label]
            if name not in params:
                raise AniRenderError(f"The optimiser checkpoint names an unknown {name!r}.")
            param = params[name]
            optimiser.state[param][slot] = value.to(param.device) if slot != "step" else value
        if self.discriminator is not None and disc:
            self.discriminator.load_state_dict(disc)


def save_checkpoint(out: Path, model, optimisers: Optimisers, state: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_anr(model, out / MODEL_FILE, metadata={"step": state["step"]})
    partial = out / (OPTIMISER_FILE + ".partial")
    save_file(optimisers.tensors(), str(partial))
    os.replace(partial, out / OPTIMISER_FILE)
    partial = out / (STATE_FILE + ".partial")
    partial.write_text(json.dumps(state, indent=1))
    os.replace(partial, out / STATE_FILE)


def learning_rate(base: float, step: int, steps: int) -> float:
    """Cosine decay to a tenth over the run."""
    progress = min(step / max(steps, 1), 1.0)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------ training


def train(settings: TrainSettings, resume: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume) training; returns the final state record."""
    from safetensors.torch import load_file

    out = settings.out = Path(settings.out)
    if not settings.data:
        raise AniRenderError("Give at least one ANR data folder (--data).")
    identities = [read_identity(folder, settings.hold_out) for folder in settings.data]
    sizes = {ident.uv.shape[1:3] for ident in identities}
    if len(sizes) > 1:
        raise AniRenderError(f"The data folders have different frame sizes {sorted(sizes)}.")
    data = TrainingSet(identities, settings.keyframes)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, settings.threads))
    torch.manual_seed(settings.seed)
    resuming = resume and (out / STATE_FILE).is_file()
    if resuming:
        model = read_anr(out / MODEL_FILE, settings.device).train()
        names = [ident.name for ident in identities]
        if list(model.config.names()) != names:
            raise AniRenderError(
                f"{out} trains identities {model.config.names()}, not {names}; "
                "give the same data folders to resume."
            )
        state = json.loads((out / STATE_FILE).read_text())
    else:
        model = ANR(settings.model_config([ident.name for ident in identities]))
        model.to(settings.device).train()
        state = {"step": 0, "seconds": 0.0}
    state["settings"] = _settings_record(settings)
    state["keyframes"] = data.keyframe_numbers()
    discriminator = PatchDiscriminator().to(settings.device) if settings.adversarial else None
    optimisers = Optimisers(model, settings, discriminator)
    if resuming:
        optimisers.load(load_file(str(out / OPTIMISER_FILE)))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, initial=state["step"], unit="step", desc="train anr")
    out.mkdir(parents=True, exist_ok=True)
    log = (out / LOG_FILE).open("a")
    started = time.perf_counter() - state.get("seconds", 0.0)
    try:
        last = min(settings.steps, settings.stop_at or settings.steps)
        while state["step"] < last:
            step = state["step"]
            losses = train_step(model, optimisers, data, settings, step)
            state["step"] = step + 1
            state["seconds"] = time.perf_counter() - started
            record = {"step": step + 1, **{k: round(float(v), 6) for k, v in losses.items()}}
            log.write(json.dumps(record) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['total']:.4f}", l1=f"{record['l1']:.4f}")
            if state["step"] % settings.checkpoint_every == 0 or state["step"] == last:
                log.flush()
                save_checkpoint(out, model, optimisers, state)
    finally:
        log.close()
        if bar is not None:
            bar.close()
        torch.set_num_threads(previous_threads)
    return state


SCHEDULES = ("joint", "split")


def train_step(model: ANR, optimisers: Optimisers, data: TrainingSet, settings, step) -> dict:
    """One step of the ``settings.schedule``:

    - ``joint`` (the default): every step draws from all training frames and updates the
      texture and the renderer together.
    - ``split`` (the paper's split optimisation): even steps train only the texture, on
      keyframes; odd steps only the renderer, on the other frames, with the texture
      detached. Kept to reproduce the comparison in BENCHMARKS.md.

    Why identities bled (issue 21, measured, BENCHMARKS.md): not the index mapping
    (trained long enough, each identity renders its own outfit, and rendering one
    identity on the other's poses follows the texture), not a renderer that ignores the
    texture (swapping identities changes the colours by 0.11-0.15 L1 inside the
    silhouette), not the keyframe restriction (texture steps on all frames were no
    better): the split schedule. It gives the texture and the renderer half the updates
    each, and the renderer spends its half fitting frames through a texture it cannot
    move, so at the tests' budget it still paints the identities' average look from the
    coarse geometry and the texture has had too few steps to pull each identity back.
    Split at 800 steps matches joint at 400; joint at 400 halves split-400's error.
    """
    if settings.schedule not in SCHEDULES:
        raise AniRenderError(
            f"Unknown ANR training schedule {settings.schedule!r}; use {' or '.join(SCHEDULES)}."
        )
    rng = np.random.default_rng([settings.seed, step])
    joint = settings.schedule == "joint"
    texture_step = joint or step % 2 == 0
    renderer_step = joint or not texture_step
    if joint:
        pool = data.keys + data.others
    else:
        pool = data.keys if texture_step else data.others
    batch = {k: v.to(settings.device) for k, v in data.batch(
        pool, settings.batch, settings.crop_width, rng).items()}  # fmt: skip
    for optimiser, base in ((optimisers.texture, settings.lr_texture),
                            (optimisers.renderer, settings.lr_renderer)):  # fmt: skip
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(base, step, settings.steps)
    renderer = [p for g in optimisers.renderer.param_groups for p in g["params"]]
    for p in renderer:  # texture-only steps need no renderer weight gradients
        p.requires_grad_(renderer_step)
    features = model.sample_texture(batch["uv"], batch["identity"])
    if not texture_step:
        features = features.detach()
    out = model(batch["uv"], batch["normal"], batch["identity"], texture_features=features)
    for p in renderer:
        p.requires_grad_(True)
    losses = compute_losses(out, batch["target"], settings)
    total = losses["total"]
    disc = optimisers.discriminator
    if disc is not None:
        fake = torch.cat([out["rgb"] * torch.sigmoid(out["mask_logit"]),
                          torch.sigmoid(out["mask_logit"])], dim=1)  # fmt: skip
        real = torch.cat(
            [batch["target"][:, :3] * batch["target"][:, 3:], batch["target"][:, 3:]], 1
        )
        if renderer_step:
            critic = ((disc(real) - 1) ** 2).mean() + (disc(fake.detach()) ** 2).mean()
            optimisers.critic.zero_grad(set_to_none=True)
            critic.backward()
            optimisers.critic.step()
            losses["critic"] = critic.detach()
        for p in disc.parameters():
            p.requires_grad_(False)
        losses["adversarial"] = ((disc(fake) - 1) ** 2).mean()
        for p in disc.parameters():
            p.requires_grad_(True)
        total = total + settings.adversarial_weight * losses["adversarial"]
    optimisers.texture.zero_grad(set_to_none=True)
    optimisers.renderer.zero_grad(set_to_none=True)
    total.backward()
    if renderer_step:
        torch.nn.utils.clip_grad_norm_(renderer, 1.0)
        optimisers.renderer.step()
    if texture_step:
        optimisers.texture.step()
    losses["total"] = total
    return {k: v.detach() for k, v in losses.items()}


# ---------------------------------------------------------------------- evaluation


def nearest_uv_baseline(key_uv, key_target, uv) -> np.ndarray:
    """The non-neural baseline: each pixel the coarse mesh covers copies the colour of
    the keyframe pixel with the nearest UV. ``key_uv`` (K, H, W, 4), ``key_target`` (K,
    H, W, 4) straight RGBA, ``uv`` (H, W, 4). Returns premultiplied RGBA (H, W, 4)."""
    from scipy.spatial import cKDTree

    seen = key_uv[..., 3] > 0.5
    tree = cKDTree(key_uv[..., :2][seen])
    colours = key_target[seen]
    out = np.zeros(uv.shape[:2] + (4,), np.float32)
    covered = uv[..., 3] > 0.5
    if covered.any() and len(colours):
        _, nearest = tree.query(uv[..., :2][covered])
        picked = colours[nearest]
        out[covered] = np.concatenate([picked[:, :3] * picked[:, 3:], picked[:, 3:]], axis=1)
    return out


def premultiply(target: np.ndarray) -> np.ndarray:
    return np.concatenate([target[..., :3] * target[..., 3:], target[..., 3:]], axis=-1)


def psnr(predicted: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB) of premultiplied RGB (colour over black) in [0, 1]."""
    error = float(np.mean((predicted[..., :3] - truth[..., :3]) ** 2))
    return 10 * math.log10(1.0 / max(error, 1e-12))


def mask_iou(predicted_alpha: np.ndarray, true_alpha: np.ndarray) -> float:
    a, b = predicted_alpha > 0.5, true_alpha > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def _settings_record(settings: TrainSettings) -> dict:
    record = asdict(settings)
    record["data"] = [str(d) for d in settings.data]
    record["out"] = str(settings.out)
    return record


# ----------------------------------------------------------------------------- CLI
