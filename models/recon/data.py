"""What every reconstruction reader returns: a ``PortraitVolume`` (a density grid to mesh)
or a ``PortraitMesh`` (triangles), in the source frame (+y up, facing +z, +x image
right), and the surface levels of each field kind."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import AniRenderError

# surface levels per field kind (see module docstring)
LEVEL_SIGMA = 10.0


LEVEL_DENSITY = math.log(2.0)  # softplus(sigma - 1) where PAniC's alpha = 1 - exp(-d) = 0.5


LEVEL_ALPHA = 0.5


PANIC_BOX = 0.7


MESH_FILE_KINDS = ("obj", "ply_mesh", "gltf")


@dataclass
class PortraitVolume:
    """A scalar field on a regular grid; surface where ``density == level``.

    World position of voxel index (i, j, k) is ``origin + (i, j, k) * spacing``; a
    negative spacing means that array axis runs backwards in the world.
    """

    density: np.ndarray
    origin: np.ndarray
    spacing: np.ndarray
    level: float
    source: str
    colors: np.ndarray | None = None  # (X, Y, Z, 3) in [0, 1], same grid
    color_at: object = None  # callable(world points (N,3)) -> (N,3) colours, for triplanes
    box: tuple | None = None  # (centre (3,), side) of the cube the portrait covers

    def index_to_world(self, index_points: np.ndarray) -> np.ndarray:
        return self.origin + index_points * self.spacing


@dataclass
class PortraitMesh:
    verts: np.ndarray  # (V, 3) float
    faces: np.ndarray  # (F, 3) int; (0, 3) for point clouds
    source: str
    colors: np.ndarray | None = None  # (V, 3) in [0, 1]
    box: tuple | None = None
    notes: list = field(default_factory=list)


@dataclass
class PortraitFormat:
    kind: str  # panic_pickle, eg3d_mrc, density_grid, triplane, obj, ply_mesh, gltf, splat_ply
    description: str


def _require(condition, message):
    if not condition:
        raise AniRenderError(message)


def _check_finite_volume(name, volume, chunk=1 << 24):
    flat = volume.reshape(-1)
    bad = 0
    for start in range(0, flat.size, chunk):
        bad += int(flat.size and np.count_nonzero(~np.isfinite(flat[start : start + chunk])))
    if bad:
        raise AniRenderError(
            f"{name}: {bad} voxels are NaN or infinite; the reconstruction is corrupted. "
            "Re-export it (NaN usually means the network diverged)."
        )
