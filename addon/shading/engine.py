"""The AniRender render engine: F12, Ctrl+F12, ``blender -b -a`` and the compositor.

Blender calls ``render(depsgraph)`` once per frame and view layer, with the depsgraph
already evaluated at that frame; output paths, file formats, frame ranges and steps,
``use_overwrite`` / ``use_placeholder``, stamps and the compositor stay Blender's. Per
frame (``render_frame``):

1. ``plan_frame`` checks everything before any work: the active camera, the characters
   of the view layer (each armature that deforms a visible mesh), and for the scene's
   shader (Render Properties > AniRender > Shader) each character's sheet and canonical
   colours and the weights, or the scene's ANR model. A failure is one artist-facing
   message naming the object and the fix; the engine reports it as an error and the
   render stops, with the scene as it was (the engine never writes to ``bpy.data`` apart
   from reading a sheet's image files through temporary images). Any other failure is
   reported too, so a farm never writes an empty frame for a failed one.
2. ``addon.passes.evaluated`` draws each character's passes (UDP, normal, depth, UV; for
   ANR those of its coarse meshes) from the engine's depsgraph at the scene's resolution
   x percentage.
3. ``frame_shading.shade_frame`` shades each character (the sheet shader framed at the
   working size, or ANR; the session of the scene's settings: in Blender, local service
   or remote) and composites the characters by depth.
4. The RenderResult gets the passes of ``RENDER_PASSES``: Combined (the shaded frame,
   premultiplied, scene-linear: the shader's sRGB values decoded, so the Standard view
   transform writes them back unchanged), UDP, Normal (camera space), Depth (camera Z in
   scene units, 1e10 where empty as Cycles writes it), UV (U, V, occupancy) and Alpha.
   Film is transparent: alpha is where the characters are.

``test_break`` (Esc) is asked between characters and before the result is written.
Sheets are read once and kept until an entry changes; a ``depsgraph_update_post`` handler
reads them on the main thread ahead of a render (``warm_sheets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from bpy.app.handlers import persistent

from ...errors import AniRenderError
from ...models.weights import resolve_weights
from ..anr.capture import coarse_meshes
from ..characters.finding import Character, find_character, require_camera
from ..core.prefs import preferences
from ..core.settings import anr_defaults, character_settings, neural_defaults
from ..passes.evaluated import ViewMatrices, check_canonical, evaluated_passes
from ..passes.request import output_size
from .frame_shading import (
    ANR_DRAWN,
    DRAWN,
    CharacterFrame,
    FrameStopped,
    ShadedFrame,
    anr_session_for,
    anr_shader,
    session_for,
    shade_frame,
    sheet_shader,
)
from .preview import PreviewWorker, preview_inputs, preview_size
from .sessions import settings_from
from .sheet_paths import resolve_sheet_path
from .sheets import read_sheet_for_shading

ENGINE_ID = "ANIRENDER"

#: (name, channels, channel ids, type) of every pass the engine writes
RENDER_PASSES = (
    ("Combined", 4, "RGBA", "COLOR"),
    ("UDP", 4, "RGBA", "COLOR"),
    ("Normal", 3, "XYZ", "VECTOR"),
    ("Depth", 1, "Z", "VALUE"),
    ("UV", 3, "UVA", "VECTOR"),
    ("Alpha", 1, "A", "VALUE"),
)
#: depth where nothing is, as Cycles writes it
FAR = 1e10

_sheets: dict[tuple, np.ndarray] = {}


@dataclass
class FramePlan:
    """Everything a frame's render needs, checked."""

    camera: object
    characters: list[Character]
    settings: dict
    size: int  # the working square of the sheet shader
    width: int
    height: int
    aspect: tuple[float, float] = (1.0, 1.0)
    #: per character: (meshes to draw, passes to draw, shader of ``frame_shading``)
    draws: list[tuple[list, tuple, object]] = field(default_factory=list)


