"""``anirender train reenact``: fit the pose-driven reenactment net on AnimeCeleb exports.

Pairs: for each character and shading style, the source is the neutral frontal image
(``frontal_<style>/00000.png``, pose all zeros) and every other image of that character
and style is a target, driven by its row of ``combined_pose.csv``. Images are composited
on white and resized to the model size. A horizontal flip (left/right targets swapped,
roll and yaw negated) doubles the data.

Loss: L1(final, target) + ``warp_weight`` * L1(warped source, target) (this keeps the
warping net a warp-only predictor in its own right, as PIRenderer's warp stage), plus an
optional ``feature_weight`` * feature loss: L1 between image pyramids (3 scales) and their
x/y gradients, a cheap stand-in for a VGG perceptual loss (no pretrained VGG ships here).
For the open mouth, a thin ink ring that L1 leaves out: ``--mouth-weight`` adds squared
error on the mouth box (:func:`mouth_loss`), ``--mouth-gan`` a patch critic on a crop
around it (:mod:`.mouth_critic`).

Validation (printed and written to ``metrics.json``): mean L1 and PSNR on held-out
characters and held-out poses of the training characters, for the full model, for the
warp-only output, and for the unchanged source (identity).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AniRenderError
from ..pose_vector import (
    MOUTH_NAMES,
    POSE_NAMES,
    POSE_SIZE,
    SAMPLE_ANGLE,
)
from ..reenact import (
    FaceGenerator,
    ReenactConfig,
    load_reenact,
    mirror_averaged,
    mirrored_inputs,
    on_white,
    rgba_to_tensor,
    save_reenact,
)
from .mouth_critic import MouthCritic, critic_loss, drawing_loss, mouth_crops, mouth_sliders


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Stored images -> N x 3 x H x W RGB on white in [-1, 1].

    ``PairSet`` keeps the dataset's pixels as decoded, uint8 RGBA (a third of the memory
    of float RGB: mh_b's 3300 images 0.87 GB rather than 2.6), and composites a batch
    when it is used, with the same float operations as ``rgba_to_tensor``, so the values
    are the same to the bit. Float images (resized at load) pass through."""
    if images.dtype != torch.uint8:
        return images
    return on_white(images.float() / 255.0)[0] * 2 - 1


@dataclass
class PairSet:
    """Sources, targets and poses of one split; ``source_images`` / ``target_images``
    give a batch as RGB in [-1, 1]."""

    sources: torch.Tensor  # S x 4 x H x W uint8 RGBA (one per character and style)
    targets: torch.Tensor  # N x 4 x H x W uint8 RGBA (float N x 3 x H x W if resized)
    poses: torch.Tensor  # N x 20
    source_index: torch.Tensor  # N, into sources
    #: N x 2 x 4 eye and mouth boxes (x0 y0 x1 y1 in pixels of the model size) of each
    #: target, NaN where the dataset has no crops.json
    boxes: torch.Tensor | None = None

    def __len__(self):
        return len(self.targets)

    def source_images(self, which) -> torch.Tensor:
        """The sources of pairs ``which`` (an index or slice into the pairs)."""
        return as_rgb(self.sources[self.source_index[which]])

    def target_images(self, which) -> torch.Tensor:
        return as_rgb(self.targets[which])


CROPS_NAME = "crops.json"  # written by addon.datasets.faces
CHARACTERS_NAME = "characters.json"
REGIONS = ("eyes", "mouth")


def read_crops(folder) -> dict:
    """``{"org_id/cluster/png": {"eyes": box, "mouth": box}}`` (pixels at ``size``)."""
    path = Path(folder) / CROPS_NAME
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {"size": data["size"], "boxes": data["boxes"]}


def read_splits(folder) -> dict:
    """``{org_id: "train" | "val"}`` of a dataset (empty when it records none)."""
    path = Path(folder) / CHARACTERS_NAME
    if not path.is_file():
        return {}
    return {k: v["split"] for k, v in json.loads(path.read_text())["characters"].items()}


