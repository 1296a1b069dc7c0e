"""ANR: a per-character neural texture on a coarse mesh and a two-stage neural renderer.

- ``NeuralTexture``: one texture per identity, a Laplacian pyramid of ``levels`` learnable
  images (``channels`` deep, the finest ``texture_size`` square, each level half the size
  of the one before). A frame's UV pass samples every level bilinearly and the samples are
  summed, so coarse levels carry low frequencies and get gradients from many pixels. The
  sampling happens on the texture, never on the UV image, so nothing blends across seams.
- ``R1`` (a shallow U-Net) turns the sampled texture into features whose first three
  channels are trained to be the RGB of the frame where the coarse mesh is seen.
- ``R2`` (a shallow U-Net) reads R1's features with the camera-space normal pass and the
  coarse occupancy and paints the whole frame, including what the coarse mesh lacks (hair,
  loose clothes): RGB and a soft mask (logit).

Texture row 0 is V = 1 (an image viewed upright); UV (0, 0) is its bottom-left corner.
Passes are (B, H, W, 4) float32 as ``addon.passes`` writes them: ``uv`` = U, V, 0,
occupancy; ``normal`` = X, Y, Z in [-1, 1], occupancy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AniRenderError
from .execution import TunedShader

MODEL_KIND = "anirender-anr"


@dataclass
class ANRConfig:
    identities: int = 1
    channels: int = 8  # neural texture depth
    texture_size: int = 256  # finest pyramid level
    levels: int = 4
    features: int = 16  # R1 output channels (first three: RGB)
    width: int = 16  # U-Net channels at full resolution (i + 1 times that at level i)
    depth: int = 3  # U-Net downsamplings
    identity_names: tuple = ()

    def names(self) -> list[str]:
        names = list(self.identity_names)
        return names + [f"identity{i}" for i in range(len(names), self.identities)]


class NeuralTexture(nn.Module):
    """Laplacian pyramids of learnable textures, one pyramid per identity."""

    def __init__(self, identities: int, channels: int, size: int, levels: int):
        super().__init__()
        if size >> (levels - 1) < 2:
            raise AniRenderError(f"A {size}-texel texture cannot have {levels} pyramid levels.")
        self.levels = nn.ParameterList(
            nn.Parameter(torch.zeros(identities, channels, size >> i, size >> i))
            for i in range(levels)
        )
        with torch.no_grad():  # small noise on the coarsest level breaks symmetry
            self.levels[-1].normal_(0.0, 0.1)

    def sample(self, uv: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 2) UV in [0, 1] and (B,) identity indices -> (B, C, H, W)."""
        grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)
        total = 0
        for level in self.levels:
            total = total + F.grid_sample(
                level[identity], grid, mode="bilinear", padding_mode="border", align_corners=False
            )
        return total

    def image(self, identity: int) -> torch.Tensor:
        """The summed pyramid of one identity at the finest size: (C, S, S)."""
        size = self.levels[0].shape[-1]
        total = 0
        for level in self.levels:
            total = total + F.interpolate(
                level[identity : identity + 1], size=(size, size), mode="bilinear",
                align_corners=False,
            )  # fmt: skip
        return total[0]


def _block(cin: int, cout: int) -> nn.Sequential:
    # no normalisation layers: their image-wide statistics would let a texture edit
    # change pixels far from where the edited texels are seen
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    )


