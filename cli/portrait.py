"""``anirender import portrait FILE --out mesh.glb|obj|ply``: a reconstruction to a clean mesh.

Volumes, PAniC pickles and triplanes are meshed in numpy/torch by ``models.recon`` and
written by ``models.recon.writers`` (OBJ with ``v x y z r g b`` colours, binary PLY with
uchar colours, GLB with COLOR_0), all in the y-up, facing +z frame that Blender's
importers expect. Mesh files as input (OBJ/PLY/GLB) are read through Blender's
importers: that one path loads ``bpy`` (``addon.portrait.meshes``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AniRenderError
from ..models.recon.data import MESH_FILE_KINDS
from ..models.recon.detect import detect_portrait_format
from ..models.recon.portrait import (
    PortraitImportOptions,
    clean_up,
    fit_to_size,
    prepare_portrait,
)
from ..models.recon.writers import MESH_WRITERS


def _import_group(subparsers):
    """The shared ``import`` command (other modules may add their own kinds to it)."""
    existing = subparsers.choices.get("import")
    if existing is not None:
        for action in existing._actions:  # noqa: SLF001 - argparse has no public lookup
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                return action
    parser = subparsers.add_parser("import", help="bring outside data into AniRender form")
    kinds = parser.add_subparsers(dest="import_kind", metavar="KIND")
    kinds.required = True
    return kinds


def add_parser(subparsers):
    parser = _import_group(subparsers).add_parser(
        "portrait",
        help="turn a portrait reconstruction (PAniC-3D .pkl, EG3D .mrc, grid, triplane, mesh) "
        "into a clean mesh file",
    )
    parser.add_argument("file", type=Path, help="the reconstruction to import")
    parser.add_argument("--out", type=Path, required=True, help="mesh to write: .glb, .obj or .ply")
    parser.add_argument("--level", type=float, default=None, help="iso-level (default: per format)")
    parser.add_argument(
        "--size-cm", type=float, default=25.0, help="head width in cm (0 keeps file units)"
    )
    parser.add_argument("--faces", type=int, default=0, help="face budget (0 keeps all)")
    parser.add_argument("--smooth", type=int, default=0, help="Taubin smoothing iterations")
    parser.add_argument(
        "--downsample", type=int, default=1, help="mesh every n-th voxel of a large volume"
    )
    parser.add_argument(
        "--resolution", type=int, default=256, help="triplane sampling grid (default 256)"
    )
    parser.add_argument(
        "--box-size", type=float, default=0.0, help="EG3D cube side (default 1.0, FFHQ)"
    )
    parser.add_argument("--no-colors", action="store_true", help="leave vertex colours out")
    parser.set_defaults(func=run_import_portrait)


def run_import_portrait(args) -> int:

    writer = MESH_WRITERS.get(args.out.suffix.lower())
    if writer is None:
        raise AniRenderError(f"--out {args.out.name}: write .glb, .obj or .ply.")
    options = PortraitImportOptions(
        level=args.level,
        head_width_cm=args.size_cm,
        face_budget=args.faces,
        colors=not args.no_colors,
        smooth_iterations=args.smooth,
        downsample=args.downsample,
        grid_resolution=args.resolution,
        box_size=args.box_size,
    )
    fmt = detect_portrait_format(args.file)
    print(f"{args.file.name}: {fmt.description}")
    if fmt.kind in MESH_FILE_KINDS:
        # bpy: only mesh files need Blender's importers
        from ..addon.portrait.meshes import read_mesh_file

        mesh = fit_to_size(clean_up(read_mesh_file(args.file, fmt.kind), options), args.size_cm)
    else:
        _fmt, mesh = prepare_portrait(args.file, options)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer(args.out, mesh)
    size = mesh.verts.max(0) - mesh.verts.min(0)
    print(
        f"wrote {args.out}: {len(mesh.verts)} vertices, {len(mesh.faces)} triangles, "
        f"{size[0]:.4g} x {size[1]:.4g} x {size[2]:.4g} (Blender X x Y x Z)"
    )
    return 0
