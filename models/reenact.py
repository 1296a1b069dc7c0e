"""Neural head reenactment driven by the 20-value pose vector (PIRenderer, as AnimeCeleb).

Three parts, named as in PIRenderer's state dicts (``mapping_net``, ``warpping_net``,
``editing_net``):

* mapping net: an MLP 20 -> 256 plus 3 residual 256-wide layers -> descriptor z;
* warping net: an AdaIN hourglass over the source image predicting a flow at a quarter
  of the image size (64 x 64 for 256 x 256), upsampled and applied with ``grid_sample``;
* editing net: an encoder of [source, warped source], AdaIN residual blocks and an AdaIN
  decoder, then a 7x7 conv and tanh; with ``source_blend`` (the shipped 256 px model) it
  also paints a mask, and the output is mask * edited + (1 - mask) * the source itself,
  so what the pose leaves alone stays as crisp as it was drawn (as Talking Head Anime).

Images are RGB in [-1, 1] composited on white. The width, depth and image size are a
``ReenactConfig`` stored in the safetensors metadata, so the first 64 px model
(``assets/reenact_small.safetensors``, ``LEGACY_64_WEIGHTS``) loads with the same code
as the shipped 256 px one (``assets/reenact_256.safetensors``: the warping net sees a
64 px copy of the source, the editing net is narrow at full size; see BENCHMARKS.md).
No bpy here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AniRenderError, quote_exception
from .pose_vector import ANGLES, MIRROR_ORDER, MIRROR_SIGN, POSE_SIZE, SAMPLE_ANGLE

REPO = Path(__file__).resolve().parents[1]
SHIPPED_WEIGHTS = REPO / "assets" / "reenact_256.safetensors"
SHIPPED_SHA256 = "d36ed67c135964b471cd71a3271ae0973c93828fcb1cd4097d0ad978fe565b7f"
#: the first shipped model (64 px, toy cast), kept loadable and benchmarked
LEGACY_64_WEIGHTS = REPO / "assets" / "reenact_small.safetensors"
FORMAT = "anirender.reenact/1"


@dataclass
class ReenactConfig:
    image_size: int = 256
    pose_size: int = POSE_SIZE
    descriptor: int = 256  # z width
    mapping_layers: int = 3
    base: int = 32  # channels at full resolution
    max_channels: int = 256
    warp_layers: int = 4  # hourglass depth; the flow comes out at 1/flow_scale
    flow_scale: int = 4
    edit_res_blocks: int = 2
    # output = tanh(conv + atanh(warped)): the editing net corrects the warp instead of
    # painting from scratch (trains far faster); False = PIRenderer's plain tanh(conv)
    residual_output: bool = False
    # Lighter 256 px models (0 = as the fields above, so older weights load unchanged):
    warp_size: int = 0  # side of the source the warping net sees (flow upsampled to full)
    edit_base: int = 0  # editing-net channels at full resolution (0: base)
    edit_max: int = 0  # editing-net channel cap (0: max_channels)
    edit_levels: int = 0  # editing-net downsamplings (0: log2(flow_scale))
    out_kernel: int = 7  # the last conv's kernel
    # The editing net also paints a mask that keeps the untouched source where the pose
    # changes nothing (THA's alpha blend): a closing eye no longer resamples the whole face
    source_blend: bool = False

    @classmethod
    def from_json(cls, text: str) -> ReenactConfig:
        known = {k: v for k, v in json.loads(text).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _channels(cfg: ReenactConfig, level: int) -> int:
    return min(cfg.base * 2**level, cfg.max_channels)


class AdaIN(nn.Module):
    """Instance norm whose scale and shift come from the pose descriptor."""

    def __init__(self, channels: int, descriptor: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(descriptor, channels * 2)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x, z):
        gamma, beta = self.affine(z)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class AdaINConv(nn.Module):
    def __init__(self, cin: int, cout: int, descriptor: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = AdaIN(cout, descriptor)

    def forward(self, x, z):
        return F.leaky_relu(self.norm(self.conv(x), z), 0.1)


class AdaINResBlock(nn.Module):
    def __init__(self, channels: int, descriptor: int):
        super().__init__()
        self.first = AdaINConv(channels, channels, descriptor)
        self.second = AdaINConv(channels, channels, descriptor)

    def forward(self, x, z):
        return x + self.second(self.first(x, z), z)


class MappingNet(nn.Module):
    """Pose vector -> descriptor: a linear layer and residual MLP layers."""

    def __init__(self, cfg: ReenactConfig):
        super().__init__()
        self.layer = cfg.mapping_layers
        self.first = nn.Linear(cfg.pose_size, cfg.descriptor)
        for i in range(cfg.mapping_layers):
            block = nn.Sequential(nn.LeakyReLU(0.1), nn.Linear(cfg.descriptor, cfg.descriptor))
            setattr(self, f"encoder{i}", block)

    def forward(self, pose):
        out = self.first(pose)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out
        return out


class ADAINHourglass(nn.Module):
    """An AdaIN U-Net: ``layers`` downsamplings, back up to 1/flow_scale resolution."""

    def __init__(self, cfg: ReenactConfig, image_nc: int = 3):
        super().__init__()
        self.layers = cfg.warp_layers
        self.up_layers = cfg.warp_layers - int(np.log2(cfg.flow_scale))
        self.stem = nn.Conv2d(image_nc, cfg.base, 3, padding=1)
        self.down = nn.ModuleList(
            AdaINConv(_channels(cfg, i), _channels(cfg, i + 1), cfg.descriptor)
            for i in range(self.layers)
        )
        self.up = nn.ModuleList()
        for k in range(self.up_layers):
            level = self.layers - k  # from this level up to level - 1
            cin = _channels(cfg, level) + _channels(cfg, level - 1)
            self.up.append(AdaINConv(cin, _channels(cfg, level - 1), cfg.descriptor))
        self.output_nc = _channels(cfg, self.layers - self.up_layers)

    def forward(self, x, z):
        x = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = F.avg_pool2d(block(x, z), 2)
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1), z)
        return x


def identity_grid(n, h, w, device, dtype):
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).expand(n, h, w, 2)


def warp(image, flow):
    """Sample ``image`` at identity + ``flow`` (flow: N x 2 x h x w in [-1, 1] units)."""
    n, _, h, w = image.shape
    if flow.shape[-2:] != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
    grid = identity_grid(n, h, w, image.device, image.dtype) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class WarpingNet(nn.Module):
    def __init__(self, cfg: ReenactConfig):
        super().__init__()
        self.hourglass = ADAINHourglass(cfg)
        channels = self.hourglass.output_nc
        self.flow_out = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, 2, kernel_size=7, padding=3),
        )
        nn.init.zeros_(self.flow_out[2].weight)
        nn.init.zeros_(self.flow_out[2].bias)

        self.warp_size = cfg.warp_size

    def forward(self, image, z):
        seen = image
        if self.warp_size and self.warp_size != image.shape[-1]:
            size = (self.warp_size, self.warp_size)
            seen = F.interpolate(image, size=size, mode="bilinear", antialias=True)
        flow = self.flow_out(self.hourglass(seen, z))
        return {"flow_field": flow, "warp_image": warp(image, flow)}


BLEND_START = 3.0  # logit of the first edit mask: sigmoid(3) = 0.95


class EditingNet(nn.Module):
    def __init__(self, cfg: ReenactConfig, image_nc: int = 3):
        super().__init__()
        levels = cfg.edit_levels or int(np.log2(cfg.flow_scale))
        base, cap = cfg.edit_base or cfg.base, cfg.edit_max or cfg.max_channels

        def ch(level):
            return min(base * 2**level, cap)

        self.encoder = nn.ModuleList([nn.Conv2d(image_nc * 2, ch(0), 3, padding=1)])
        for i in range(levels):
            self.encoder.append(nn.Conv2d(ch(i), ch(i + 1), 4, stride=2, padding=1))
        self.res_blocks = nn.ModuleList(
            AdaINResBlock(ch(levels), cfg.descriptor) for _ in range(cfg.edit_res_blocks)
        )
        self.decoder = nn.ModuleList(
            AdaINConv(ch(i + 1) + ch(i), ch(i), cfg.descriptor) for i in reversed(range(levels))
        )
        k = cfg.out_kernel
        self.out = nn.Conv2d(ch(0), image_nc, k, padding=k // 2)
        self.residual_output = cfg.residual_output
        if self.residual_output:  # start as the warp-only prediction
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self.blend = None
        if cfg.source_blend:  # starts at 95% edited image, 5% source everywhere
            self.blend = nn.Conv2d(ch(0), 1, 3, padding=1)
            nn.init.zeros_(self.blend.weight)
            nn.init.constant_(self.blend.bias, BLEND_START)

    def forward(self, source, warped, z):
        x = torch.cat([source, warped], 1)
        skips = []
        for i, conv in enumerate(self.encoder):
            x = F.leaky_relu(conv(x), 0.1)
            if i < len(self.encoder) - 1:
                skips.append(x)
        for block in self.res_blocks:
            x = block(x, z)
        for block in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1), z)
        if self.residual_output:
            image = torch.tanh(self.out(x) + torch.atanh(warped.clamp(-0.995, 0.995)))
        else:
            image = torch.tanh(self.out(x))
        if self.blend is None:
            return image, None, image
        mask = torch.sigmoid(self.blend(x))
        return mask * image + (1 - mask) * source, mask, image


class FaceGenerator(nn.Module):
    """source image (N x 3 x S x S, [-1, 1]) + pose (N x 20) -> reenacted image."""

    def __init__(self, cfg: ReenactConfig | None = None):
        super().__init__()
        self.cfg = cfg or ReenactConfig()
        self.mapping_net = MappingNet(self.cfg)
        self.warpping_net = WarpingNet(self.cfg)
        self.editing_net = EditingNet(self.cfg)

    def forward(self, source, pose, stage: str | None = None):
        z = self.mapping_net(normalise_pose(pose))
        output = self.warpping_net(source, z)
        if stage != "warp":
            image, mask, edited = self.editing_net(source, output["warp_image"], z)
            output["fake_image"] = image
            if mask is not None:  # the edited image before the mask keeps the source
                output["edit_mask"] = mask
                output["edited_image"] = edited
        return output


def normalise_pose(pose):
    """Expression weights stay in 0..1; angles (degrees) are divided by 20."""
    scale = torch.ones(POSE_SIZE, dtype=pose.dtype, device=pose.device)
    scale[ANGLES] = 1.0 / SAMPLE_ANGLE
    return pose * scale


# ------------------------------------------------------------------------- images


def on_white(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """N x 4 (or 3) x H x W in [0, 1] -> (RGB composited on white, alpha), both in [0, 1]."""
    if image.shape[1] == 4:
        alpha = image[:, 3:4]
        return image[:, :3] * alpha + (1 - alpha), alpha
    return image, torch.ones_like(image[:, :1])


def rgba_to_tensor(rgba: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 H x W x 4 (or 3) -> (1 x 3 x size x size RGB on white in [-1, 1], alpha)."""
    array = np.asarray(rgba)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise AniRenderError(f"A portrait must be H x W x 3 or 4; got shape {array.shape}.")
    image = torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    rgb, alpha = on_white(image)
    if rgb.shape[-1] != size or rgb.shape[-2] != size:
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", antialias=True)
        alpha = F.interpolate(alpha, size=(size, size), mode="bilinear", antialias=True)
    return rgb * 2 - 1, alpha


