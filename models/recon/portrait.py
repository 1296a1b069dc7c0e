"""Portrait reconstructions -> clean meshes in Blender's frame, sized for a character.

The one entry point for volumes and PAniC pickles is ``prepare_portrait(path, options)``;
mesh files (OBJ/PLY/GLB) are imported by Blender (``addon.portrait.meshes``) and then pass
through ``clean_up`` and ``fit_to_size`` like everything else.

Frames, fixed once:
- Source frame (all readers, all files this project writes): +y up, the face looks
  toward +z, +x is image right.
- Blender frame: Z up, the face looks toward -Y: (x, y, z) -> (x, -z, y). That is a
  rotation (determinant +1), so triangle winding and outward normals are kept.
- Size: with ``head_width_cm`` > 0 the mesh is scaled so its width along X (ear to ear,
  ears included) is that many centimetres, and moved so the bottom centre of its bounding
  box sits at the object origin (where a head bone's head goes). With 0, file units and
  positions are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import MESH_FILE_KINDS, PortraitFormat, PortraitMesh
from .density import read_density_grid
from .detect import detect_portrait_format
from .eg3d import read_eg3d_mrc
from .meshing import decimate_to_budget, keep_largest_piece, smooth_taubin, volume_to_surface
from .panic import read_panic_pickle
from .splat import read_splat_ply
from .triplane import read_triplane

SOURCE_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass
class PortraitImportOptions:
    level: float | None = None  # None: the format's own surface level
    head_width_cm: float = 25.0  # 0 keeps file units
    face_budget: int = 0  # 0 keeps every triangle
    colors: bool = True
    smooth_iterations: int = 0
    downsample: int = 1  # mesh every n-th voxel of large volumes
    grid_resolution: int = 256  # triplane sampling grid
    box_size: float = 0.0  # EG3D cube side; 0 = 1.0 (FFHQ)
    keep_largest: bool = True
    memory_limit: int | None = None  # bytes; None = what the machine has free


_PACKAGES = {  # format -> (import name, pip name) it needs beyond numpy
    "eg3d_mrc": [("skimage", "scikit-image"), ("scipy", "scipy"), ("mrcfile", "mrcfile")],
    "density_grid": [("skimage", "scikit-image"), ("scipy", "scipy")],
    "triplane": [("skimage", "scikit-image"), ("scipy", "scipy"), ("torch", "torch")],
    "mesh": [("scipy", "scipy")],
}


def require_packages(kind: str):
    """Name the missing package and how to get it (Blender ships only numpy)."""
    import importlib.util
    import sys

    needed = _PACKAGES.get(kind, []) + (
        [("safetensors", "safetensors")] if kind == "triplane" else []
    )
    missing = [pip for module, pip in needed if importlib.util.find_spec(module) is None]
    if missing:
        raise AniRenderError(
            f"Importing this reconstruction needs {', '.join(missing)}, which this Python does "
            f"not have. Install with: {sys.executable} -m pip install {' '.join(missing)} "
            "(or run `anirender import portrait` from the AniRender environment)."
        )


def describe_portrait(path) -> str:
    """One line for the file browser: what the importer sees in this file."""
    try:
        return detect_portrait_format(path).description
    except AniRenderError as exc:
        return str(exc)


def read_portrait_source(path, fmt: PortraitFormat, options: PortraitImportOptions):
    """Any non-mesh-file format -> PortraitMesh in the source frame (not yet cleaned)."""
    if options.downsample < 1:
        raise AniRenderError("Downsample must be 1 or more.")
    require_packages(fmt.kind)
    if fmt.kind == "panic_pickle":
        return read_panic_pickle(path)
    if fmt.kind == "splat_ply":
        return read_splat_ply(path)
    if fmt.kind == "eg3d_mrc":
        volume = read_eg3d_mrc(path, options.box_size, options.downsample, options.memory_limit)
    elif fmt.kind == "density_grid":
        volume = read_density_grid(path, options.downsample, options.memory_limit)
    elif fmt.kind == "triplane":
        volume = read_triplane(path, options.grid_resolution, options.memory_limit)
    else:
        raise AniRenderError(f"{Path(path).name}: {fmt.description} is read by Blender.")
    if not options.colors:
        volume.colors, volume.color_at = None, None
    step = 1
    if options.face_budget:
        # a coarser marching-cubes step is the cleanest decimation a volume can get
        # a step-2 pass is ~8x cheaper and has ~1/4 of the full triangle count
        _, faces, _ = volume_to_surface(
            replace(volume, colors=None, color_at=None), options.level, 2
        )
        step = max(1, int(np.sqrt(4 * len(faces) / options.face_budget)))
    verts, faces, colors = volume_to_surface(volume, options.level, step)
    return PortraitMesh(verts, faces, volume.source, colors, box=volume.box)


def clean_up(mesh: PortraitMesh, options: PortraitImportOptions) -> PortraitMesh:
    """Largest piece, smoothing, decimation to the face budget (any frame)."""
    require_packages("mesh")
    verts, faces, colors = mesh.verts, mesh.faces, mesh.colors
    if not options.colors:
        colors = None
    if len(faces):
        if options.keep_largest:
            verts, faces, colors = keep_largest_piece(verts, faces, colors)
        verts = smooth_taubin(verts, faces, options.smooth_iterations)
        verts, faces, colors = decimate_to_budget(verts, faces, colors, options.face_budget)
    return replace(mesh, verts=verts, faces=faces, colors=colors)


def source_to_blender(mesh: PortraitMesh) -> PortraitMesh:
    box = None
    if mesh.box is not None:
        box = (SOURCE_TO_BLENDER @ np.asarray(mesh.box[0], float), mesh.box[1])
    return replace(mesh, verts=mesh.verts @ SOURCE_TO_BLENDER.T, box=box)


def blender_to_source(verts: np.ndarray) -> np.ndarray:
    return verts @ SOURCE_TO_BLENDER  # the inverse of a rotation is its transpose


def fit_to_size(mesh: PortraitMesh, head_width_cm: float) -> PortraitMesh:
    """Scale to the head width (metres, Blender frame) with the bottom centre at 0."""
    if not head_width_cm or head_width_cm <= 0 or len(mesh.verts) == 0:
        return mesh
    low, high = mesh.verts.min(0), mesh.verts.max(0)
    width = float(high[0] - low[0])
    if width <= 0:
        raise AniRenderError(f"{mesh.source} mesh has no width; cannot size it.")
    scale = head_width_cm / 100.0 / width
    anchor = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    box = None
    if mesh.box is not None:
        box = ((np.asarray(mesh.box[0]) - anchor) * scale, mesh.box[1] * scale)
    return replace(mesh, verts=(mesh.verts - anchor) * scale, box=box)


def prepare_portrait(path, options: PortraitImportOptions | None = None):
    """Read, mesh, clean, turn and size a reconstruction that is not a mesh file.

    Returns (PortraitFormat, PortraitMesh in the Blender frame)."""
    options = options or PortraitImportOptions()
    path = Path(path)
    fmt = detect_portrait_format(path)
    if fmt.kind in MESH_FILE_KINDS:
        raise AniRenderError(f"{path.name}: {fmt.description} must be read through Blender.")
    mesh = finish_portrait(path, read_portrait_source(path, fmt, options), options)
    return fmt, mesh


def finish_portrait(path, mesh: PortraitMesh, options: PortraitImportOptions) -> PortraitMesh:
    """The second half of ``prepare_portrait`` (clean, turn, size); a separate stage so
    Blender's import job can check for Esc between reading and cleaning."""
    mesh = clean_up(mesh, options)
    if len(mesh.verts) == 0:
        raise AniRenderError(f"{Path(path).name}: nothing left to import (no vertices).")
    mesh = fit_to_size(source_to_blender(mesh), options.head_width_cm)
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(mesh.verts).all())
    if not finite:  # finite but extreme input overflowed on the way (1e308 * a scale)
        raise AniRenderError(
            f"{Path(path).name}: its coordinates are too large to import (they overflow "
            "when centred and scaled); a reconstruction spans a few units. The file is "
            "corrupted or not a reconstruction."
        )
    return mesh


# --------------------------------------------------------------------- writing files
# Files are written in the source frame (y up, facing +z), the frame of glTF and of
# Blender's OBJ exporter defaults, so Blender's importers bring them back upright.