def shader_settings(scene) -> dict:
    """Where the shader runs and with which weights: the scene's choices over the
    preferences'. A weights path that does not exist is an error saying where to fix it."""
    settings = settings_from(preferences())
    neural = neural_defaults(scene)
    if neural is not None and neural.service_mode != "PREFERENCES":
        settings["mode"] = neural.service_mode
    weights = (neural.weights if neural is not None else "") or settings.get("weights") or ""
    where = (
        "Render Properties > AniRender > Shader"
        if neural is not None and neural.weights
        else "the AniRender preferences"
    )
    if weights.startswith("//"):
        if not bpy.data.filepath:
            raise AniRenderError(
                f'The weights "{weights}" are relative to the .blend, which is not saved. '
                f"Save the file, or give an absolute path in {where}."
            )
        weights = bpy.path.abspath(weights)
    if weights and settings["mode"] in {"IN_PROCESS", "LOCAL"}:
        try:
            resolve_weights(weights, verify=False)
        except AniRenderError as exc:
            raise AniRenderError(
                f"{exc}. Fix the weights in {where} (empty uses the model shipped with AniRender)."
            ) from None
    settings["weights"] = weights
    return settings


def scene_characters(depsgraph) -> list[Character]:
    """The characters the view layer renders: armatures deforming a mesh it shows."""
    shown = {obj.original.name for obj in depsgraph.objects}
    characters = []
    for obj in sorted(depsgraph.objects, key=lambda o: o.name):
        if obj.type != "ARMATURE":
            continue
        armature = obj.original
        try:
            character = find_character(armature)
        except AniRenderError:
            continue  # an armature that deforms nothing is not a character
        character.meshes = [m for m in character.meshes if m.name in shown]
        if character.meshes:
            characters.append(character)
    return characters


def working_size(scene) -> int:
    neural = neural_defaults(scene)
    return int(neural.size) if neural is not None else 256


def cached_sheet(owner, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The character's sheet at ``size``, read again only when an entry changed (another
    image, a file saved anew). Read on the main thread ahead of a render where possible
    (``warm_sheets``), since reading a file goes through a temporary Blender image."""
    key = (owner.name, size, tuple(_entry_key(e) for e in character_settings(owner).sheet))
    if key not in _sheets:
        try:
            sheet = read_sheet_for_shading(owner, size)
        except AniRenderError as exc:
            message = str(exc)
            if "has no character sheet" in message:
                message += (
                    " Or, to leave it out of the AniRender image, disable it in renders "
                    "(Outliner camera icon)."
                )
            raise AniRenderError(message) from None
        if len(_sheets) >= 16:
            _sheets.pop(next(iter(_sheets)))
        _sheets[key] = sheet
    return _sheets[key]


def _entry_key(entry):
    """What a sheet entry's reading depends on: its image (or file) and its UDP file."""
    udp = (entry.udp_filepath, _file_stamp(entry.udp_filepath))
    image = entry.image
    if image is not None:
        return (image.name, image.filepath, image.is_dirty, tuple(image.size), udp)
    return (entry.filepath, _file_stamp(entry.filepath), udp)


def _file_stamp(path: str):
    if not path:
        return None
    try:
        return resolve_sheet_path(path).stat().st_mtime_ns
    except (AniRenderError, OSError):
        return None  # reading the sheet says what is wrong with it


def plan_frame(depsgraph, scene, need_camera: bool = True) -> FramePlan:
    """Check the scene and gather what the frame needs; raises ``AniRenderError``.
    The viewport preview looks through the viewport, not the camera (``need_camera``)."""
    camera = scene.camera
    if not need_camera:
        camera = None
    elif camera is not None and camera.type != "CAMERA":
        raise AniRenderError(
            f'The active camera of scene "{scene.name}", "{camera.name}", is of type '
            f"{camera.type.title()}, not a camera; the AniRender passes need a camera's lens. "
            "Choose a camera in Scene Properties > Camera."
        )
    else:
        camera = require_camera(scene)  # Blender itself refuses a render with no camera
    characters = scene_characters(depsgraph)
    if not characters:
        raise AniRenderError(
            f'View layer "{depsgraph.view_layer.name}" of scene "{scene.name}" shows no '
            "character (an armature that deforms a mesh) for AniRender to shade. Enable the "
            "character's collection in renders, or choose another render engine."
        )
    size = working_size(scene)
    neural = neural_defaults(scene)
    settings = shader_settings(scene)
    width, height = output_size(scene, None)
    render = scene.render
    aspect = (render.pixel_aspect_x, render.pixel_aspect_y)
    plan = FramePlan(camera, characters, settings, size, width, height, aspect)
    if neural is not None and neural.shader == "ANR":
        weights, identity, names = anr_model(scene)
        session = anr_session_for(settings, weights, identity)
        for character in characters:
            coarse = [m for m in coarse_meshes(character.armature, names) if m in character.meshes]
            plan.draws.append((coarse, ANR_DRAWN, anr_shader(session)))
        return plan
    sheets = [cached_sheet(c.owner, size) for c in characters]
    for character, sheet in zip(characters, sheets):
        check_canonical(character.owner, character.meshes)
        shader = sheet_shader(session_for(settings, *sheet), size)
        plan.draws.append((character.meshes, DRAWN, shader))
    return plan


