"""A sheet's files for paint-over and for the UDP estimate: export, reload, estimate.

- ``export_for_paint_over(owner, folder)``: every view as ``<name>.png`` (straight
  alpha) with its UDP as ``<name>.udp.npz`` in a folder the artist picks; ``<name>`` is
  the view's file name (a Blender image's name), made unique. The folder is remembered
  on the character (``paint_over_dir``).
- ``reload_painted(owner, folder)``: the repainted ``<name>.png`` files become the views;
  each must keep its view's size and framing (the cut-out must still cover where its UDP
  says the character is), so the UDP stays attached. All views are checked before any
  entry changes; a refused view says why.
- ``estimate_missing_udps``: views without a UDP get the CoNR parser's estimate, written
  beside their image file (``<stem>.udp.npz``) and marked as estimated. The parser runs
  in this Python when it has torch, else in the shader runtime's Python
  (``anirender sheet estimate-udp``), in a worker thread either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import bpy
import numpy as np

from ...errors import AniRenderError
from ...models.sheet_udp import UDP_SUFFIX, read_udp_file, udp_path_for
from ..core.settings import character_settings
from ..passes.request import check_output_folder, resolve_output_folder
from .sheet_paths import relative_to, resolve_sheet_path
from .sheets import (
    check_sheet_pixels,
    entry_label,
    read_entry,
    read_entry_udp,
    read_image_file,
    used_entries,
)

#: the painted cut-out must overlap the view's UDP occupancy at least this much (IoU)
FRAMING_IOU = 0.9


def _stored(path: Path) -> str:
    blend = bpy.data.filepath
    return relative_to(path, blend) if blend else str(path)


def write_png(path: Path, rgba: np.ndarray) -> None:
    """uint8 straight RGBA (H, W, 4) as an 8-bit PNG, through a temporary Blender image
    (Blender's Python has no Pillow); written beside and renamed."""
    height, width = rgba.shape[:2]
    image = bpy.data.images.new("AniRender sheet (temporary)", width, height, alpha=True)
    beside = path.with_name(f".{path.stem}.partial.png")
    try:
        image.alpha_mode = "STRAIGHT"
        image.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
        image.filepath_raw = str(beside)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)
    os.replace(beside, path)


def paint_over_names(entries) -> list[str]:
    """A unique file stem per entry: its image file's stem, or its Blender image's name."""
    names, seen = [], set()
    for entry in entries:
        if entry.image is not None:
            base = bpy.path.clean_name(entry.image.name)
        else:
            base = Path(entry.filepath.removeprefix("//")).stem
        name, n = base or "view", 1
        while name.lower() in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name.lower())
        names.append(name)
    return names


def _entry_file(entry) -> Path | None:
    if entry.image is None:
        return resolve_sheet_path(entry.filepath)
    if entry.image.packed_file is None and entry.image.filepath:
        path = Path(bpy.path.abspath(entry.image.filepath, library=entry.image.library))
        return path if path.is_file() else None
    return None


# ------------------------------------------------------------------------- export


def export_for_paint_over(owner, folder) -> list[tuple[Path, Path | None]]:
    """Copy every view (PNG) and its UDP into ``folder``; returns the (png, udp) pairs."""
    entries = used_entries(owner)
    views = []
    for entry in entries:  # read everything first: nothing is written for a broken sheet
        rgba = read_entry(entry)
        udp_path = None
        if entry.udp_filepath:
            read_entry_udp(entry, rgba)  # checked: exists, same size
            udp_path = resolve_sheet_path(entry.udp_filepath)
        views.append((entry, rgba, udp_path))
    folder = check_output_folder(folder, "the paint-over copies")
    pairs = []
    for name, (entry, rgba, udp_path) in zip(paint_over_names(entries), views, strict=True):
        png = folder / f"{name}.png"
        source = _entry_file(entry)
        if source is not None and source.suffix.lower() == ".png":
            _copy(source, png)
        else:
            write_png(png, rgba)
        udp_copy = None
        if udp_path is not None:
            udp_copy = folder / f"{name}{UDP_SUFFIX}"
            _copy(udp_path, udp_copy)
        pairs.append((png, udp_copy))
    character_settings(owner).paint_over_dir = _stored(folder)
    return pairs


def _copy(source: Path, target: Path) -> None:
    if source.resolve() == target.resolve():
        return
    beside = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, beside)
    os.replace(beside, target)


# ------------------------------------------------------------------------- reload


def paint_over_folder(owner, folder: str | None = None) -> Path:
    """The folder to reload from: the one given, else the one exported to last."""
    text = folder or character_settings(owner).paint_over_dir
    if not text:
        raise AniRenderError(
            f'"{owner.name}" was never exported for paint-over. Click Export for Paint-Over '
            "first, or choose the folder with the painted images."
        )
    path = resolve_output_folder(text)
    if not path.is_dir():
        raise AniRenderError(f"The paint-over folder {path} does not exist.")
    return path