def _read_rows(csv_path: Path) -> list[dict]:
    import csv

    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[:3] != ["org_id", "cluster", "png_name"] or len(header) != 23:
            raise AniRenderError(f"{csv_path} does not have the combined_pose.csv columns.")
        return [
            {"org_id": r[0], "cluster": r[1], "png_name": r[2], "pose": [float(v) for v in r[3:]]}
            for r in reader
        ]


def load_pairs(
    data_dirs,
    size: int,
    val_characters: int = 1,
    val_poses: float = 0.1,
    use_splits=True,
    only: set | None = None,
    held_out_only: bool = False,
):
    """(train, val_characters, val_poses) PairSets from one or more dataset folders.

    A folder with a ``characters.json`` (``dataset celeb --makehuman``) holds out its
    ``val`` characters (``use_splits``); otherwise the last ``val_characters`` by name.
    ``only``: read just these characters (``org_id``s). ``held_out_only``: read just the
    characters the folders' splits hold out (scoring; train is then None), so scoring a
    model does not decode and hold the whole training set.
    """
    from PIL import Image

    rows = []
    held_chars = set()
    crops = {}
    for folder in data_dirs:
        splits = read_splits(folder) if use_splits else {}
        held_chars |= {f"{Path(folder).name}/{k}" for k, v in splits.items() if v == "val"}
        found = read_crops(folder)
        for key, boxes in (found.get("boxes") or {}).items():
            crops[Path(folder) / key] = (found["size"], boxes)
    for folder in data_dirs:
        folder = Path(folder)
        csv_path = folder / "combined_pose.csv"
        if not csv_path.is_file():
            raise AniRenderError(
                f"No combined_pose.csv in {folder}; export one with `anirender dataset celeb`."
            )
        for row in _read_rows(csv_path):
            if only is not None and row["org_id"] not in only:
                continue
            row["character"] = f"{folder.name}/{row['org_id']}"
            if held_out_only and row["character"] not in held_chars:
                continue
            row["path"] = folder / row["org_id"] / row["cluster"] / row["png_name"]
            rows.append(row)
    characters = sorted({r["character"] for r in rows})
    if not held_chars and val_characters and len(characters) <= val_characters:
        raise AniRenderError(
            f"The data has {len(characters)} characters; hold out fewer than that "
            f"(--val-characters {val_characters})."
        )
    if not held_chars and val_characters:
        held_chars = set(characters[len(characters) - val_characters :])
    numbers = sorted({int(r["png_name"].split(".")[0]) for r in rows} - {0})
    cut = numbers[int(len(numbers) * (1 - val_poses))] if val_poses > 0 else math.inf

    def image(path):
        """uint8 4 x H x W as stored; float RGB when it must be resized to ``size``."""
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"))
        if rgba.shape[:2] == (size, size):
            return torch.from_numpy(rgba.copy()).permute(2, 0, 1)
        return rgba_to_tensor(rgba, size)[0][0]

    def stack(images):
        if all(i.dtype == torch.uint8 for i in images):
            return torch.stack(images)
        return torch.stack([as_rgb(i[None])[0] for i in images])

    groups = {}
    for r in rows:
        style = r["cluster"].split("_", 1)[-1]
        groups.setdefault((r["character"], style), []).append(r)
    splits = {"train": ([], [], [], [], []), "val_characters": ([], [], [], [], []),
              "val_poses": ([], [], [], [], [])}  # fmt: skip

    def box_of(path):
        if path not in crops:
            return [[math.nan] * 4] * 2
        scale = size / crops[path][0]
        return [[v * scale for v in crops[path][1][r]] for r in REGIONS]

    for (character, _style), members in sorted(groups.items()):
        neutral = [m for m in members if m["png_name"] == "00000.png"]
        if not neutral:
            continue
        for name in splits:
            sources, targets, poses, index, boxes = splits[name]
            chosen = [
                m
                for m in members
                if m["png_name"] != "00000.png"
                and (
                    (name == "val_characters") == (character in held_chars)
                    and (
                        name == "val_characters"
                        or (name == "val_poses") == (int(m["png_name"][:5]) >= cut)
                    )
                )
            ]
            if not chosen:
                continue
            sources.append(image(neutral[0]["path"]))
            for m in chosen:
                targets.append(image(m["path"]))
                poses.append(m["pose"])
                index.append(len(sources) - 1)
                boxes.append(box_of(m["path"]))
    result = []
    for name in ("train", "val_characters", "val_poses"):
        sources, targets, poses, index, boxes = splits[name]
        if not targets:
            result.append(None)
            continue
        result.append(
            PairSet(
                stack(sources),
                stack(targets),
                torch.tensor(poses, dtype=torch.float32),
                torch.tensor(index),
                torch.tensor(boxes, dtype=torch.float32),
            )
        )
    if result[0] is None and not held_out_only:
        raise AniRenderError("No training pairs: every image was held out.")
    return tuple(result)


