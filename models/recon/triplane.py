"""Triplane radiance fields (this project's own layout, PAniC-3D's decoder): three
feature planes decoded by a small MLP into density and colour, sampled on a grid to mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import LEVEL_DENSITY, PANIC_BOX, PortraitVolume, _require
from .memory import check_memory

TRIPLANE_DECODER_KEYS = {
    "decoder.fc1.weight": (64, 32),
    "decoder.fc1.bias": (64,),
    "decoder.fc2.weight": (33, 64),
    "decoder.fc2.bias": (33,),
}


def read_triplane_tensors(path) -> dict:
    """Load a triplane file into numpy arrays (no code runs: safetensors or npz)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
        else:
            with np.load(path, allow_pickle=False) as npz:
                tensors = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise AniRenderError(f"{path.name}: not a readable triplane file ({exc}).") from None
    planes = tensors.get("planes")
    _require(
        planes is not None and planes.ndim == 4 and planes.shape[0] == 3 and planes.shape[1] == 32,
        f"{path.name}: 'planes' has shape {getattr(planes, 'shape', None)}; expected "
        "(3, 32, R, R).",
    )
    for key, shape in TRIPLANE_DECODER_KEYS.items():
        _require(key in tensors, f"{path.name}: missing decoder tensor {key!r}.")
        _require(
            tuple(tensors[key].shape) == shape,
            f"{path.name}: {key} has shape {tuple(tensors[key].shape)}, expected {shape}.",
        )
    for key, value in tensors.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise AniRenderError(f"{path.name}: {key} contains NaN or infinity.")
    return tensors


class TriplaneField:
    """The triplane decoder in torch: world points -> (density, rgb)."""

    def __init__(self, tensors: dict):
        import torch

        self.torch = torch
        self.planes = torch.from_numpy(np.asarray(tensors["planes"], dtype=np.float32))
        self.w1 = torch.from_numpy(np.asarray(tensors["decoder.fc1.weight"], np.float32))
        self.b1 = torch.from_numpy(np.asarray(tensors["decoder.fc1.bias"], np.float32))
        self.w2 = torch.from_numpy(np.asarray(tensors["decoder.fc2.weight"], np.float32))
        self.b2 = torch.from_numpy(np.asarray(tensors["decoder.fc2.bias"], np.float32))
        box = tensors.get("box_size")
        self.box = float(np.asarray(box).reshape(-1)[0]) if box is not None else PANIC_BOX
        level = tensors.get("level")
        self.level = float(np.asarray(level).reshape(-1)[0]) if level is not None else LEVEL_DENSITY

    def decode(self, points, chunk=1 << 17):
        """(N,3) world points -> density (N,), rgb (N,3), as numpy, in chunks."""
        torch = self.torch
        density = np.empty(len(points), np.float32)
        rgb = np.empty((len(points), 3), np.float32)
        with torch.no_grad():
            for start in range(0, len(points), chunk):
                p = torch.from_numpy(np.asarray(points[start : start + chunk], np.float32))
                out = decode_triplane(self.planes, self.w1, self.b1, self.w2, self.b2, p, self.box)
                density[start : start + chunk] = out[0].numpy()
                rgb[start : start + chunk] = out[1].numpy()
        return density, rgb

    def grid(self, resolution):
        """Sample density on a resolution^3 grid over the cube; returns a PortraitVolume."""
        n = int(resolution)
        axis = np.linspace(-self.box / 2, self.box / 2, n, dtype=np.float32)
        density = np.empty((n, n, n), np.float32)
        yz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        for i, x in enumerate(axis):  # one x slice at a time keeps memory flat
            points = np.concatenate([np.full((len(yz), 1), x, np.float32), yz], axis=1)
            density[i] = self.decode(points)[0].reshape(n, n)
        spacing = np.full(3, self.box / (n - 1))
        return PortraitVolume(
            density,
            np.full(3, -self.box / 2),
            spacing,
            self.level,
            "triplane",
            color_at=lambda pts: self.decode(pts)[1],
            box=(np.zeros(3), self.box),
        )


def decode_triplane(planes, w1, b1, w2, b2, points, box):
    """Differentiable triplane decode (torch tensors): returns density (N,), rgb (N,3)."""
    import torch
    import torch.nn.functional as F

    q = points / (box / 2)
    coords = torch.stack([q[:, [0, 1]], q[:, [0, 2]], q[:, [2, 1]]])  # (3, N, 2)
    samples = F.grid_sample(
        planes, coords[:, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (3, C, N, 1)
    features = samples[..., 0].mean(0).T  # (N, C)
    hidden = F.softplus(features @ w1.T + b1)
    out = hidden @ w2.T + b2
    density = F.softplus(out[:, 0] - 1.0)
    rgb = torch.sigmoid(out[:, 1:4])
    return density, rgb


def read_triplane(path, resolution=256, memory_limit=None) -> PortraitVolume:
    path = Path(path)
    check_memory(path.name, (resolution,) * 3, 1, memory_limit)
    return TriplaneField(read_triplane_tensors(path)).grid(resolution)
