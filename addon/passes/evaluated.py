"""Passes of a character from a depsgraph someone else evaluated: the render engine's.

``PassRenderer`` builds a temporary scene, sets its frame and renders; inside a render
engine that is not allowed (the render owns the evaluated scene and must not change
``bpy.data``). ``evaluated_passes`` draws the same passes with the fast backend
(``passes.fast``, the same rasteriser, so the same pixels as ``anirender passes --fast``)
from the engine's depsgraph, already at the frame being rendered, changing nothing. In a
Blender whose Python has no torch the numpy rasteriser draws them (``models.raster_numpy``).

Layouts are those of ``passes.renderer``: H x W x 4 float32, row 0 at the top,
background 0, the fourth channel the occupancy.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ...errors import AniRenderError
from . import canonical
from .camera import camera_matrices
from .fast import FastBackend


@dataclass
class _Request:
    passes: tuple[str, ...]


@dataclass
class _EvaluatedView:
    """What ``FastBackend`` reads from a renderer, taken from an evaluated depsgraph."""

    depsgraph: object
    camera: object
    meshes: list
    width: int
    height: int
    aspect: tuple[float, float]
    request: _Request
    present: set = field(default_factory=set)
    matrices: tuple | None = None  # (to_clip, to_world) of a view that is not a camera's

    def set_frame(self, frame: int):
        return self.depsgraph  # already at the frame the engine renders

    def blender_busy(self):
        return nullcontext()  # no file writer here

    def camera_matrices(self, depsgraph):
        if self.matrices is not None:
            return self.matrices
        return camera_matrices(self.camera, depsgraph, self.width, self.height, self.aspect)

    def visible_meshes(self):
        return [m for m in self.meshes if m.name in self.present]


def check_canonical(armature, meshes) -> None:
    """The UDP pass needs the canonical colours stored by Set Canonical Pose."""
    lacking = [m.name for m in meshes if m.data.attributes.get(canonical.ATTRIBUTE) is None]
    if lacking:
        raise AniRenderError(
            f'Character "{armature.name}" has no canonical colours yet (mesh "{lacking[0]}"). '
            "Select it and run Set Canonical Pose (AniRender > Passes) once, save, and render "
            "again."
        )


@dataclass
class ViewMatrices:
    """A view that is not a camera object (the 3D viewport's): world-to-view and
    projection as numpy 4x4 (Blender's ``region_data.view_matrix`` / ``window_matrix``)."""

    view: np.ndarray
    projection: np.ndarray
    orthographic: bool = False

    def as_renderer(self):
        to_world = np.linalg.inv(np.asarray(self.view, np.float64))
        to_world[:3, :3] /= np.linalg.norm(to_world[:3, :3], axis=0)
        to_clip = np.asarray(self.projection, np.float64) @ np.asarray(self.view, np.float64)
        kind = SimpleNamespace(data=SimpleNamespace(type="ORTHO" if self.orthographic else "PERSP"))
        return (to_clip, to_world), kind


def evaluated_passes(
    depsgraph, camera, meshes, size: tuple[int, int], passes=("udp",), aspect=(1.0, 1.0)
) -> dict[str, np.ndarray]:
    """The ``passes`` of ``meshes`` (original objects) seen from ``camera`` (a camera
    object, or ``ViewMatrices``) at ``size`` (width, height), from ``depsgraph`` as it is
    now. Meshes the depsgraph does not hold (hidden from rendering, excluded) are left
    out."""
    present = {obj.original.name for obj in depsgraph.objects if obj.type == "MESH"}
    matrices = None
    if isinstance(camera, ViewMatrices):
        matrices, camera = camera.as_renderer()
    view = _EvaluatedView(
        depsgraph, camera, list(meshes), int(size[0]), int(size[1]), tuple(aspect),
        _Request(tuple(passes)), present, matrices,
    )  # fmt: skip
    return FastBackend(view).render(0)  # torch's rasteriser, or numpy's where torch is absent
