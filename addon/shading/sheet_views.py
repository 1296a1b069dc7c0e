"""Render Sheet Views: the character seen from the front, back, sides and three-quarters,
each as a straight-alpha PNG with its UDP beside it.

For each view a temporary camera circles the character (the same distance and framing
for every view: the bounding sphere of the posed character fills ``FILL`` of the
frame; azimuth 0 looks at its face from -Y, positive turns to its left, +X). The look
is rendered by Cycles (the character's own materials and the scene's lights and world)
or Workbench (flat material colours), with a transparent film and nothing but the
character visible; the UDP is rendered by the pass renderer (``passes.renderer``: the
fast rasteriser when this Python has torch, else Cycles) from the same camera at the
same frame, and written as ``<stem>.udp.npz`` in the pass renderer's own ``.npz``
layout. Both files are the render size (``size`` x ``size``) and line up pixel for
pixel.

Pose: the armature's rest pose (``REST``, its Pose Position switched to Rest Position
for the render) or the pose at a given frame (``FRAME``). Files are written into a
hidden folder beside their final place and moved there only when every view rendered;
the scene (render settings, camera, visibility, frame, the armature's pose position)
comes back as it was, also after an error or Esc.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ...errors import AniRenderError
from ...models.sheet_udp import UDP_SUFFIX, write_udp_file
from ..characters.finding import deformed_meshes
from ..core.guard import SceneGuard
from ..core.mesh_arrays import world_bounds
from ..datasets.conr import aim_camera
from ..passes.renderer import PassRenderer
from ..passes.request import PassRequest, check_output_folder, parse_choices

#: view name -> camera azimuth in degrees (0: the face, +: the character's left side)
VIEWS = {
    "front": 0.0,
    "three_quarters": 45.0,
    "left": 90.0,
    "back": 180.0,
    "right": -90.0,
    "three_quarters_right": -45.0,
}
DEFAULT_VIEWS = ("front", "left", "back", "right")
FILL = 0.95  # share of the frame the character's bounding sphere fills
ELEVATION = 0.0  # degrees: eye level, as sheets are drawn
ENGINES = ("CYCLES", "WORKBENCH")
POSES = ("REST", "FRAME")
_KEEP_VISIBLE = {"ARMATURE", "LIGHT", "CAMERA", "LIGHT_PROBE", "SPEAKER"}


@dataclass
class SheetViewRequest:
    """What Render Sheet Views is asked for."""

    out_dir: Path
    views: tuple[str, ...] = DEFAULT_VIEWS
    size: int = 512
    pose: str = "REST"
    frame: int = 1
    engine: str = "CYCLES"
    samples: int = 16
    stem: str = ""  # file names: <stem>_<view>.png; default the armature's name
    written: list = field(default_factory=list)  # (png, udp) pairs, once all are moved


def parse_views(text) -> tuple[str, ...]:
    """``"front,left,back"`` (or a list) -> view names; ``three-quarters`` is accepted."""
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [str(t).strip().lower().replace("-", "_").replace(" ", "_") for t in items]
    return parse_choices(items, tuple(VIEWS), "view")


def view_file_names(stem: str, view: str) -> tuple[str, str]:
    return f"{stem}_{view}.png", f"{stem}_{view}{UDP_SUFFIX}"


def check_request(scene, armature, request: SheetViewRequest) -> None:
    """Everything that can be refused, refused before anything changes."""
    request.views = parse_views(request.views)
    if armature is None or armature.type != "ARMATURE":
        raise AniRenderError(
            "Render Sheet Views needs the rigged character: select its armature or a mesh "
            "it deforms."
        )
    if not deformed_meshes(armature, scene):
        raise AniRenderError(
            f'Armature "{armature.name}" deforms no mesh in scene "{scene.name}"; nothing to '
            "render."
        )
    if not 16 <= int(request.size) <= 4096:
        raise AniRenderError(f"Sheet views are 16 to 4096 pixels square; got {request.size}.")
    if request.pose not in POSES:
        raise AniRenderError(f"Unknown pose {request.pose!r}; choose REST or FRAME.")
    if request.engine not in ENGINES:
        raise AniRenderError(f"Unknown engine {request.engine!r}; choose CYCLES or WORKBENCH.")
    if request.samples < 1:
        raise AniRenderError("Render at least 1 sample per pixel.")
    request.stem = bpy.path.clean_name(request.stem or armature.name) or "character"
    request.out_dir = check_output_folder(request.out_dir, "sheet views")


def _fast_udp() -> bool:
    try:
        import torch  # noqa: F401  (only asked whether it is there: the fast rasteriser)
    except ImportError:
        return False
    return True


def sheet_view_steps(context, armature, request: SheetViewRequest):
    """A generator that renders one view per step (yields a status line), then moves
    the files into ``request.out_dir`` and lists them in ``request.written``."""
    scene = context.scene
    out = Path(request.out_dir)
    partial = Path(tempfile.mkdtemp(prefix=".sheet-views-", dir=out))
    data = armature.data
    pose_before = data.pose_position
    frame = int(request.frame) if request.pose == "FRAME" else scene.frame_current
    try:
        with SceneGuard(context):
            camera = _temporary_camera(scene)
            if request.pose == "REST":
                data.pose_position = "REST"
            scene.frame_set(frame)
            meshes = deformed_meshes(armature, scene)
            _show_only(scene, meshes)
            _setup_look(scene, request)
            bounds = world_bounds(meshes, context.evaluated_depsgraph_get())
            if bounds is None:
                raise AniRenderError(f'The meshes of "{armature.name}" have no vertices.')
            aim_camera(camera, *bounds, VIEWS[request.views[0]], ELEVATION, FILL)
            passes = PassRequest(
                out_dir=partial,
                frames=[frame],
                passes=("udp",),
                formats=("npz",),
                fast=_fast_udp(),
                size=(request.size, request.size),
                overwrite=True,
            )
            with PassRenderer(scene, armature, passes) as renderer:
                for view in request.views:
                    aim_camera(camera, *bounds, VIEWS[view], ELEVATION, FILL)
                    png, udp_name = view_file_names(request.stem, view)
                    write_udp_file(partial / udp_name, renderer.render_frame(frame)["udp"])
                    scene.frame_set(frame)
                    scene.render.filepath = str(partial / png)
                    bpy.ops.render.render(write_still=True, scene=scene.name)
                    if not (partial / png).is_file():
                        raise AniRenderError(f"Blender wrote no image for the {view} view.")
                    yield f"{view} view"
        written = []
        for view in request.views:
            names = view_file_names(request.stem, view)
            for name in names:
                os.replace(partial / name, out / name)
            written.append(tuple(out / n for n in names))
        request.written[:] = written
    finally:
        data.pose_position = pose_before
        shutil.rmtree(partial, ignore_errors=True)


def _temporary_camera(scene):
    """A camera of the demo's lens, linked to the scene and made active (the scene guard
    removes it and puts the scene's own camera back)."""
    camera = bpy.data.objects.new("AniRender Sheet Camera", bpy.data.cameras.new("Sheet"))
    camera.data.lens, camera.data.sensor_width = 50.0, 36.0
    scene.collection.objects.link(camera)
    scene.camera = camera
    return camera


def _show_only(scene, meshes) -> None:
    """Hide from rendering every object that is not the character, a light or a camera."""
    keep = set(meshes)
    for obj in scene.objects:
        if obj.type not in _KEEP_VISIBLE and obj not in keep and not obj.hide_render:
            obj.hide_render = True


def _setup_look(scene, request: SheetViewRequest) -> None:
    render = scene.render
    render.engine = "CYCLES" if request.engine == "CYCLES" else "BLENDER_WORKBENCH"
    render.film_transparent = True
    render.resolution_x = render.resolution_y = int(request.size)
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.use_compositing = False
    render.use_sequencer = False
    render.use_file_extension = False
    settings = render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"
    if request.engine == "CYCLES":
        scene.cycles.samples = int(request.samples)
    else:
        shading = scene.display.shading
        shading.light = "FLAT"
        shading.color_type = "MATERIAL"
        scene.display.render_aa = "8"
