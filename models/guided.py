"""The UDP-guided shader: a character sheet whose views carry their UDPs, painted into a pose.

Where the image-only CoNR has to guess where each sheet pixel sits on the body, a sheet
rendered (or painted over) from the scene's own character knows it exactly. So the
correspondences are not learned: every target pixel looks up the ``k`` sheet pixels whose
canonical positions (UDP XYZ) are nearest to its own, over all views at once (an exact
KD-tree search, ``scipy.spatial.cKDTree``). Each candidate brings its colour and its
confidences: its distance in canonical space (in target pixels: far means no view sees
the point), its offset, whether it lies on its view's silhouette and how foreshortened
its view saw the surface there.

The network then (1) weighs the candidates per pixel (a small MLP over each candidate's
colour and confidences, softmax over the ``k``: the learned view/candidate blend) and
(2) refines the blended image with a residual CNN that sees the target UDP, the blend,
the median of the candidates and their spread: it keeps edges, lines and patterns that
the blend would smear and fills what no view sees from its neighbours. It outputs
straight colour and alpha, answered premultiplied.

Inputs are the target's UDP only (no normal or depth pass). Any number of views (two or
more), any working size (trained at 256, used at 256 and 512): distances are measured in
the target's own pixel spacing, so the features do not depend on the size.

API (numpy in, numpy out, like ``models.conr``)::

    shader = GuidedShader.from_safetensors(path)          # or load_guided(name_or_path)
    sheet = shader.encode_sheet(images, udps)             # uint8 (V,H,W,4), float (V,H,W,4)
    rgba = shader.render(sheet, udp)                      # (B,S,S,4) -> premultiplied (B,S,S,4)
    full = shade_in_frame(lambda u: shader.render(sheet, u), frame_udp, 256)  # framing.py

``frame_sheet_view`` frames a full-size sheet image and its UDP together (the official
centred square), as ``anirender dataset conr`` frames its samples.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AniRenderError
from .execution import TunedShader
from .framing import frame_sample
from .udp import check_udp
from .weight_files import read_weights, write_weights
from .weights import resolve_weights

SAFETENSORS_FORMAT = "anirender-guided-1"
#: the guided shader trained by ``anirender train guided`` and shipped (see BENCHMARKS.md)
SHIPPED_GUIDED = Path(__file__).resolve().parents[1] / "assets" / "guided.safetensors"
#: a sheet pixel or target pixel is the character where V exceeds this
OCCUPIED = 0.5
MIN_VIEWS = 2
#: per-candidate features (after the colour's 4): distance, offset xyz, silhouette,
#: view foreshortening, colour minus the candidates' median (3)
CANDIDATE_FEATURES = 9
#: per-target-pixel dense features given to the refinement besides the blend
TARGET_FEATURES = 4 + 1 + 1  # UDP, nearest distance, foreshortening


@dataclass
class GuidedConfig:
    k: int = 8
    blend_hidden: int = 16
    width: int = 16  # full-resolution channels of the refinement
    half: int = 32  # half-resolution channels
    inner: int = 48  # quarter-resolution channels
    blocks: int = 2  # residual blocks at quarter resolution

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GuidedConfig:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ------------------------------------------------------------------------- the geometry


def surface_features(udp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of an (H, W, 4) UDP: (silhouette, log pixel area), float32 (H, W) each.

    ``silhouette`` is 1 where a 4-neighbour is not the character (colours there are mixed
    with the background); the area is that of the canonical surface one pixel covers
    (central differences of XYZ), the log taken relative to the frame's median so it
    measures foreshortening, not framing. Also returns nothing special for empty pixels.
    """
    occupied = udp[..., 3] > OCCUPIED
    padded = np.pad(occupied, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    silhouette = (occupied & ~inner).astype(np.float32)
    xyz = udp[..., :3].astype(np.float32)
    gx = np.zeros_like(xyz)
    gy = np.zeros_like(xyz)
    gx[:, 1:-1] = (xyz[:, 2:] - xyz[:, :-2]) * 0.5
    gy[1:-1] = (xyz[2:] - xyz[:-2]) * 0.5
    # only across the character: a difference with a background neighbour means nothing
    okx = np.zeros_like(occupied)
    oky = np.zeros_like(occupied)
    okx[:, 1:-1] = occupied[:, 2:] & occupied[:, :-2]
    oky[1:-1] = occupied[2:] & occupied[:-2]
    area = np.linalg.norm(np.cross(gx, gy), axis=-1)
    good = occupied & okx & oky & (area > 0)
    log_area = np.zeros(occupied.shape, np.float32)
    if good.any():
        values = np.log(area[good])
        log_area[good] = np.clip(values - np.median(values), -3.0, 3.0)
    return silhouette, log_area


def pixel_spacing(udp: np.ndarray) -> float:
    """Typical canonical distance between neighbouring character pixels of a UDP frame."""
    occupied = udp[..., 3] > OCCUPIED
    both = occupied[:, 1:] & occupied[:, :-1]
    if not both.any():
        return 1.0 / max(udp.shape[0], 1)
    steps = np.linalg.norm(udp[:, 1:, :3] - udp[:, :-1, :3], axis=-1)[both]
    return float(max(np.median(steps), 1e-5))


@dataclass
class GuidedSheet:
    """A sheet ready for shading: its character pixels as points in canonical space."""

    views: int
    size: int  # side of the sheet views
    tree: object  # scipy.spatial.cKDTree over the points' XYZ
    xyz: np.ndarray  # (N, 3)
    colours: np.ndarray  # (N, 4) straight RGBA in [0, 1]
    silhouette: np.ndarray  # (N,)
    log_area: np.ndarray  # (N,)
    view: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,)