class ShallowUNet(nn.Module):
    """``depth`` stride-2 downsamplings, bilinear upsampling with skip connections."""

    def __init__(self, cin: int, cout: int, width: int, depth: int):
        super().__init__()
        widths = [width * (i + 1) for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(cin, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            _block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.out = nn.Conv2d(widths[0], cout, 1)
        self.multiple = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.down[0](x)]
        for block in self.down[1:]:
            skips.append(block(F.avg_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return self.out(y)


class ANR(TunedShader, nn.Module):
    def __init__(self, config: ANRConfig | None = None):
        super().__init__()
        self.config = config = config or ANRConfig()
        for name in CONFIG_BOUNDS:  # a model this version could not read back is not made
            _check_field(name, getattr(config, name), "Choose a value in that range.")
        self.texture = NeuralTexture(
            config.identities, config.channels, config.texture_size, config.levels
        )
        self.r1 = ShallowUNet(config.channels + 1, config.features, config.width, config.depth)
        self.r2 = ShallowUNet(config.features + 4, 4, config.width, config.depth)

    def forward(self, uv, normal, identity, texture_features=None) -> dict:
        """Passes (B, H, W, 4) -> ``rgb`` (B, 3, H, W) in [0, 1], ``mask_logit`` (B, 1, H,
        W), ``r1_rgb`` (B, 3, H, W) and the coarse ``occupancy`` (B, 1, H, W).

        ``texture_features`` replaces the sampled texture (the split optimisation passes a
        detached copy so the renderer's frames do not train the texture)."""
        if uv.shape[1] % self.r1.multiple or uv.shape[2] % self.r1.multiple:
            raise AniRenderError(
                f"ANR frames must have sides that are multiples of {self.r1.multiple}; "
                f"got {uv.shape[2]} x {uv.shape[1]}."
            )
        occupancy = (uv[..., 3] > 0.5).to(uv.dtype)[:, None]
        if texture_features is None:
            texture_features = self.sample_texture(uv, identity)
        fmt = self.memory_format
        x = torch.cat([texture_features * occupancy, occupancy], dim=1)
        features = self.r1(x.contiguous(memory_format=fmt))
        normals = normal[..., :3].permute(0, 3, 1, 2) * occupancy
        out = self.r2(
            torch.cat([features, normals, occupancy], dim=1).contiguous(memory_format=fmt)
        )
        return {
            "rgb": torch.sigmoid(out[:, :3]),
            "mask_logit": out[:, 3:4],
            "r1_rgb": torch.sigmoid(features[:, :3]),
            "occupancy": occupancy,
        }

    def sample_texture(self, uv, identity) -> torch.Tensor:
        return self.texture.sample(uv[..., :2], identity)

    @torch.no_grad()
    def render(self, uv: np.ndarray, normal: np.ndarray, identity: int = 0) -> np.ndarray:
        """Numpy passes (B, H, W, 4) -> premultiplied RGBA float32 (B, H, W, 4)."""
        if not 0 <= identity < self.config.identities:
            raise AniRenderError(
                f"This ANR model has identities 0 to {self.config.identities - 1} "
                f"({', '.join(self.config.names())}); got {identity}."
            )
        uv, normal = np.asarray(uv, np.float32), np.asarray(normal, np.float32)
        execution = self.tuned(
            "ANR renderer",
            tuple(uv.shape[1:3]),
            lambda frames: self._render(
                np.repeat(uv[:1], frames, 0), np.repeat(normal[:1], frames, 0), identity, frames
            ),
        )
        return self._render(uv, normal, identity, execution.batch)

    @torch.no_grad()
    def _render(self, uv: np.ndarray, normal: np.ndarray, identity: int, step: int):
        device = next(self.parameters()).device
        out = np.empty(uv.shape[:3] + (4,), np.float32)
        for start in range(0, len(uv), step):
            uv_t = torch.as_tensor(uv[start : start + step], device=device)
            normal_t = torch.as_tensor(normal[start : start + step], device=device)
            ids = torch.full((len(uv_t),), identity, dtype=torch.long, device=device)
            with self.autocast():
                rgba = premultiplied_rgba(self(uv_t, normal_t, ids))
            out[start : start + step] = rgba.float().cpu().numpy()
        return out


def premultiplied_rgba(out: dict) -> torch.Tensor:
    """(B, H, W, 4) premultiplied RGBA from a forward pass."""
    mask = torch.sigmoid(out["mask_logit"])
    return torch.cat([out["rgb"] * mask, mask], dim=1).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------ texture editing


def texel_box(size: int, box) -> tuple[slice, slice]:
    """Rows and columns of a ``size`` texture whose texel centres lie in the UV ``box``
    (u0, v0, u1, v1); row 0 is V = 1."""
    u0, v0, u1, v1 = (float(x) for x in box)
    if not (0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1):
        raise AniRenderError(
            f"The UV rectangle {box} is not a rectangle inside [0, 1]; give u0 < u1 and v0 < v1."
        )
    centres = (np.arange(size) + 0.5) / size
    cols = np.nonzero((centres >= u0) & (centres <= u1))[0]
    rows = np.nonzero((1 - centres >= v0) & (1 - centres <= v1))[0]
    if not len(cols) or not len(rows):
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


@torch.no_grad()
def swap_texture_region(model: ANR, target: int, source: int, box=None, mask=None) -> None:
    """Copy ``source``'s texels into ``target``'s texture inside a UV rectangle ``box``
    (u0, v0, u1, v1) or a UV-space ``mask`` (an (S, S) bool array, row 0 at V = 1,
    resampled to every pyramid level by nearest texel). Other texels stay as they were."""
    identities = model.config.identities
    for which in (target, source):
        if not 0 <= which < identities:
            raise AniRenderError(f"No identity {which}; this model has {identities}.")
    if (box is None) == (mask is None):
        raise AniRenderError("Give either a UV rectangle or a UV mask for the texture swap.")
    for level in model.texture.levels:
        size = level.shape[-1]
        if box is not None:
            rows, cols = texel_box(size, box)
            level[target, :, rows, cols] = level[source, :, rows, cols]
        else:
            picked = _mask_at(np.asarray(mask, bool), size)
            where = torch.as_tensor(picked, device=level.device)
            level[target][:, where] = level[source][:, where]


def _mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.ndim != 2:
        raise AniRenderError(f"A UV mask is a 2-D image; got shape {mask.shape}.")
    rows = ((np.arange(size) + 0.5) / size * mask.shape[0]).astype(int)
    cols = ((np.arange(size) + 0.5) / size * mask.shape[1]).astype(int)
    return mask[rows][:, cols]


# ------------------------------------------------------------------------ weights


def save_anr(model: ANR, path, metadata: dict | None = None) -> None:
    """Write the model as safetensors with its config (atomic)."""
    import os

    from safetensors.torch import save_file

    path = str(path)
    meta = {"kind": MODEL_KIND, "config": json.dumps(asdict(model.config))}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    partial = path + ".partial"
    save_file(state, partial, metadata=meta)
    os.replace(partial, path)


#: what a config may ask for (field: (least, most)); the header's tensors must then match
#: the shapes the config implies, so building the model costs no more than the file holds
CONFIG_BOUNDS = {
    "identities": (1, 1024),
    "channels": (1, 256),
    "texture_size": (2, 4096),
    "levels": (1, 12),
    "features": (3, 256),
    "width": (1, 256),
    "depth": (0, 6),
}
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_anr(data: bytes | str, device="cpu") -> ANR:
    """An ANR from safetensors bytes or a file path (no pickle anywhere).

    The header is read first: the config must lie within ``CONFIG_BOUNDS`` and every
    tensor the config implies must be in the file with that shape, before any tensor is
    read or any layer built (a small file cannot ask for a large model)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
        else:
            with open(data, "rb") as handle:
                raw = handle.read()
        header = _header(raw)
    except (OSError, ValueError) as exc:
        raise AniRenderError(f"Cannot read ANR weights: {exc}") from None
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or meta.get("kind") != MODEL_KIND:
        raise AniRenderError("These weights are not an AniRender ANR model.")
    config = _bounded_config(meta.get("config"))
    _check_header_shapes(header, config)
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError) as exc:
        raise AniRenderError(f"Cannot read ANR weights: {exc}") from None
    try:
        model = ANR(config)
        model.load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise AniRenderError(f"The ANR weights do not match their config: {exc}") from None
    return model.to(device).eval()


def _header(raw: bytes) -> dict:
    """The safetensors JSON header (tensor entries and ``__metadata__``)."""
    if len(raw) < 8:
        raise ValueError(f"the file has {len(raw)} bytes; a safetensors file has at least 8")
    length = int.from_bytes(raw[:8], "little")
    if length > len(raw) - 8:
        raise ValueError(f"the header announces {length} bytes but the file has {len(raw)}")
    try:
        header = json.loads(raw[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def _bounded_config(text) -> ANRConfig:
    """The config from the metadata, each field of the right type and within bounds."""
    try:
        fields = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        fields = None
    if not isinstance(fields, dict):
        raise AniRenderError("The ANR weights carry no readable config in their metadata.")
    unknown = sorted(set(fields) - set(CONFIG_BOUNDS) - {"identity_names"})
    if unknown:
        raise AniRenderError(f"The ANR config has unknown fields: {', '.join(unknown)}.")
    for name in CONFIG_BOUNDS:
        _check_field(
            name,
            fields.get(name, getattr(ANRConfig, name)),
            "The file is damaged or was not written by AniRender.",
        )
    names = fields.get("identity_names", [])
    identities = fields.get("identities", ANRConfig.identities)
    if (
        not isinstance(names, list | tuple)
        or len(names) > identities
        or not all(isinstance(n, str) and len(n) <= 200 for n in names)
    ):
        raise AniRenderError(
            f"The ANR config's identity_names must be at most {identities} names (text)."
        )
    fields["identity_names"] = tuple(names)
    config = ANRConfig(**fields)
    if config.texture_size >> (config.levels - 1) < 2:
        raise AniRenderError(
            f"The ANR config asks for a {config.texture_size}-texel texture with "
            f"{config.levels} pyramid levels; it cannot have that many."
        )
    return config


def _check_field(name: str, value, why: str) -> None:
    least, most = CONFIG_BOUNDS[name]
    if type(value) is not int or not least <= value <= most:
        raise AniRenderError(
            f"The ANR config's {name} is {value!r}; this version reads {least} to {most}. {why}"
        )


def _check_header_shapes(header: dict, config: ANRConfig) -> None:
    """Every tensor the config implies, with its shape, and nothing else (no allocation:
    the expected shapes come from a model built on torch's ``meta`` device)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ANR(config).state_dict().items()}
    found = {}
    for key, entry in header.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            raise AniRenderError(f"The ANR weights' entry {key!r} is not a tensor.")
        if entry.get("dtype") not in _DTYPES:
            raise AniRenderError(
                f"The ANR weights' tensor {key!r} is {entry.get('dtype')!r}; expected floats."
            )
        found[key] = tuple(entry["shape"])
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or extra or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        )
        raise AniRenderError(
            f"The ANR weights do not match their config ({detail}). Export the model again."
        )


# ----------------------------------------------------------------- shading service


def check_passes(uv: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ANR shades: float32 (B, H, W, 4) UV and normal passes of one size, finite."""
    for name, array in (("uv", uv), ("normal", normal)):
        if array.dtype != np.float32:
            raise AniRenderError(f"The {name} passes must be float32; got {array.dtype}.")
        if array.ndim != 4 or array.shape[-1] != 4 or array.shape[0] < 1:
            raise AniRenderError(f"The {name} passes are (frames, H, W, 4); got {array.shape}.")
        if not np.isfinite(array).all():
            raise AniRenderError(f"The {name} passes contain NaN or infinite values.")
    if uv.shape != normal.shape:
        raise AniRenderError(f"The uv {uv.shape} and normal {normal.shape} passes differ.")
    height, width = uv.shape[1:3]
    if height % 32 or width % 32 or not 0 < height <= 2048 or not 0 < width <= 2048:
        raise AniRenderError(
            f"ANR frames of {width} x {height}: sides must be multiples of 32, at most 2048."
        )
    return np.ascontiguousarray(uv), np.ascontiguousarray(normal)


def parse_uv_box(text: str) -> tuple[float, float, float, float]:
    """ "u0,v0,u1,v1" -> four floats, with a message for the artist when it is not that."""
    try:
        box = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise AniRenderError(f"Cannot read the UV rectangle {text!r}; write u0,v0,u1,v1.") from None
    if len(box) != 4:
        raise AniRenderError(f"The UV rectangle {text!r} needs four numbers u0,v0,u1,v1.")
    return box


def swap_anr_file(model_path, out, target: int, source: int, box=None, mask=None) -> str:
    """Read an ANR file, swap a UV region of ``source``'s texture into ``target``'s (a box
    "u0,v0,u1,v1" or 4-tuple, or a mask image path: white = swap, row 0 at V = 1), write
    the result to ``out``. Shared by ``anirender anr swap`` and Blender's operator.
    Returns a one-line summary."""
    if isinstance(box, str):
        box = parse_uv_box(box) if box else None
    picked = None
    if mask:
        from PIL import Image

        try:
            picked = np.asarray(Image.open(mask).convert("L")) > 127
        except OSError as exc:
            raise AniRenderError(f"Cannot read the UV mask {mask}: {exc}") from None
    model = read_anr(model_path)
    swap_texture_region(model, target, source, box=box, mask=picked)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_anr(model, out, metadata={"swapped": f"{source}->{target}"})
    names = model.config.names()
    return f"{names[target]} now wears {names[source]}'s texels there: {out}"