def anr_model(scene) -> tuple[bytes, int, list[str]]:
    """(weights, identity, coarse mesh names) of the scene's ANR settings, checked."""
    anr = anr_defaults(scene)
    text = anr.weights if anr is not None else ""
    path = Path(bpy.path.abspath(text)) if text else None
    if path is None or not path.is_file():
        raise AniRenderError(
            f"No ANR model at '{text}'. Choose the anr.safetensors written by `anirender train "
            "anr` in Render Properties > AniRender > Shader (ANR Model), or pick the Character "
            "Sheet shader."
        )
    names = [n.strip() for n in anr.coarse.split(",") if n.strip()]
    return path.read_bytes(), int(anr.identity), names


def render_frame(depsgraph, plan: FramePlan, should_stop=None, progress=None) -> ShadedFrame:
    """Passes of every character from ``depsgraph``, shaded and composited."""
    frames = []
    for i, (character, (meshes, drawn, shader)) in enumerate(zip(plan.characters, plan.draws)):
        if progress is not None:
            progress(f"passes of {character.name}", i / (2 * len(plan.characters)))
        size = (plan.width, plan.height)
        passes = evaluated_passes(depsgraph, plan.camera, meshes, size, drawn, plan.aspect)
        frames.append(CharacterFrame(character.name, passes, shader))
    if progress is not None:
        names = ", ".join(c.name for c in plan.characters)
        progress(f"shading {names}", 0.5)
    return shade_frame(frames, should_stop)


