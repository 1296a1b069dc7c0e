"""Read portrait reconstructions into plain numpy data (no bpy).

Every reader returns either a ``PortraitVolume`` (a density grid to mesh) or a
``PortraitMesh`` (triangles already made), both in the *source frame* shared by PAniC-3D,
EG3D and the single-image reconstructors: +y up, the character faces +z, +x is image
right. ``models.recon`` turns them into Blender's frame. Mesh files (OBJ, PLY with faces,
GLB) are read by Blender's own importers in ``addon.meshes``; this module only detects them.

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

import io
import json
import math
import os
import pickle
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AniRenderError

# surface levels per field kind (see module docstring)
LEVEL_SIGMA = 10.0
LEVEL_DENSITY = math.log(2.0)  # softplus(sigma - 1) where PAniC's alpha = 1 - exp(-d) = 0.5
LEVEL_ALPHA = 0.5
PANIC_BOX = 0.7
EG3D_BOX = 1.0

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


# --------------------------------------------------------------------- safe pickle


class _LoadedDict(dict):
    """Stands in for addict.Dict and other dict subclasses while unpickling."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


def _allowed_pickle_globals():
    from numpy.core import multiarray

    table = {
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): _LoadedDict,
        ("addict.addict", "Dict"): _LoadedDict,
        ("addict", "Dict"): _LoadedDict,
        ("easydict", "EasyDict"): _LoadedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = _frombuffer
    return table


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return text.encode("latin1")


def _frombuffer(buf, dtype, shape, order):
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        allowed = _allowed_pickle_globals().get((module, name))
        if allowed is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return allowed

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not plain data")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_plain(v) for v in value)
    return value


def load_pickle_safely(path: Path):
    """Unpickle containers and numpy arrays only; anything that names code is refused."""
    data = Path(path).read_bytes()
    try:
        return _to_plain(_PlainDataUnpickler(io.BytesIO(data)).load())
    except _RefusedGlobal as exc:
        raise AniRenderError(
            f"{Path(path).name}: refused to read this pickle because it asks to run code "
            f"({exc}). A PAniC-3D front.pkl holds only arrays; re-export it, or do not "
            "open pickles from sources you do not trust."
        ) from None
    except MemoryError:
        raise AniRenderError(
            f"{Path(path).name}: the pickle is corrupted (absurd sizes)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of hostile or broken bytes
        raise AniRenderError(
            f"{Path(path).name}: not a readable pickle (truncated or corrupted: "
            f"{type(exc).__name__}: {exc}). Re-export the reconstruction."
        ) from None


# --------------------------------------------------------------------- helpers


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


def estimate_volume_bytes(shape, downsample=1) -> int:
    """Peak memory to mesh a float volume: the float32 grid, the marching-cubes work and
    the surface it returns (measured in bench/recon.py: about 1.5x the grid)."""
    voxels = 1
    for n in shape:
        voxels *= max(1, math.ceil(n / downsample))
    return int(voxels * 4 * 2.5)


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_memory(name, shape, downsample, memory_limit=None):
    limit = memory_limit if memory_limit is not None else available_memory_bytes()
    need = estimate_volume_bytes(shape, downsample)
    if need > limit:
        factor = downsample
        while estimate_volume_bytes(shape, factor) > limit and factor < 64:
            factor *= 2
        raise AniRenderError(
            f"{name}: a {'x'.join(map(str, shape))} volume needs about {need / 2**30:.1f} GiB "
            f"to mesh, but only {limit / 2**30:.1f} GiB is free. Set Downsample to {factor} "
            f"(CLI: --downsample {factor}) to mesh every {factor}th voxel."
        )


def _downsampled(volume, factor):
    if factor <= 1:
        return volume
    return volume[::factor, ::factor, ::factor]


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
        return PortraitFormat("eg3d_mrc", f"EG3D density volume (MRC, {_mrc_shape_text(path)})")
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


def _mrc_shape_text(path):
    try:
        import mrcfile

        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            h = mrc.header
            return f"{int(h.nx)}x{int(h.ny)}x{int(h.nz)}"
    except Exception:  # noqa: BLE001 - description only; the reader gives the real error
        return "unreadable header"


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


def read_panic_pickle(path) -> PortraitMesh:
    path = Path(path)
    data = load_pickle_safely(path)
    _require(
        isinstance(data, dict) and "verts" in data and "faces" in data,
        f"{path.name}: expected a PAniC-3D dict with 'verts' and 'faces'; found "
        f"{type(data).__name__} {sorted(data) if isinstance(data, dict) else ''}.",
    )
    verts = np.asarray(data["verts"], dtype=np.float64)
    faces = np.asarray(data["faces"])
    _require(
        verts.ndim == 2 and verts.shape[1] == 3 and len(verts),
        f"{path.name}: 'verts' has shape {verts.shape}, expected (V, 3).",
    )
    _require(
        faces.ndim == 2 and faces.shape[1] == 3 and np.issubdtype(faces.dtype, np.integer),
        f"{path.name}: 'faces' has shape {faces.shape} {faces.dtype}, expected (F, 3) integers.",
    )
    _require(np.isfinite(verts).all(), f"{path.name}: vertices contain NaN or infinity.")
    _require(
        faces.size == 0 or (faces.min() >= 0 and faces.max() < len(verts)),
        f"{path.name}: faces point past the {len(verts)} vertices; the file is corrupted.",
    )
    colors = data.get("colors")
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float64)
        if colors.shape != verts.shape:
            raise AniRenderError(
                f"{path.name}: 'colors' has shape {colors.shape}, expected {verts.shape}."
            )
        colors = np.clip(np.nan_to_num(colors), 0.0, 1.0)
    # Un-mirror x. A mirror flips the winding, but PAniC's marching cubes ran with
    # skimage's gradient_direction="descent" on a field that is high inside, which winds
    # triangles inward: the two flips cancel. Rather than trust either, orient the
    # triangles by the outward normals stored next to them (or, without those, so the
    # closed surface has positive volume).
    mirror = np.array([-1.0, 1.0, 1.0])
    verts = verts * mirror
    faces = faces.astype(np.int64)
    if _winding_is_inward(verts, faces, data.get("normals"), mirror):
        faces = faces[:, ::-1].copy()
    return PortraitMesh(verts, faces, "PAniC-3D", colors, box=(np.zeros(3), PANIC_BOX))