WARMUP_STEPS = 200  # linear warm-up of the learning rate when training starts from --init


def region_map(boxes, size: int, weight: float) -> torch.Tensor:
    """N x 1 x size x size: 1 + ``weight`` inside each example's eye and mouth boxes."""
    ys = torch.arange(size, dtype=torch.float32) + 0.5
    inside = torch.zeros(len(boxes), 1, size, size)
    for region in range(boxes.shape[1]):
        x0, y0, x1, y1 = (boxes[:, region, i, None] for i in range(4))
        rows = ((ys >= y0) & (ys < y1)).float()[:, :, None]
        cols = ((ys >= x0) & (ys < x1)).float()[:, None, :]
        inside = torch.maximum(inside, (rows * cols)[:, None])
    return 1 + weight * inside


#: the mouth box is the closed mouth's; an open "o" reaches past it, so the mouth loss
#: scores a box this much taller (and a little wider) around the same centre
MOUTH_GROW = (1.2, 1.8)


def mouth_loss(image, target, boxes, size: int):
    """Mean squared error on each example's (grown) mouth box, at full size and pooled 4x.

    The open mouth is drawn as a thin ink ring. Where its exact place is uncertain by a
    pixel or two, L1's optimum is the median, which is no line at all: the model learned
    to leave mouths closed. Squared error's optimum is the mean, a visible soft ring, and
    the pooled term rewards a ring in about the right place.
    """
    box = boxes[:, 1]
    centre = (box[:, :2] + box[:, 2:]) / 2
    half = (box[:, 2:] - box[:, :2]) / 2 * torch.tensor(MOUTH_GROW)
    grown = torch.cat([centre - half, centre + half], 1)[:, None]
    mask = region_map(grown, size, 1.0) - 1
    total = 0.0
    for pool in (1, 4):
        a, b, m = image, target, mask
        if pool > 1:
            a, b, m = (F.avg_pool2d(t, pool) for t in (a, b, m))
        total = total + (((a - b) ** 2) * m).sum() / (m.sum() * a.shape[1]).clamp_min(1.0)
    return total


def flip_boxes(boxes, size: int):
    """The same boxes on horizontally flipped images."""
    flipped = boxes.clone()
    flipped[..., 0], flipped[..., 2] = size - boxes[..., 2], size - boxes[..., 0]
    return flipped


