"""Which kind of reconstruction a file holds, by content first, then extension; and the
conventions every reader of ``models.recon`` follows (no bpy).

Every reader returns either a ``PortraitVolume`` (a density grid to mesh) or a
``PortraitMesh`` (triangles already made), both in the *source frame* shared by PAniC-3D,
EG3D and the single-image reconstructors: +y up, the character faces +z, +x is image
right. ``models.recon.portrait`` turns them into Blender's frame. Mesh files (OBJ, PLY with
faces, GLB) are read by Blender's own importers (``addon.portrait.meshes``); this module
only detects them.

Conventions per format, fixed here once:

PAniC-3D ``front.pkl``
    A pickled ``addict.Dict`` with ``verts`` (V,3), ``faces`` (F,3), ``colors`` (V,3) in
    [0,1]. Vertices are ``voxel_index / 256 * 0.7 - 0.35`` of a grid that was flipped along
    x, so x is mirrored: we negate x and reverse every triangle to keep normals outward.
    Read with ``load_pickle_safely``: only containers and numpy arrays are admitted.
EG3D ``.mrc``
    Raw sigma, float32, indexed [x, y, z] and flipped along axis 0, over a cube of side
    ``box_size`` (1.0 for FFHQ, not stored in the file) centred at the origin; voxel size
    ``box / (N - 1)``; the border is -1000. Surface at sigma = 10.
Density grid ``.npy`` / ``.npz`` (+ optional ``<name>.json`` sidecar)
    ``.npy``: the density array. ``.npz``: ``density`` and optional ``colors``
    (X,Y,Z,3) in [0,1]. Sidecar keys, all optional: ``box_size`` (cube side, default 1.0),
    ``level``, ``axis_order`` (how the array axes map to world axes, default ``"xyz"``;
    e.g. ``"zyx"`` for arrays indexed [z, y, x]), ``flip`` (list of world axes stored
    reversed, e.g. ``["x"]`` for EG3D-style flips), ``field``: ``"density"`` (default,
    PAniC's softplus(sigma - 1), surface at ln 2 = alpha 0.5), ``"sigma"`` (surface 10),
    ``"alpha"`` (occupancy in [0,1], surface 0.5).
Triplane ``.safetensors`` / ``.npz`` (this project's own layout)
    ``planes`` (3, 32, R, R) float: the xy, xz and zy feature planes; a point p in the cube
    of side ``box_size`` samples plane 0 at (x, y), plane 1 at (x, z), plane 2 at (z, y),
    each coordinate divided by box_size/2 (grid_sample, bilinear, align_corners=False,
    first coordinate = plane width). Decoder: ``decoder.fc1.weight`` (64, 32),
    ``decoder.fc1.bias`` (64), ``decoder.fc2.weight`` (33, 64), ``decoder.fc2.bias`` (33),
    applied as ``x @ W.T + b``: mean of the 3 plane samples -> fc1 -> softplus -> fc2.
    Channel 0 is sigma, density = softplus(sigma - 1) (surface ln 2, where sigma = 1);
    colour = sigmoid(channels 1..3). Optional scalars ``box_size`` (default 0.7, PAniC's
    box_warp) and ``level``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ...errors import AniRenderError
from .data import PortraitFormat

EG3D_BOX = 1.0


# --------------------------------------------------------------------- safe pickle


# --------------------------------------------------------------------- helpers


# --------------------------------------------------------------------- detection


def _read_head(path: Path, n=512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _ply_header(path: Path) -> dict:
    """Parse a PLY header: format, elements [(name, count, [(type, name)])], data offset."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise AniRenderError(f"{path.name}: not a PLY file (no 'ply' magic line).")
        elements, fmt = [], None
        while True:
            line = f.readline()
            if not line:
                raise AniRenderError(f"{path.name}: PLY header has no end_header; truncated?")
            words = line.decode("ascii", "replace").split()
            if not words:
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and elements:
                elements[-1][2].append((words[1:-1], words[-1]))
            elif words[0] == "end_header":
                return {"format": fmt, "elements": elements, "offset": f.tell()}


def _is_splat_ply(header) -> bool:
    names = {name for element in header["elements"] for _t, name in element[2]}
    faces = [e for e in header["elements"] if e[0] == "face" and e[1] > 0]
    return not faces and ("f_dc_0" in names or "opacity" in names or "scale_0" in names)