def _winding_is_inward(verts, faces, normals, mirror) -> bool:
    if len(faces) == 0:
        return False
    tri = verts[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = None if normals is None else np.asarray(normals, dtype=np.float64)
    if normals is not None and normals.shape == verts.shape and np.isfinite(normals).all():
        stored = (normals * mirror)[faces].sum(1)
        return float(np.einsum("ij,ij->i", face_n, stored).sum()) < 0
    return float(np.einsum("ij,ij->i", tri[:, 0], face_n).sum()) < 0


# --------------------------------------------------------------------- EG3D


def read_eg3d_mrc(path, box_size=None, downsample=1, memory_limit=None) -> PortraitVolume:
    import mrcfile

    path = Path(path)
    try:
        with warnings.catch_warnings():  # permissive mode warns; we report below instead
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError, EOFError) as exc:
        raise AniRenderError(f"{path.name}: not a readable MRC volume ({exc}).") from None
    with mrc:
        data = mrc.data
        _require(
            data is not None and data.ndim == 3 and min(data.shape) >= 2,
            f"{path.name}: MRC data has shape {getattr(data, 'shape', None)}; expected a 3-D "
            "volume (the file may be truncated).",
        )
        expected = int(mrc.header.nx) * int(mrc.header.ny) * int(mrc.header.nz)
        _require(data.size == expected, f"{path.name}: MRC data is truncated.")
        check_memory(path.name, data.shape, downsample, memory_limit)
        sigma = np.array(_downsampled(data, downsample), dtype=np.float32)
    _check_finite_volume(path.name, sigma)
    box = EG3D_BOX if not box_size else float(box_size)
    n = np.array(data.shape)
    voxel = box / (n - 1) * downsample
    # axis 0 is stored flipped: index 0 is +box/2
    origin = np.array([box / 2, -box / 2, -box / 2])
    spacing = voxel * np.array([-1.0, 1.0, 1.0])
    return PortraitVolume(sigma, origin, spacing, LEVEL_SIGMA, "EG3D", box=(np.zeros(3), box))


# --------------------------------------------------------------------- density grids

_FIELD_LEVELS = {"density": LEVEL_DENSITY, "sigma": LEVEL_SIGMA, "alpha": LEVEL_ALPHA}


def read_sidecar(path: Path) -> dict:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise AniRenderError(f"{sidecar.name}: not valid JSON ({exc}).") from None
    _require(isinstance(meta, dict), f"{sidecar.name}: expected a JSON object.")
    return meta