def reload_painted(owner, folder: str | None = None) -> list[str]:
    """Make the painted PNGs in ``folder`` the sheet's views; returns the names reloaded."""
    folder = paint_over_folder(owner, folder)
    entries = used_entries(owner)
    found, problems = [], []
    for name, entry in zip(paint_over_names(entries), entries, strict=True):
        png = folder / f"{name}.png"
        if not png.is_file():
            continue
        try:
            painted = read_image_file(png)
        except RuntimeError:
            problems.append(f"{png.name}: Blender cannot read it as an image.")
            continue
        problem = _painted_problem(entry, painted, png.name)
        if problem:
            problems.append(problem)
            continue
        udp_copy = folder / f"{name}{UDP_SUFFIX}"
        found.append((entry, name, png, udp_copy if udp_copy.is_file() else None))
    if problems:
        raise AniRenderError("Nothing reloaded. " + " ".join(problems))
    if not found:
        names = ", ".join(f"{n}.png" for n in paint_over_names(entries))
        raise AniRenderError(
            f"{folder} holds none of this sheet's painted views ({names}). Paint over the "
            "exported files and keep their names."
        )
    for entry, _name, png, udp_copy in found:
        if udp_copy is not None:  # the copy beside the painting: the folder is complete
            entry.udp_estimated = entry.udp_estimated or read_udp_file(udp_copy)[1]
            entry.udp_filepath = _stored(udp_copy)
        entry.image = None
        entry.filepath = _stored(png)
    return [name for _entry, name, _png, _udp in found]


def _painted_problem(entry, painted: np.ndarray, label: str) -> str | None:
    """Why a painted image cannot replace its view (None when it can)."""
    try:
        check_sheet_pixels(painted, label)
    except AniRenderError as exc:
        return str(exc)
    original = read_entry(entry)
    if painted.shape[:2] != original.shape[:2]:
        return (
            f"{label} is {painted.shape[1]}x{painted.shape[0]} but the view "
            f'"{entry_label(entry)}" is {original.shape[1]}x{original.shape[0]}; paint over '
            "it at the same size without cropping or scaling, so its UDP still fits."
        )
    udp, _ = read_entry_udp(entry, original)
    body = udp[..., 3] > 0.5 if udp is not None else original[..., 3] > 127
    cut_out = painted[..., 3] > 127
    union = np.logical_or(body, cut_out).sum()
    overlap = np.logical_and(body, cut_out).sum() / max(int(union), 1)
    if overlap < FRAMING_IOU:
        return (
            f"{label} no longer lines up with its view: its cut-out covers "
            f"{overlap:.0%} of where the character is (at least {FRAMING_IOU:.0%} needed). "
            "Keep the character where it was (no moving, cropping or scaling) and keep the "
            "background transparent."
        )
    return None


# ----------------------------------------------------------------------- estimate


def views_without_udp(owner) -> list:
    return [e for e in used_entries(owner) if not e.udp_filepath]


def stage_for_estimate(owner, folder: Path) -> list[tuple]:
    """Write each view lacking a UDP into ``folder`` as ``view_NN.png``; returns
    (entry index, staged png, where its UDP will go)."""
    entries = list(character_settings(owner).sheet)
    staged = []
    for index, entry in enumerate(entries):
        if entry.udp_filepath or (entry.image is None and not entry.filepath):
            continue
        rgba = read_entry(entry)
        check_sheet_pixels(rgba, entry_label(entry))
        png = folder / f"view_{index:02d}.png"
        write_png(png, rgba)
        source = _entry_file(entry)
        if source is not None:
            target = udp_path_for(source)
            if target.exists():  # a UDP the artist detached: kept, the guess goes beside
                target = target.with_name(f"{source.stem}.estimated{UDP_SUFFIX}")
        else:  # a packed or generated Blender image: beside the .blend
            name = bpy.path.clean_name(entry.image.name)
            target = resolve_output_folder("//sheet_udp") / f"{name}{UDP_SUFFIX}"
        staged.append((index, png, target))
    return staged


def run_estimate(folder: Path, settings: dict) -> None:
    """Estimate the UDP of every image in ``folder`` (worker thread; no bpy here)."""
    weights = settings.get("weights") or None
    try:
        import torch  # noqa: F401  (asked only: does this Python run the parser itself?)
    except ImportError:
        _estimate_in_runtime(folder, settings.get("python_path") or "", weights)
        return
    # torch: present (checked above); the parser runs in this process
    from ...models.sheet_udp import estimate_folder

    estimate_folder(folder, weights=weights, overwrite=True)


def _estimate_in_runtime(folder: Path, python: str, weights) -> None:
    if not python or not os.path.isfile(python):
        raise AniRenderError(
            "Estimating a UDP needs PyTorch, which Blender's Python lacks, and no shader "
            "runtime is set up. Click Set Up Shader Runtime in the AniRender preferences."
        )
    command = [python, "-m", "anirender.cli", "sheet", "estimate-udp", str(folder), "--overwrite"]
    if weights:
        command += ["--weights", weights]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise AniRenderError(f"The UDP estimate failed in {python}: {' '.join(tail)}")


def attach_estimates(owner, staged) -> int:
    """Move the estimated UDPs beside their images and attach them; returns how many."""
    sheet = character_settings(owner).sheet
    moved = []
    for index, png, target in staged:
        made = udp_path_for(png)
        if not made.is_file():
            raise AniRenderError(f"The estimate wrote no UDP for {entry_label(sheet[index])}.")
        moved.append((index, made, target))
    for _index, made, target in moved:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(made, target)
        except OSError as exc:
            raise AniRenderError(
                f"Cannot write the estimated UDP {target} ({exc.strerror or exc}). Copy the "
                "view's image into a folder you can write to, and estimate again."
            ) from None
    for index, _made, target in moved:  # attached only once every file is in place
        sheet[index].udp_filepath = _stored(target)
        sheet[index].udp_estimated = True
    return len(moved)