def tensor_to_rgba(rgb: torch.Tensor, alpha: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """1 x 3 x S x S in [-1, 1] + 1 x 1 x S x S alpha -> uint8 H x W x 4."""
    rgb = (rgb.clamp(-1, 1) + 1) / 2
    if tuple(rgb.shape[-2:]) != tuple(size):
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        alpha = F.interpolate(alpha, size=size, mode="bilinear", align_corners=False)
    out = torch.cat([rgb, alpha.clamp(0, 1)], 1)[0].permute(1, 2, 0).numpy()
    return (out * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------- weights


def save_reenact(model: FaceGenerator, path, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": model.cfg.to_json()}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_reenact(path=None, device="cpu") -> FaceGenerator:
    """A generator from an AniRender safetensors file (default: the shipped small model)."""
    from safetensors.torch import load_file

    path = Path(path) if path else SHIPPED_WEIGHTS
    if not path.is_file():
        raise AniRenderError(
            f"No reenactment weights at {path}. Train some with `anirender train reenact` "
            "or point to a .safetensors file."
        )
    if path.suffix != ".safetensors":
        return load_released_checkpoint(path, device=device)
    if path.resolve() == SHIPPED_WEIGHTS.resolve():
        import hashlib

        if hashlib.sha256(path.read_bytes()).hexdigest() != SHIPPED_SHA256:
            raise AniRenderError(
                f"{path} does not match its recorded sha256; it is damaged or was replaced. "
                "Restore it from the repository (git checkout assets/reenact_256.safetensors)."
            )
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise AniRenderError(
            f"{path.name} is not an AniRender reenactment model (no '{FORMAT}' metadata)."
        )
    model = FaceGenerator(ReenactConfig.from_json(meta["config"]))
    model.load_state_dict(load_file(str(path), device="cpu"))
    return model.to(device).eval()


def permute_pose_input(state: dict, pose_order) -> dict:
    """Reorder the mapping net's input columns for a checkpoint trained on another order.

    ``pose_order[j]`` is the index in ``POSE_NAMES`` of the checkpoint's j-th input.
    """
    order = [int(i) for i in pose_order]
    if sorted(order) != list(range(POSE_SIZE)):
        raise AniRenderError(
            f"The pose order must be a permutation of 0..{POSE_SIZE - 1}; got {order}."
        )
    key = "mapping_net.first.weight"
    if key in state:
        foreign = state[key]
        ours = torch.empty_like(foreign)
        for j, i in enumerate(order):
            ours[:, i] = foreign[:, j]
        state = dict(state, **{key: ours})
    return state


def extract_generator(state: dict) -> dict:
    """Generator weights from a training checkpoint: ``net_G_ema.`` first, then ``net_G.``."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    for container in ("net_G_ema", "net_G"):  # PIRender's own .pt layout
        if container in state and isinstance(state[container], dict):
            return dict(state[container])
    for prefix in ("net_G_ema.", "net_G.", "generator.", "model."):
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return {k.removeprefix("module."): v for k, v in picked.items()}
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_released_checkpoint(
    path, cfg: ReenactConfig | None = None, pose_order=None, device="cpu", min_match=0.9
) -> FaceGenerator:
    """A PIRenderer-style ``.ckpt`` / ``.pth`` (read with ``weights_only=True``).

    Keys under ``net_G_ema.`` (else ``net_G.``) are matched by name and shape against a
    generator built from ``cfg``; fewer than ``min_match`` of the generator's tensors
    found is an error naming the first missing keys.
    """
    path = Path(path)
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled classes, not a torch file, truncated
        raise AniRenderError(
            f"{path.name} cannot be read as plain tensors ({quote_exception(exc, 160)}). "
            "Only checkpoints of plain tensors load."
        ) from None
    if not isinstance(raw, dict):
        raise AniRenderError(f"{path.name} holds no state dict.")
    state = {k: v for k, v in extract_generator(raw).items() if isinstance(v, torch.Tensor)}
    if pose_order is not None:
        state = permute_pose_input(state, pose_order)
    model = FaceGenerator(cfg or ReenactConfig())
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < min_match * len(own):
        missing = [k for k in own if k not in usable][:5]
        raise AniRenderError(
            f"{path.name} matches {len(usable)} of {len(own)} generator tensors; missing e.g. "
            f"{missing}. Give the config it was trained with (ReenactConfig)."
        )
    model.load_state_dict(usable, strict=False)
    return model.to(device).eval()


# ------------------------------------------------------------------------- inference


def mirrored_inputs(source, pose):
    """The left-right mirrored face: flipped images, _l/_r weights swapped, roll and yaw
    negated."""
    sign = torch.as_tensor(MIRROR_SIGN, dtype=pose.dtype, device=pose.device)
    return source.flip(-1), pose[:, list(MIRROR_ORDER)] * sign


@torch.no_grad()
def mirror_averaged(model: FaceGenerator, source, pose) -> torch.Tensor:
    """The mean of the model's image and the flipped-back image it draws for the mirrored
    face: two passes, better than one on unseen faces (BENCHMARKS.md), which is what
    per-portrait tuning teaches the one-pass model."""
    out, mirror = model(source, pose), model(*mirrored_inputs(source, pose))
    return flipped_back_mean(out["fake_image"], mirror["fake_image"])


def flipped_back_mean(image, mirror_image):
    """The mean of an image and a mirrored one flipped back."""
    return 0.5 * (image + mirror_image.flip(-1))


def reenacted_alpha(alpha, output: dict):
    """The portrait's alpha (N x 1 x S x S) moved as the model moved its colours: warped by
    the flow, and kept as it was where the edit mask keeps the source."""
    alpha = alpha.expand(len(output["flow_field"]), -1, -1, -1)
    warped = warp(alpha, output["flow_field"])
    if "edit_mask" not in output:
        return warped
    mask = output["edit_mask"]
    return mask * warped + (1 - mask) * alpha


@torch.inference_mode()
def reenacted(model: FaceGenerator, rgb, alpha, pose, mirror_average: bool = False):
    """(image N x 3 x S x S in [-1, 1], alpha N x 1 x S x S) of a source (1 x 3 x S x S,
    its alpha 1 x 1 x S x S) in N poses. ``mirror_average``: also draw the mirrored face
    in the mirrored pose and average, colour and alpha (see :func:`mirror_averaged`)."""
    n = len(pose)
    source = rgb.expand(n, -1, -1, -1)
    out = model(source, pose)
    image, cover = out["fake_image"], reenacted_alpha(alpha, out)
    if mirror_average:
        mirror = model(*mirrored_inputs(source, pose))
        image = flipped_back_mean(image, mirror["fake_image"])
        cover = flipped_back_mean(cover, reenacted_alpha(alpha.flip(-1), mirror))
    return image, cover


class Reenactor:
    """``reenact(portrait_rgba_uint8, pose20) -> rgba``: one loaded model, kept warm.

    The source portrait's encoding is cached between calls with the same array, so
    dragging a slider costs one mapping + warp + edit pass (two with ``mirror_average``).
    """

    def __init__(self, weights=None, device: str = "cpu", threads: int | None = None, model=None,
                 mirror_average: bool = False):  # fmt: skip
        if threads:
            torch.set_num_threads(threads)
        self.model = model.to(device).eval() if model is not None else load_reenact(weights, device)
        self.device = device
        self.mirror_average = mirror_average
        self._source_key = None
        self._source = None

    @property
    def size(self) -> int:
        return self.model.cfg.image_size

    def _prepare(self, portrait):
        key = (id(portrait), portrait.shape, hash(portrait[::17, ::17].tobytes()))
        if key != self._source_key:
            rgb, alpha = rgba_to_tensor(portrait, self.size)
            self._source = (rgb.to(self.device), alpha.to(self.device))
            self._source_key = key
        return self._source

    @torch.inference_mode()
    def reenact(self, portrait: np.ndarray, pose) -> np.ndarray:
        pose = np.asarray(pose, np.float32).reshape(-1)
        if pose.shape != (POSE_SIZE,) or not np.all(np.isfinite(pose)):
            raise AniRenderError(f"A pose has {POSE_SIZE} finite values; got {pose.shape}.")
        rgb, alpha = self._prepare(portrait)
        pose = torch.from_numpy(pose)[None].to(self.device)
        image, cover = reenacted(self.model, rgb, alpha, pose, self.mirror_average)
        return tensor_to_rgba(image.cpu(), cover.cpu(), portrait.shape[:2])


_SHARED: dict = {}


def reenact(portrait_rgba_uint8: np.ndarray, pose20, weights=None) -> np.ndarray:
    """Reenact a portrait with a pose using a process-wide model (the shipped one by default)."""
    key = str(weights or SHIPPED_WEIGHTS)
    if key not in _SHARED:
        _SHARED[key] = Reenactor(weights)
    return _SHARED[key].reenact(portrait_rgba_uint8, pose20)