def read_density_grid(path, downsample=1, memory_limit=None) -> PortraitVolume:
    path = Path(path)
    meta = read_sidecar(path)
    colors = None
    try:
        if path.suffix.lower() == ".npz" or _read_head(path, 2) == b"PK":
            with np.load(path, allow_pickle=False) as npz:
                _require("density" in npz.files, f"{path.name}: no 'density' array inside.")
                density = npz["density"]
                colors = npz["colors"] if "colors" in npz.files else None
        else:
            density = np.load(path, mmap_mode="r", allow_pickle=False)
    except AniRenderError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, zlib and format errors all mean "broken"
        raise AniRenderError(f"{path.name}: not a readable numpy grid ({exc}).") from None
    _require(
        density.ndim == 3 and min(density.shape) >= 2,
        f"{path.name}: density has shape {density.shape}; expected a 3-D grid like 256x256x256.",
    )
    _require(
        np.issubdtype(density.dtype, np.number),
        f"{path.name}: density has type {density.dtype}; expected numbers.",
    )
    check_memory(path.name, density.shape, downsample, memory_limit)

    axis_order = str(meta.get("axis_order", "xyz")).lower()
    _require(
        sorted(axis_order) == ["x", "y", "z"],
        f"{path.name}: sidecar axis_order {axis_order!r} must be a permutation of 'xyz'.",
    )
    flips = [str(a).lower() for a in meta.get("flip", [])]
    field_kind = str(meta.get("field", "density")).lower()
    _require(
        field_kind in _FIELD_LEVELS,
        f"{path.name}: sidecar field {field_kind!r}; use one of {sorted(_FIELD_LEVELS)}.",
    )
    level = float(meta.get("level", _FIELD_LEVELS[field_kind]))
    box = float(meta.get("box_size", EG3D_BOX))
    _require(box > 0, f"{path.name}: sidecar box_size must be positive.")

    _require(
        colors is None
        or (colors.ndim == 4 and colors.shape[3] == 3 and colors.shape[:3] == density.shape),
        f"{path.name}: colors has shape {getattr(colors, 'shape', None)}; expected "
        f"{density.shape + (3,)} to match the density grid.",
    )
    original_shape = density.shape
    density = np.array(_downsampled(density, downsample), dtype=np.float32)
    _check_finite_volume(path.name, density)
    perm = [axis_order.index(a) for a in "xyz"]  # world axis w is array axis perm[w]
    density = np.transpose(density, perm)
    if colors is not None:
        colors = np.transpose(_downsampled(colors, downsample), perm + [3]).astype(np.float32)
        colors = np.clip(np.nan_to_num(colors), 0.0, 1.0)
    full_shape = np.array(original_shape)[perm]
    spacing = box / (full_shape - 1) * downsample
    origin = np.full(3, -box / 2)
    for w, name in enumerate("xyz"):
        if name in flips:
            origin[w] = box / 2
            spacing[w] = -spacing[w]
    return PortraitVolume(
        density, origin, spacing, level, "density grid", colors=colors, box=(np.zeros(3), box)
    )


# --------------------------------------------------------------------- triplanes

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


# --------------------------------------------------------------------- splat PLY


def read_splat_ply(path) -> PortraitMesh:
    """A Gaussian-splat PLY as a point cloud: centres and their base (SH degree 0) colour."""
    path = Path(path)
    header = _ply_header(path)
    _require(
        header["format"] == "binary_little_endian",
        f"{path.name}: splat PLY in {header['format']} is not supported; expected "
        "binary_little_endian.",
    )
    types = {
        "float": "<f4",
        "float32": "<f4",
        "double": "<f8",
        "uchar": "u1",
        "uint8": "u1",
        "int": "<i4",
        "int32": "<i4",
        "uint": "<u4",
        "short": "<i2",
        "ushort": "<u2",
    }
    vertex = next((e for e in header["elements"] if e[0] == "vertex"), None)
    _require(vertex is not None, f"{path.name}: PLY has no vertex element.")
    _require(
        header["elements"][0][0] == "vertex",
        f"{path.name}: PLY vertex element must come first.",
    )
    try:
        dtype = np.dtype([(name, types[t[0]]) for t, name in vertex[2]])
    except KeyError as exc:
        raise AniRenderError(f"{path.name}: unsupported PLY property type {exc}.") from None
    raw = np.fromfile(path, dtype=dtype, count=-1, offset=header["offset"])
    _require(
        len(raw) >= vertex[1],
        f"{path.name}: PLY is truncated ({len(raw)} of {vertex[1]} points).",
    )
    raw = raw[: vertex[1]]
    verts = np.stack([raw["x"], raw["y"], raw["z"]], 1).astype(np.float64)
    colors = None
    if "f_dc_0" in raw.dtype.names:
        sh0 = 0.28209479177387814
        colors = np.clip(0.5 + sh0 * np.stack([raw[f"f_dc_{i}"] for i in range(3)], 1), 0, 1)
    elif "red" in raw.dtype.names:
        colors = np.stack([raw["red"], raw["green"], raw["blue"]], 1) / 255.0
    keep = np.isfinite(verts).all(1)
    verts = verts[keep]
    colors = colors[keep] if colors is not None else None
    return PortraitMesh(
        verts,
        np.zeros((0, 3), np.int64),
        "Gaussian splats",
        colors,
        notes=["Gaussian splats have no surface: imported as a point cloud."],
    )