def check_sheet(images, udps) -> tuple[np.ndarray, np.ndarray]:
    """The sheet's images (uint8 (V, H, W, 4) straight) and UDPs (float (V, H, W, 4)),
    checked for the guided shader, with messages for the artist."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 4:
        raise AniRenderError(
            f"Sheet images must be 8-bit RGBA (views, H, W, 4); got {images.dtype} {images.shape}."
        )
    udps = check_udp(udps, name="The sheet UDPs")
    if len(images) != len(udps):
        raise AniRenderError(
            f"The sheet has {len(images)} images but {len(udps)} UDPs; every view needs its own."
        )
    if images.shape[1:3] != udps.shape[1:3]:
        raise AniRenderError(
            f"The sheet images are {images.shape[2]}x{images.shape[1]} but their UDPs are "
            f"{udps.shape[2]}x{udps.shape[1]}; a view and its UDP must have the same size "
            "(render them together, or frame both the same way)."
        )
    if len(images) < MIN_VIEWS:
        raise AniRenderError(
            f"The sheet has {len(images)} view; one view shows only one side of the character. "
            f"Add at least {MIN_VIEWS} views (front and back, better also the sides)."
        )
    empty = [i + 1 for i in range(len(udps)) if not (udps[i, ..., 3] > OCCUPIED).any()]
    if empty:
        raise AniRenderError(
            f"Sheet view {', '.join(map(str, empty))}: its UDP has no character pixel "
            "(V is 0 everywhere). Render the view's UDP with the character in frame."
        )
    return images, udps


def index_sheet(images, udps) -> GuidedSheet:
    """Checked sheet -> ``GuidedSheet`` (the KD-tree is built once per sheet)."""
    from scipy.spatial import cKDTree

    images, udps = check_sheet(images, udps)
    xyz, colours, silhouette, log_area, view = [], [], [], [], []
    for v in range(len(images)):
        occupied = udps[v, ..., 3] > OCCUPIED
        sil, area = surface_features(udps[v])
        xyz.append(udps[v][occupied][:, :3])
        colours.append(images[v][occupied].astype(np.float32) / 255.0)
        silhouette.append(sil[occupied])
        log_area.append(area[occupied])
        view.append(np.full(int(occupied.sum()), v, np.int64))
    xyz = np.concatenate(xyz).astype(np.float32)
    return GuidedSheet(
        views=len(images),
        size=images.shape[1],
        tree=cKDTree(xyz),
        xyz=xyz,
        colours=np.concatenate(colours),
        silhouette=np.concatenate(silhouette),
        log_area=np.concatenate(log_area),
        view=np.concatenate(view),
    )


@dataclass
class Guide:
    """The correspondences of a batch of target frames, as the network takes them."""

    dense: torch.Tensor  # (B, TARGET_FEATURES, H, W)
    pixels: torch.Tensor  # (N,) long: flat index into B*H*W of the character pixels
    colours: torch.Tensor  # (N, k, 4) straight RGBA of the candidates
    features: torch.Tensor  # (N, k, CANDIDATE_FEATURES)

    def to(self, device) -> Guide:
        return Guide(
            *(getattr(self, f).to(device) for f in ("dense", "pixels", "colours", "features"))
        )


def find_candidates(sheet: GuidedSheet, udp: np.ndarray, k: int, window=None) -> dict:
    """Exact k-nearest sheet pixels in canonical space for one (H, W, 4) target UDP.

    ``window`` (top, left, side): look up only the pixels of that square (training crops);
    the answer's ``pixels`` still index the whole frame."""
    h, w = udp.shape[:2]
    occupied = udp[..., 3] > OCCUPIED
    if window is not None:
        top, left, side = window
        inside = np.zeros_like(occupied)
        inside[top : top + side, left : left + side] = True
        occupied = occupied & inside
    spacing = pixel_spacing(udp)
    _, log_area = surface_features(udp)
    dense = np.zeros((TARGET_FEATURES, h, w), np.float32)
    dense[:4] = udp.transpose(2, 0, 1)
    dense[5] = log_area
    pixels = np.flatnonzero(occupied.ravel())
    kk = min(k, len(sheet.xyz))
    if pixels.size == 0:
        return {
            "dense": dense,
            "pixels": pixels,
            "colours": np.zeros((0, k, 4), np.float32),
            "features": np.zeros((0, k, CANDIDATE_FEATURES), np.float32),
        }
    points = udp.reshape(-1, 4)[pixels, :3]
    distance, index = sheet.tree.query(points, k=kk, workers=-1)  # every core; exact
    if kk == 1:
        distance, index = distance[:, None], index[:, None]
    if kk < k:  # a tiny sheet: repeat the farthest candidate
        distance = np.concatenate([distance, np.repeat(distance[:, -1:], k - kk, 1)], 1)
        index = np.concatenate([index, np.repeat(index[:, -1:], k - kk, 1)], 1)
    colours = sheet.colours[index]  # (N, k, 4)
    scaled = (distance / spacing).astype(np.float32)
    offset = (sheet.xyz[index] - points[:, None]) / spacing
    median = np.median(colours[..., :3], axis=1, keepdims=True)
    features = np.concatenate(
        [
            np.log1p(scaled)[..., None],
            np.clip(offset, -8, 8),
            sheet.silhouette[index][..., None],
            sheet.log_area[index][..., None],
            colours[..., :3] - median,
        ],
        axis=-1,
    ).astype(np.float32)
    dense[4].flat[pixels] = np.log1p(scaled[:, 0])
    return {"dense": dense, "pixels": pixels, "colours": colours, "features": features}