def detect_portrait_format(path) -> PortraitFormat:
    """Name the kind of reconstruction a file holds, by content first, then extension."""
    path = Path(path)
    if not path.is_file():
        raise AniRenderError(f"{path}: no such file.")
    head = _read_head(path)
    ext = path.suffix.lower()
    size_mb = path.stat().st_size / 2**20
    if len(head) >= 212 and head[208:212] == b"MAP ":
        nx, ny, nz = check_mrc_sizes(path)
        return PortraitFormat("eg3d_mrc", f"EG3D density volume (MRC, {nx}x{ny}x{nz})")
    if head.startswith(b"\x93NUMPY"):
        return PortraitFormat("density_grid", f"Density grid (.npy, {_npy_shape_text(path)})")
    if head.startswith(b"PK"):
        return _detect_npz(path)
    if head.startswith(b"ply"):
        header = _ply_header(path)
        counts = {name: count for name, count, _ in header["elements"]}
        if _is_splat_ply(header):
            return PortraitFormat(
                "splat_ply",
                f"Gaussian splat PLY ({counts.get('vertex', 0)} points, no surface): "
                "imports as a point cloud",
            )
        return PortraitFormat(
            "ply_mesh",
            f"PLY mesh ({counts.get('vertex', 0)} vertices, {counts.get('face', 0)} faces)",
        )
    if head.startswith(b"glTF") or ext in (".glb", ".gltf"):
        return PortraitFormat("gltf", f"glTF mesh ({size_mb:.1f} MB)")
    if head[:1] == b"\x80" or ext in (".pkl", ".pickle"):
        return PortraitFormat("panic_pickle", "PAniC-3D marching-cubes pickle (front.pkl)")
    if ext == ".safetensors" or (len(head) > 8 and head[8:9] == b"{"):
        return _detect_safetensors(path)
    if ext == ".obj" or head.lstrip()[:2] in (b"v ", b"# ", b"o ", b"mt", b"g "):
        return PortraitFormat("obj", f"OBJ mesh ({size_mb:.1f} MB)")
    if ext in (".mrc", ".map"):
        raise AniRenderError(f"{path.name}: not an MRC volume (no 'MAP ' stamp); corrupted?")
    raise AniRenderError(
        f"{path.name}: unknown reconstruction format. Expected a PAniC-3D .pkl, EG3D .mrc, "
        ".npy/.npz density grid, triplane .safetensors/.npz, or an .obj/.ply/.glb mesh."
    )


#: bytes per voxel of the MRC modes (0 int8, 1 int16, 2 float32, 3 complex int16,
#: 4 complex float32, 6 uint16, 12 float16)
_MRC_MODE_BYTES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}


def check_mrc_sizes(path: Path) -> tuple[int, int, int]:
    """(nx, ny, nz) of an MRC; refused when its header declares more bytes (extended
    header, voxels) than the file holds, before mrcfile allocates what the header asks."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(1024)
    except OSError as exc:
        raise AniRenderError(f"{path.name}: cannot read the file ({exc.strerror}).") from None
    if len(header) < 1024:
        raise AniRenderError(f"{path.name}: not an MRC volume (shorter than its 1024-byte header).")
    order = ">" if header[212] == 0x11 else "<"  # machine stamp: 0x11 big-endian
    nx, ny, nz, mode = np.frombuffer(header[:16], dtype=f"{order}i4").tolist()
    extended = int(np.frombuffer(header[92:96], dtype=f"{order}i4")[0])
    if extended < 0 or 1024 + extended > size:
        raise AniRenderError(
            f"{path.name}: the MRC header declares a {extended}-byte extended header, but the "
            f"file has {size} bytes. The file is damaged; export it again."
        )
    voxel = _MRC_MODE_BYTES.get(mode)
    if voxel is not None and min(nx, ny, nz) >= 0:
        if 1024 + extended + nx * ny * nz * voxel > size:
            raise AniRenderError(
                f"{path.name}: the MRC header declares a {nx}x{ny}x{nz} volume, more than the "
                f"{size}-byte file holds (it may be truncated). Export it again."
            )
    return nx, ny, nz


def _npy_shape_text(path):
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return f"{'x'.join(map(str, array.shape))} {array.dtype}"
    except Exception:  # noqa: BLE001 - description only
        return "unreadable header"


def _detect_npz(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
    except Exception as exc:  # noqa: BLE001 - any zip/npz failure means the same to the user
        raise AniRenderError(f"{path.name}: not a readable .npz archive ({exc}).") from None
    if "planes" in keys:
        return PortraitFormat("triplane", "Triplane radiance field (.npz)")
    if "density" in keys:
        extra = " with colours" if "colors" in keys else ""
        return PortraitFormat("density_grid", f"Density grid (.npz{extra})")
    raise AniRenderError(
        f"{path.name}: .npz holds {sorted(keys)}; expected 'density' (a grid) or 'planes' "
        "(a triplane)."
    )


def _detect_safetensors(path):
    keys = _safetensors_keys(path)
    if "planes" in keys:
        return PortraitFormat("triplane", "Triplane radiance field (.safetensors)")
    raise AniRenderError(
        f"{path.name}: safetensors file without a 'planes' tensor; not a triplane portrait."
    )


def _safetensors_keys(path):
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 << 20:
                raise ValueError("header too large")
            return set(json.loads(f.read(n))) - {"__metadata__"}
    except (OSError, ValueError, struct.error) as exc:
        raise AniRenderError(f"{path.name}: not a readable safetensors file ({exc}).") from None


# --------------------------------------------------------------------- PAniC-3D


# --------------------------------------------------------------------- EG3D


# --------------------------------------------------------------------- density grids


# --------------------------------------------------------------------- triplanes


# --------------------------------------------------------------------- splat PLY