def pair_loss(out_images, source, target, warp_weight: float, change_weight: float = 0.0,
              regions=None, edit_weight: float = 0.0):  # fmt: skip
    """L1(final) + warp_weight * L1(warped); ``change_weight`` > 0 weighs each pixel by
    1 + change_weight * |target - source| (the pixels the pose moves: eyes, mouth), and
    ``regions`` (N x 1 x h x w, see :func:`region_map`) multiplies that weight.

    ``edit_weight`` adds the same L1 on the edited image *before* the edit mask: where
    the mask keeps the source, the final loss gives the editing net no gradient, so a
    region it draws badly (an opening mouth) would stay masked out and never improve.
    """
    weight = 1.0
    if change_weight:
        weight = 1 + change_weight * (target - source).abs().mean(1, keepdim=True)
    if regions is not None:
        weight = weight * regions
    if change_weight or regions is not None:
        weight = weight / weight.mean((2, 3), keepdim=True)
    loss = ((out_images["fake_image"] - target).abs() * weight).mean()
    if warp_weight:
        loss = loss + warp_weight * ((out_images["warp_image"] - target).abs() * weight).mean()
    if edit_weight and "edited_image" in out_images:
        loss = loss + edit_weight * ((out_images["edited_image"] - target).abs() * weight).mean()
    return loss


def flip_batch(source, target, pose):
    source, pose = mirrored_inputs(source, pose)
    return source, target.flip(-1), pose


def feature_loss(a, b, scales: int = 3):
    """L1 over an image pyramid and its gradients (a perceptual-loss stand-in)."""
    total = 0.0
    for s in range(scales):
        if s:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        total = total + F.l1_loss(a, b)
        total = total + F.l1_loss(a.diff(dim=-1), b.diff(dim=-1))
        total = total + F.l1_loss(a.diff(dim=-2), b.diff(dim=-2))
    return total / scales