def make_guide(sheet: GuidedSheet, udps: np.ndarray, k: int) -> Guide:
    """The guide of a (B, H, W, 4) batch of target UDPs."""
    parts = [find_candidates(sheet, u, k) for u in udps]
    plane = udps.shape[1] * udps.shape[2]
    return guide_from_parts(parts, plane)


def guide_from_parts(parts: list[dict], plane: int) -> Guide:
    return Guide(
        dense=torch.from_numpy(np.stack([p["dense"] for p in parts])),
        pixels=torch.from_numpy(
            np.concatenate([p["pixels"] + i * plane for i, p in enumerate(parts)])
        ).long(),
        colours=torch.from_numpy(np.concatenate([p["colours"] for p in parts])),
        features=torch.from_numpy(np.concatenate([p["features"] for p in parts])),
    )


# -------------------------------------------------------------------------- the network


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class _Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.b(F.relu(self.a(x)))


class GuidedShader(TunedShader, nn.Module):
    """Candidate blend + residual refinement; see the module's docstring."""

    def __init__(self, config: GuidedConfig | None = None):
        super().__init__()
        self.config = config = config or GuidedConfig()
        c_in = 4 + CANDIDATE_FEATURES
        self.blend = nn.Sequential(
            nn.Linear(c_in, config.blend_hidden),
            nn.SiLU(),
            nn.Linear(config.blend_hidden, config.blend_hidden),
            nn.SiLU(),
            nn.Linear(config.blend_hidden, 1),
        )
        # refinement input: blend RGBA (4), median RGB (3), spread (1), target features
        r_in = 4 + 3 + 1 + TARGET_FEATURES
        self.stem = nn.Conv2d(r_in, config.width, 3, padding=1)
        self.down1 = nn.Conv2d(config.width, config.half, 3, stride=2, padding=1)
        self.block1 = _Block(config.half)
        self.down2 = nn.Conv2d(config.half, config.inner, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*(_Block(config.inner) for _ in range(config.blocks)))
        self.up2 = nn.Conv2d(config.inner, config.half, 1)
        self.fuse2 = nn.Conv2d(config.half, config.half, 3, padding=1)
        self.up1 = nn.Conv2d(config.half, config.width, 1)
        self.fuse1 = nn.Conv2d(config.width, config.width, 3, padding=1)
        self.head = nn.Conv2d(config.width, 4, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_safetensors(cls, path, device="cpu") -> GuidedShader:
        path = Path(path)
        meta, tensors = read_weights(path)
        if meta.get("format") != SAFETENSORS_FORMAT:
            raise AniRenderError(
                f"{path} holds no guided-shader weights (format {meta.get('format')!r}); "
                "give weights made by `anirender train guided`."
            )
        model = cls(GuidedConfig.from_json(meta.get("config", "{}")))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise AniRenderError(
                f"{path} does not fit the guided shader (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})."
            )
        model.metadata = meta
        return model.to(device).eval()

    def save_safetensors(self, path, metadata: dict | None = None) -> None:
        """Write the weights atomically, the config in the metadata."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": SAFETENSORS_FORMAT, "config": self.config.to_json()}
        write_weights(tensors, path, {**meta, **(metadata or {})})

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # --------------------------------------------------------------------------- forward
    def forward(self, guide: Guide) -> torch.Tensor:
        """Guide -> premultiplied RGBA (B, 4, H, W)."""
        dense = guide.dense
        b, _, h, w = dense.shape
        colours, features = guide.colours, guide.features
        logits = self.blend(torch.cat([colours, features], -1)).squeeze(-1)  # (N, k)
        weights = torch.softmax(logits, -1)
        blended = (weights[..., None] * colours).sum(1)  # (N, 4)
        median = colours[..., :3].median(1).values
        spread = (colours[..., :3] - median[:, None]).abs().mean((1, 2))
        sparse = torch.cat([blended, median, spread[:, None]], -1)  # (N, 8)
        canvas = dense.new_zeros(b * h * w, sparse.shape[1])
        canvas[guide.pixels] = sparse
        canvas = canvas.view(b, h, w, -1).permute(0, 3, 1, 2)
        x = torch.cat([canvas, dense], 1).contiguous(memory_format=self.memory_format)
        full = F.relu(self.stem(x))
        half = self.block1(F.relu(self.down1(full)))
        inner = self.blocks(F.relu(self.down2(half)))
        half = half + self.up2(_upsample(inner, half))
        half = F.relu(self.fuse2(F.relu(half)))
        full = full + self.up1(_upsample(half, full))
        out = self.head(F.relu(self.fuse1(F.relu(full))))
        occupied = dense[:, 3:4]
        rgb = (canvas[:, :3] + out[:, :3]).clamp(0.0, 1.0)
        # alpha: the blend's where the target is the character, refined at the edges
        base = occupied * canvas[:, 3:4].clamp(0.0, 1.0)
        logit = torch.logit(base.clamp(1e-3, 1.0 - 1e-3)) + 4.0 * out[:, 3:4]
        alpha = torch.sigmoid(logit)
        return torch.cat([rgb * alpha, alpha], 1)

    # ------------------------------------------------------------------------- numpy API
    def encode_sheet(self, images, udps) -> GuidedSheet:
        """uint8 (V, H, W, 4) straight RGBA views + float (V, H, W, 4) their UDPs."""
        return index_sheet(images, udps)

    @torch.inference_mode()
    def render(self, sheet: GuidedSheet, udp) -> np.ndarray:
        """float (B, S, S, 4) target UDPs (or one (S, S, 4)) -> premultiplied float32
        RGBA of the same shape; empty target frames are transparent.

        The first call for a size times the ways to run (``models.execution``)."""
        udp = check_udp(udp, name="The target UDP")
        probe = udp[:1]
        execution = self.tuned(
            "guided shader",
            (udp.shape[1], sheet.views),
            lambda frames: self._render(sheet, np.repeat(probe, frames, axis=0), frames),
        )
        return self._render(sheet, udp, execution.batch)

    @torch.inference_mode()
    def _render(self, sheet: GuidedSheet, udp: np.ndarray, step: int) -> np.ndarray:
        out = np.empty(udp.shape, dtype=np.float32)
        for start in range(0, len(udp), step):
            guide = make_guide(sheet, udp[start : start + step], self.config.k).to(self.device)
            with self.autocast():
                rgba = self(guide)
            out[start : start + step] = rgba.permute(0, 2, 3, 1).float().cpu().numpy()
        return out


def frame_sheet_view(image: np.ndarray, udp: np.ndarray, size: int, name: str = "sheet view"):
    """A full-size sheet image and its UDP, framed together (the official centred square
    around the character) and resized to ``size``: what ``encode_sheet`` takes."""
    image, udp = np.asarray(image), np.asarray(udp)
    if image.shape[:2] != udp.shape[:2]:
        raise AniRenderError(
            f"{name}: the image is {image.shape[1]}x{image.shape[0]} but its UDP is "
            f"{udp.shape[1]}x{udp.shape[0]}; render them together at one size."
        )
    if not (udp[..., 3] > OCCUPIED).any():
        raise AniRenderError(
            f"{name}: its UDP has no character pixel (V is 0 everywhere); render the view's "
            "UDP with the character in frame."
        )
    return frame_sample(image, udp.astype(np.float32), size)


def load_guided(name_or_path=None, device="cpu") -> GuidedShader:
    """The guided shader from a .safetensors path or store name; default: the shipped one."""
    if not name_or_path:
        if not SHIPPED_GUIDED.is_file():
            raise AniRenderError(
                f"The shipped guided shader is missing ({SHIPPED_GUIDED}); reinstall AniRender "
                "or train one with `anirender train guided`."
            )
        return GuidedShader.from_safetensors(SHIPPED_GUIDED, device=device)
    path = resolve_weights(name_or_path)
    if path.is_dir():
        raise AniRenderError(f"{path} is a folder; the guided shader is one .safetensors file.")
    return GuidedShader.from_safetensors(path, device=device)