def display_to_linear(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA in sRGB-encoded values -> premultiplied scene-linear."""
    alpha = rgba[..., 3:4]
    straight = np.where(alpha > 0, rgba[..., :3] / np.maximum(alpha, 1e-8), 0.0)
    straight = np.clip(straight, 0.0, 1.0)
    linear = np.where(straight <= 0.04045, straight / 12.92, ((straight + 0.055) / 1.055) ** 2.4)
    return np.concatenate([linear * alpha, alpha], axis=-1).astype(np.float32)


def result_layers(frame: ShadedFrame) -> dict[str, np.ndarray]:
    """Each pass of ``RENDER_PASSES`` as (H, W, channels) float32, row 0 at the top."""
    passes = frame.passes
    height, width = frame.rgba.shape[:2]
    occupied = (frame.nearest >= 0)[..., None]
    depth = passes.get("depth", np.zeros((height, width, 4), np.float32))[..., :1]
    uv = passes.get("uv", np.zeros((height, width, 4), np.float32))
    return {
        "Combined": display_to_linear(frame.rgba),
        "UDP": passes.get("udp", np.zeros((height, width, 4), np.float32)),
        "Normal": passes.get("normal", np.zeros((height, width, 4), np.float32))[..., :3],
        "Depth": np.where(occupied, depth, FAR).astype(np.float32),
        "UV": np.concatenate([uv[..., :2], uv[..., 3:4]], axis=-1),
        "Alpha": frame.rgba[..., 3:4],
    }


class AniRenderEngine(bpy.types.RenderEngine):
    """Shades the scene's characters with the neural shader (AniRender)."""

    bl_idname = ENGINE_ID
    bl_label = "AniRender"
    bl_use_preview = False
    bl_use_postprocess = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._preview = None  # PreviewWorker, made by the first viewport draw
        self._preview_key = None
        self._updates = 0

    def __del__(self):
        try:
            preview = self._preview
        except (AttributeError, ReferenceError):
            return
        if preview is not None:
            preview.stop()

    def update_render_passes(self, scene=None, renderlayer=None):
        for name, channels, chan_id, kind in RENDER_PASSES:
            self.register_pass(scene, renderlayer, name, channels, chan_id, kind)

    def render(self, depsgraph):
        scene = depsgraph.scene
        try:
            self.update_stats("", "AniRender: checking the scene")
            plan = plan_frame(depsgraph, scene)
            frame = render_frame(depsgraph, plan, self.test_break, self._progress)
            if self.test_break():
                return
            self._write(depsgraph, frame, plan.width, plan.height)
            self.update_progress(1.0)
        except FrameStopped:
            return
        except AniRenderError as exc:
            self.report({"ERROR"}, str(exc))
        except Exception as exc:  # reported, so the render stops instead of writing nothing
            self.report({"ERROR"}, f"AniRender failed: {type(exc).__name__}: {exc}")
            raise

    # viewport (Rendered shading) ------------------------------------------------------
    def view_update(self, context, depsgraph):
        self._updates += 1  # the pose, the frame or a setting changed: shade again

    def view_draw(self, context, depsgraph):
        region, view3d = context.region, context.region_data
        size = preview_size(region.width, region.height)
        view = ViewMatrices(
            np.array(view3d.view_matrix), np.array(view3d.window_matrix),
            not view3d.is_perspective,
        )  # fmt: skip
        key = (view.view.tobytes(), view.projection.tobytes(), size, self._updates)
        if self._preview is None:
            self._preview = PreviewWorker()
        if key != self._preview_key:
            self._preview_key = key
            try:
                plan = plan_frame(depsgraph, depsgraph.scene, need_camera=False)
                self._preview.submit(key, preview_inputs(depsgraph, plan, view, size))
            except AniRenderError as exc:
                self.update_stats("", f"AniRender: {exc}")
            _poll_preview(self)
        if self._preview.result is not None:
            _draw_rgba(self, depsgraph.scene, self._preview.result[1], region)
        if self._preview.error:
            self.update_stats("", f"AniRender: {self._preview.error}")

    def _progress(self, message: str, fraction: float) -> None:
        self.update_stats("", f"AniRender: {message}")
        self.update_progress(fraction)

    def _write(self, depsgraph, frame: ShadedFrame, width: int, height: int) -> None:
        for name, channels, chan_id, _ in RENDER_PASSES[1:]:
            self.add_pass(name, channels, chan_id)
        result = self.begin_result(0, 0, width, height, layer=depsgraph.view_layer.name)
        try:
            layer = result.layers[0]
            for name, pixels in result_layers(frame).items():
                flat = np.ascontiguousarray(pixels[::-1], dtype=np.float32)
                layer.passes[name].rect = flat.reshape(height * width, -1)
        finally:
            self.end_result(result)


def _poll_preview(engine) -> None:
    """Redraw the viewport when the worker has finished (a timer on the main thread)."""
    worker, seen = engine._preview, engine._preview.finished

    def check():
        try:
            if worker.finished != seen or worker.idle:
                engine.tag_redraw()
                return None
        except ReferenceError:  # the viewport closed
            return None
        return 0.05

    bpy.app.timers.register(check, first_interval=0.05)


def _draw_rgba(engine, scene, rgba: np.ndarray, region) -> None:
    """Draw a premultiplied preview over the whole region, in the shader's own (display)
    values. Drawing needs a display, so ``gpu`` is imported here."""
    import gpu
    from gpu_extras.presets import draw_texture_2d

    height, width = rgba.shape[:2]
    pixels = np.ascontiguousarray(rgba[::-1], np.float32).ravel()
    buffer = gpu.types.Buffer("FLOAT", pixels.size, pixels)
    texture = gpu.types.GPUTexture((width, height), format="RGBA16F", data=buffer)
    gpu.state.blend_set("ALPHA_PREMULT")
    draw_texture_2d(texture, (0, 0), region.width, region.height)
    gpu.state.blend_set("NONE")


@persistent
def warm_sheets(scene, depsgraph=None) -> None:
    """After each change, on the main thread: read the sheets an AniRender render of
    ``scene`` will need, so the render (a thread of its own under F12) finds them read."""
    if scene.render.engine != ENGINE_ID:
        return
    size = working_size(scene)
    for obj in scene.objects:
        settings = character_settings(obj) if obj.type == "ARMATURE" else None
        if settings is not None and len(settings.sheet):
            try:
                cached_sheet(obj, size)
            except AniRenderError:
                pass  # the render reports it


def add_handlers() -> None:
    if warm_sheets not in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.append(warm_sheets)


def remove_handlers() -> None:
    if warm_sheets in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.remove(warm_sheets)
    _sheets.clear()
