"""CoNR training data as written by ``anirender dataset conr``, and the metrics on it.

A training example is one character: ``views`` of its samples form the character sheet
(images, plus their true UDPs to supervise the parser) and one more sample is the target
(its UDP goes in, its image is what should come out). Draws are seeded by (seed, step),
so a resumed run sees exactly the examples an uninterrupted one would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import AniRenderError
from ..alpha import over_white, premultiply_official  # noqa: F401 - over_white: older callers
from ..framing import frame_sample  # noqa: F401 - re-exported for the trainers
from ..metrics import image_metrics  # noqa: F401
from ..shade_baselines import nearest_udp_baseline  # noqa: F401
from ..udp import quantise_udp_mask

MANIFEST = "manifest.json"


@dataclass
class CharacterSamples:
    id: str
    images: np.ndarray  # uint8 (N, H, W, 4) straight RGBA
    udps: np.ndarray  # float32 (N, H, W, 4)


def load_split(root, split: str, size: int | None = None) -> list[CharacterSamples]:
    """Every character of ``split`` ("train" or "val") with its samples in memory."""
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise AniRenderError(
            f"{root} is not a CoNR dataset (no {MANIFEST}); make one with "
            "`anirender dataset conr --out DIR`."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise AniRenderError(f"{manifest_path} is not valid JSON ({exc}).") from None
    characters = []
    for entry in manifest.get("characters", []):
        if entry.get("split") != split:
            continue
        images, udps = [], []
        for sample in entry["samples"]:
            image = np.asarray(Image.open(root / sample["image"]).convert("RGBA"))
            with np.load(root / sample["udp"], allow_pickle=False) as npz:
                udp = npz["i"].astype(np.float32)
            if image.shape[:2] != udp.shape[:2]:
                raise AniRenderError(
                    f"{sample['image']} and {sample['udp']} differ in size; regenerate the dataset."
                )
            image, udp = frame_sample(image, udp, size or image.shape[0])
            images.append(image)
            udps.append(udp)
        characters.append(CharacterSamples(entry["id"], np.stack(images), np.stack(udps)))
    if not characters:
        raise AniRenderError(f"The dataset in {root} has no '{split}' characters.")
    return characters


def sheet_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (V, H, W, 4) straight RGBA -> (V, 4, H, W) as CoNR loads sheets."""
    rgb = premultiply_official(images)[..., :3]
    stacked = np.concatenate([rgb, images[..., 3:4]], axis=-1)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255.0


def premultiplied_target(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 4) straight RGBA -> (N, 4, H, W) premultiplied float."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return torch.cat([x[:, :3] * x[:, 3:4], x[:, 3:4]], 1)


def udp_tensor(udps: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(quantise_udp_mask(udps)).permute(0, 3, 1, 2).contiguous()


@dataclass
class Batch:
    sheet: torch.Tensor  # (F, V, 4, H, W)
    sheet_udp: torch.Tensor  # (F, V, 4, H, W) true UDPs of the sheet images
    target_udp: torch.Tensor  # (F, 4, H, W)
    target: torch.Tensor  # (F, 4, H, W) premultiplied RGBA
    sheet_images: np.ndarray  # uint8 (F, V, H, W, 4)
    target_images: np.ndarray  # uint8 (F, H, W, 4)
    flow: torch.Tensor  # (F, V, 2, H, W) where each target pixel is in each view, pixels
    seen: torch.Tensor  # (F, V, 1, H, W) 1 where that view shows the target pixel's point


def draw_batch(characters, frames: int, views: int, rng: np.random.Generator) -> Batch:
    """``frames`` examples, each from one character: ``views`` sheet samples + a target."""
    sheets, sheet_udps, target_udps, targets = [], [], [], []
    for _ in range(frames):
        character = characters[rng.integers(len(characters))]
        count = len(character.images)
        if count < views + 1:
            raise AniRenderError(
                f"Character {character.id} has {count} samples; {views} views need {views + 1}."
            )
        picks = rng.choice(count, size=views + 1, replace=False)
        sheets.append(character.images[picks[:views]])
        sheet_udps.append(character.udps[picks[:views]])
        target_udps.append(character.udps[picks[views]])
        targets.append(character.images[picks[views]])
    sheet_images = np.stack(sheets)
    target_images = np.stack(targets)
    flows, seen = zip(*(sheet_correspondence(s, t) for s, t in zip(sheet_udps, target_udps)))
    return Batch(
        sheet=torch.stack([sheet_tensor(s) for s in sheet_images]),
        sheet_udp=torch.stack([udp_tensor(u) for u in sheet_udps]),
        target_udp=udp_tensor(np.stack(target_udps)),
        target=premultiplied_target(target_images),
        sheet_images=sheet_images,
        target_images=target_images,
        flow=torch.from_numpy(np.stack(flows)),
        seen=torch.from_numpy(np.stack(seen)),
    )


#: a sheet pixel shows a target pixel's surface point when their UDPs are this close
#: (a pixel of a 128-pixel-tall character is about 0.008 apart in UDP)
SEEN_TOLERANCE = 0.03


def sheet_correspondence(sheet_udps: np.ndarray, target_udp: np.ndarray):
    """Where each target pixel's surface point appears in each sheet view.

    The true UDPs give the answer a perfect shader's warp would find: for each view, the
    sheet pixel of nearest UDP, kept where it is within ``SEEN_TOLERANCE`` (else that
    view does not show the point). Returns the backward flow (V, 2, H, W) in pixels, x
    then y, as ``conr.warp`` takes it, and ``seen`` (V, 1, H, W), both float32.
    """
    from scipy.spatial import cKDTree

    views, h, w = sheet_udps.shape[:3]
    flow = np.zeros((views, 2, h, w), np.float32)
    seen = np.zeros((views, 1, h, w), np.float32)
    wanted = target_udp[..., 3] > 0.5
    if not wanted.any():
        return flow, seen
    ty, tx = np.nonzero(wanted)
    points = target_udp[wanted][:, :3]
    for v in range(views):
        covered = sheet_udps[v, ..., 3] > 0.5
        if not covered.any():
            continue
        sy, sx = np.nonzero(covered)
        distance, nearest = cKDTree(sheet_udps[v][covered][:, :3]).query(points, k=1)
        flow[v, 0, ty, tx] = sx[nearest] - tx
        flow[v, 1, ty, tx] = sy[nearest] - ty
        seen[v, 0, ty, tx] = distance < SEEN_TOLERANCE
    return flow, seen


# ----------------------------------------------------------------------------- metrics