def _scores(image, target):
    """Per-example L1 (on [0, 1] images) and PSNR of two N x 3 x h x w batches in [-1, 1]."""
    err = ((image - target).abs() / 2).flatten(1).mean(1)
    mse = (((image - target) / 2) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return err, 10 * torch.log10(1 / mse)


def crop_scores(image, target, boxes, region: int):
    """L1 and PSNR on each example's ``region`` box (eyes 0, mouth 1), or None without boxes."""
    l1, psnr = [], []
    size = image.shape[-1]
    for k in range(len(image)):
        box = boxes[k, region]
        if not torch.isfinite(box).all():
            return None
        x0, y0 = (int(max(0, math.floor(v))) for v in box[:2].tolist())
        x1, y1 = (int(min(size, math.ceil(v))) for v in box[2:].tolist())
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        a, b = _scores(image[k : k + 1, :, y0:y1, x0:x1], target[k : k + 1, :, y0:y1, x0:x1])
        l1.append(a)
        psnr.append(b)
    return torch.cat(l1), torch.cat(psnr)


#: a crop "moves" between source and target when their mean difference there is above
#: this (on [0, 1] images; about two grey levels)
CROP_MOVES = 0.008


@torch.no_grad()
def evaluate(model: FaceGenerator, pairs: PairSet | None, batch: int = 16) -> dict | None:
    """Mean L1 (on [0, 1] images) and PSNR of full model, warp-only and identity.

    With crop boxes each also gets ``eyes`` and ``mouth``: the same scores on each
    target's boxes, over the pairs where that box moves (``pairs`` counts them). A pose
    that leaves the mouth alone says nothing about drawing mouths, and would hand the
    unchanged source a perfect score there.
    """
    if pairs is None:
        return None
    was_training = model.training
    model.eval()
    names = ("full", "warp_only", "identity")
    sums = {k: {"all": [0.0, 0.0], "eyes": [0.0, 0.0], "mouth": [0.0, 0.0]} for k in names}
    moved = {region: 0 for region in REGIONS}
    cropped = pairs.boxes is not None and bool(torch.isfinite(pairs.boxes).all())
    for start in range(0, len(pairs), batch):
        sl = slice(start, start + batch)
        source, target = pairs.source_images(sl), pairs.target_images(sl)
        out = model(source, pairs.poses[sl])
        masks = {}
        if cropped:
            for r, region in enumerate(REGIONS):
                masks[region] = crop_scores(source, target, pairs.boxes[sl], r)[0] > CROP_MOVES
                moved[region] += int(masks[region].sum())
        for name, image in zip(names, (out["fake_image"], out["warp_image"], source)):
            err, psnr = _scores(image, target)
            sums[name]["all"][0] += float(err.sum())
            sums[name]["all"][1] += float(psnr.sum())
            for r, region in enumerate(masks):
                err, psnr = crop_scores(image, target, pairs.boxes[sl], r)
                sums[name][region][0] += float(err[masks[region]].sum())
                sums[name][region][1] += float(psnr[masks[region]].sum())
    model.train(was_training)
    n = len(pairs)
    result = {}
    for name, parts in sums.items():
        result[name] = {"l1": parts["all"][0] / n, "psnr": parts["all"][1] / n}
        if cropped:
            for region in REGIONS:
                k = moved[region]
                l1, psnr = (parts[region][0] / k, parts[region][1] / k) if k else (None, None)
                result[name][region] = {"l1": l1, "psnr": psnr, "pairs": k}
    return result | {"count": n}


def evaluate_reenact(model: FaceGenerator, data_dirs, split: str = "val") -> dict:
    """``{"model", "warp_only", "identity"}`` scores (each with eyes / mouth) on a dataset.

    ``split`` "val": the characters ``characters.json`` marks val; "all": every pair.
    """
    missing = [str(folder) for folder in data_dirs if not Path(folder).is_dir()]
    if missing:
        raise AniRenderError(
            f"No dataset folder at {', '.join(missing)}; give the folder "
            "`anirender dataset celeb --out DIR` wrote."
        )
    if split == "val":
        if not all(read_splits(folder) for folder in data_dirs):
            raise AniRenderError(
                "The data has no characters.json with a train/val split; "
                "use --split all or render it with `anirender dataset celeb --makehuman N`."
            )
        _, pairs, _ = load_pairs(data_dirs, model.cfg.image_size, 0, 0.0, held_out_only=True)
    else:
        pairs, _, _ = load_pairs(data_dirs, model.cfg.image_size, 0, 0.0, use_splits=False)
    if pairs is None:
        raise AniRenderError("The data holds no val characters; use --split all.")
    if pairs.boxes is None or not bool(torch.isfinite(pairs.boxes).all()):
        raise AniRenderError(
            "The data has no crops.json with eye and mouth boxes for every image; "
            "render it with `anirender dataset celeb --makehuman N`."
        )
    scores = evaluate(model, pairs)
    return {"model": scores["full"], "warp_only": scores["warp_only"],
            "identity": scores["identity"]}  # fmt: skip


# ----------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model, optimizer, step: int, args_json: str):
    """Model + AdamW state in one safetensors file (resumable, no pickle)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().reshape(value.shape)
    meta = {
        "step": str(step),
        "config": model.cfg.to_json(),
        "args": args_json,
        "param_groups": json.dumps(
            [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        ),
    }
    tmp = path.with_suffix(".partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_checkpoint(path: Path, model, optimizer) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    state = optimizer.state_dict()
    slots = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            slots.setdefault(int(pid), {})[name] = value
    state["state"] = slots
    groups = json.loads(meta["param_groups"])
    for group, saved in zip(state["param_groups"], groups):
        group.update(saved)
    optimizer.load_state_dict(state)
    return int(meta["step"])


# ----------------------------------------------------------------------- training


def train_reenact(args) -> dict:
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ReenactConfig(
        image_size=args.size,
        base=args.base,
        max_channels=args.max_channels,
        warp_layers=args.warp_layers,
        flow_scale=getattr(args, "flow_scale", 4),
        edit_res_blocks=args.res_blocks,
        residual_output=not args.plain_output,
        warp_size=getattr(args, "warp_size", 0),
        edit_base=getattr(args, "edit_base", 0),
        edit_max=getattr(args, "edit_max", 0),
        edit_levels=getattr(args, "edit_levels", 0),
        out_kernel=getattr(args, "out_kernel", 7),
    )
    init = getattr(args, "init", None)
    if init:
        start = load_reenact(None if str(init) == "shipped" else init)
        cfg = start.cfg
    if getattr(args, "source_blend", False):
        cfg = dataclasses.replace(cfg, source_blend=True)
    edit_weight = getattr(args, "edit_weight", 0.0)
    if edit_weight and not cfg.source_blend:
        raise AniRenderError(
            "--edit-weight trains the edited image under the edit mask: add --source-blend."
        )
    train, val_chars, val_poses = load_pairs(
        args.data, cfg.image_size, args.val_characters, args.val_poses
    )
    print(
        f"pairs: train {len(train)}, held-out characters "
        f"{len(val_chars) if val_chars else 0}, held-out poses {len(val_poses) if val_poses else 0}"
    )
    model = FaceGenerator(cfg)
    if init:
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        if unexpected or any(not k.startswith("editing_net.blend.") for k in missing):
            raise AniRenderError(f"--init {init} does not fit this model: {missing or unexpected}")
    change_weight = getattr(args, "change_weight", 0.0)
    region_weight = getattr(args, "region_weight", 0.0)
    if region_weight and (train.boxes is None or not bool(torch.isfinite(train.boxes).all())):
        raise AniRenderError(
            "--region-weight needs eye and mouth boxes (crops.json) for every training image."
        )
    mouth_weight = getattr(args, "mouth_weight", 0.0)
    if mouth_weight and (train.boxes is None or not bool(torch.isfinite(train.boxes).all())):
        raise AniRenderError(
            "--mouth-weight needs mouth boxes (crops.json) for every training image."
        )
    mouth_gan = getattr(args, "mouth_gan", 0.0)
    if mouth_gan and (train.boxes is None or not bool(torch.isfinite(train.boxes).all())):
        raise AniRenderError("--mouth-gan needs mouth boxes (crops.json) for every training image.")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=1e-4, betas=(0.5, 0.99)
    )
    critic = critic_optimizer = None
    critic_path = out / "mouth_critic.safetensors"
    if mouth_gan:
        critic = MouthCritic()
        critic_optimizer = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.5, 0.99))
    args_json = json.dumps({k: str(v) for k, v in vars(args).items() if k != "func"})
    ckpt = out / "checkpoint.safetensors"
    step = 0
    if args.resume and ckpt.is_file():
        step = load_checkpoint(ckpt, model, optimizer)
        print(f"resumed from {ckpt} at step {step}")
        if critic is not None and critic_path.is_file():  # its Adam moments start afresh
            critic.load_state_dict(load_file(str(critic_path)))
    generator = torch.Generator().manual_seed(args.seed + step)
    started = time.perf_counter()
    deadline = started + args.minutes * 60 if args.minutes else math.inf
    model.train()
    bar = tqdm(total=args.steps, initial=step, unit="step")
    cosine = getattr(args, "cosine", False)
    while step < args.steps and time.perf_counter() < deadline:
        lr = args.lr
        if cosine:  # lr from args.lr down to a tenth, over the steps or the minutes
            done = step / args.steps
            if args.minutes:
                done = max(done, (time.perf_counter() - started) / (args.minutes * 60))
            lr = args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(done, 1.0))))
        if init and step < WARMUP_STEPS:  # fresh Adam moments must not shake a trained model
            lr = lr * (step + 1) / WARMUP_STEPS
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(train), (args.batch,), generator=generator)
        source, target = train.source_images(idx), train.target_images(idx)
        pose = train.poses[idx]
        boxes = train.boxes[idx] if region_weight or mouth_weight or mouth_gan else None
        if torch.rand(1, generator=generator).item() < 0.5:
            source, target, pose = flip_batch(source, target, pose)
            boxes = None if boxes is None else flip_boxes(boxes, cfg.image_size)
        regions = None
        if region_weight:
            regions = region_map(boxes, cfg.image_size, region_weight)
        out_images = model(source, pose)
        loss = pair_loss(
            out_images, source, target, args.warp_weight, change_weight, regions, edit_weight
        )
        if mouth_weight:
            loss = loss + mouth_weight * mouth_loss(
                out_images["fake_image"], target, boxes, cfg.image_size
            )
            if edit_weight and "edited_image" in out_images:
                loss = loss + edit_weight * mouth_weight * mouth_loss(
                    out_images["edited_image"], target, boxes, cfg.image_size
                )
        if args.feature_weight:
            loss = loss + args.feature_weight * feature_loss(out_images["fake_image"], target)
        if critic is not None:
            real, fake = mouth_crops(target, boxes), mouth_crops(out_images["fake_image"], boxes)
            seen, sliders = mouth_crops(source, boxes), mouth_sliders(pose)
            critic_optimizer.zero_grad(set_to_none=True)
            critic_loss(critic, real, fake, seen, sliders).backward()
            critic_optimizer.step()
            loss = loss + mouth_gan * drawing_loss(critic, fake, seen, sliders)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % args.checkpoint_every == 0:
            save_checkpoint(ckpt, model, optimizer, step, args_json)
            if critic is not None:
                save_file(critic.state_dict(), str(critic_path))
    bar.close()
    save_checkpoint(ckpt, model, optimizer, step, args_json)
    if critic is not None:
        save_file(critic.state_dict(), str(critic_path))
    seconds = time.perf_counter() - started
    metrics = {
        "steps": step,
        "train_seconds": round(seconds, 1),
        "held_out_characters": evaluate(model, val_chars),
        "held_out_poses": evaluate(model, val_poses),
        "train_pairs": len(train),
    }
    weights = save_reenact(
        model,
        out / "reenact.safetensors",
        extra={"steps": step, "seed": args.seed, "metrics": json.dumps(metrics)},
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"weights: {weights}")
    return metrics


# ----------------------------------------------------------------------- one portrait


#: learning rate of per-portrait tuning: at 2e-4 the tuned model drifted from the generic
#: one and got worse on held-out poses (BENCHMARKS.md)
TUNE_LR = 5e-5


def sample_poses(rng: np.random.Generator, count: int) -> np.ndarray:
    """AnimeCeleb Algorithm-1 poses for a rig with every target bound (count x 20)."""
    poses = np.zeros((count, POSE_SIZE), np.float32)
    for k in range(count):
        for first in (0, 6):  # eyes 0..5, brows 6..11: one semantic, left and right
            left = first + 2 * int(rng.integers(3))
            poses[k, left : left + 2] = rng.random(2)
        poses[k, POSE_NAMES.index(MOUTH_NAMES[0]) + int(rng.integers(5))] = rng.random()
        poses[k, 17:] = rng.uniform(-SAMPLE_ANGLE, SAMPLE_ANGLE, 3)
    return poses


def _jitter(images: torch.Tensor, generator: torch.Generator, shift: int) -> torch.Tensor:
    """Per-example colour jitter (gain, bias per channel) and a shift of up to ``shift`` px,
    on white (images in [-1, 1])."""
    n = len(images)
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.2
    bias = (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.1
    out = ((images + 1) / 2 * gain + bias).clamp(0, 1) * 2 - 1
    if shift:
        rows = []
        for k in range(n):
            dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
            padded = F.pad(out[k : k + 1], (shift, shift, shift, shift), value=1.0)
            h, w = out.shape[-2:]
            rows.append(padded[..., shift + dy : shift + dy + h, shift + dx : shift + dx + w])
        out = torch.cat(rows)
    return out


class PortraitTuner:
    """Adapt a reenactment model to one portrait (no rig, no other images of it).

    The signal is the mirrored portrait. The frozen starting model drawing the pose and,
    flipped back, the mirrored face in the mirrored pose gives two estimates of the same
    image, and their mean is better than either on unseen faces (BENCHMARKS.md: it is
    what mirror averaging gains at twice the cost). Each step trains the one-pass model,
    on this portrait only, towards that mean:

    - *teacher pairs*: the portrait (colour-jittered, shifted, mirrored half the time)
      with an Algorithm-1 pose, target = :func:`models.reenact.mirror_averaged` of the
      frozen model;
    - *identity pairs* (``identity_share`` of them): the zero pose, target = the input.

    Only the editing net adapts, at a small learning rate: the pose mapping and the warp
    stay the generic ones. ``objective()`` is the same loss on a fixed batch (fixed seed):
    what the tuning lowers.
    """

    def __init__(
        self,
        model: FaceGenerator,
        portrait_rgba: np.ndarray,
        batch: int = 4,
        lr: float = TUNE_LR,
        seed: int = 0,
        identity_share: float = 0.0,
    ):
        import copy

        self.model = model.train()
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.portrait, _ = rgba_to_tensor(portrait_rgba, model.cfg.image_size)
        self.batch = batch
        self.identity_share = identity_share
        self.shift = max(1, model.cfg.image_size // 32)
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        for p in model.parameters():
            p.requires_grad_(False)
        tuned = list(model.editing_net.parameters())
        for p in tuned:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(tuned, lr=lr)
        self.steps = 0
        self._fixed = self._pairs(torch.Generator().manual_seed(12345),
                                  np.random.default_rng(12345), 8)  # fmt: skip

    def _pairs(self, generator, rng, n):
        source = _jitter(self.portrait.expand(n, -1, -1, -1), generator, self.shift)
        poses = torch.from_numpy(sample_poses(rng, n))
        identity = torch.rand(n, generator=generator) < self.identity_share
        poses[identity] = 0.0
        flip = torch.rand(n, generator=generator) < 0.5
        if flip.any():
            source[flip], poses[flip] = mirrored_inputs(source[flip], poses[flip])
        target = mirror_averaged(self.teacher, source, poses)
        target[identity] = source[identity]
        return source, poses, target

    def _loss(self, source, poses, target):
        out = self.model(source, poses)
        return F.l1_loss(out["fake_image"], target)

    def objective(self) -> float:
        with torch.no_grad():
            return float(self._loss(*self._fixed))

    def step(self) -> float:
        loss = self._loss(*self._pairs(self.generator, self.rng, self.batch))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())


def finetune_portrait(args) -> dict:
    """``train reenact --init W --portrait IMAGE``: tune, save, report the objective."""
    from PIL import Image

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.portrait)
    if not path.is_file():
        raise AniRenderError(f"No portrait image at {path}.")
    with Image.open(path) as image:
        portrait = np.asarray(image.convert("RGBA"))
    init = args.init or "shipped"
    model = load_reenact(None if str(init) == "shipped" else init)
    tuner = PortraitTuner(model, portrait, batch=args.batch, lr=args.lr, seed=args.seed)
    before = tuner.objective()
    started = time.perf_counter()
    deadline = started + args.minutes * 60 if args.minutes else math.inf
    while tuner.steps < args.steps and time.perf_counter() < deadline:
        loss = tuner.step()
        if tuner.steps % 20 == 0:
            print(f"step {tuner.steps}: loss {loss:.4f}", flush=True)
    after = tuner.objective()
    result = {
        "portrait": str(path),
        "init": str(init),
        "steps": tuner.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "objective_before": before,
        "objective_after": after,
    }
    out = Path(args.out)
    weights = save_reenact(
        tuner.model.eval(), out / "reenact.safetensors", extra={"tuned": json.dumps(result)}
    )
    (out / "tuning.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"weights: {weights}")
    return result
